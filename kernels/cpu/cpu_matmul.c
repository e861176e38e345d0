// cpu_matmul: y = x W^T (+ bias) on the CPU. Up to 64 tokens (decode, a decode
// batch) it is a fused dequantize-dot matvec per token over chunks of rows shared
// out to the threads; more tokens dequantize panels of W into per-thread fp32
// scratch and hand each panel to single-threaded sgemm (F32 weights go to sgemm
// directly).
// The row kernels themselves are in cpu_rows.c and cpu_q8.c.
#include "cpu_backend.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>

enum {
    // Dequantized panels of up to 4 MiB: sgemm repacks x once per panel, and at
    // T = 4096 x 576 panels of 256 rows (1 MiB) ran at 85 GFLOP/s against 96 for
    // 1024 rows (bench_cpu_ops gemm, one Zen 4 core).
    MATMUL_PANEL_BYTES = 4 << 20,
    MATMUL_PANEL_MAX_ROWS = 1024,
    MATMUL_PANEL_MIN_ROWS = 16,
    // Below this many weight elements (~8 us on one core) a matvec is not worth
    // waking a team for; SmolLM2's 192 x 576 k/v projections stay on one thread.
    MATVEC_PARALLEL_MIN = 1 << 17,
    MATVEC_MIN_CHUNK_ROWS = 16,
    // Up to this many tokens (a server's decode batch) the matvec kernel runs per
    // token, so a token's numbers do not depend on its batch (matvec below); above
    // it (prefill chunks) sgemm's throughput wins.
    MATVEC_BATCH_MAX_T = 64,
    // Rows per cache slice of a batch's matvec: 64 rows of 576 Q8_0 weights are 39 KB.
    MATVEC_SLICE_ROWS = 64,
};

static int64_t round_up(int64_t v, int64_t m) {
    return (v + m - 1) / m * m;
}
static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}
static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

typedef struct matvec_job {
    const bk_weight *W;
    const float *x, *xsum; // [T, K], [T, K / 32]
    const cpu_q8_row *xq;  // [T], set: the int8 path
    float *y;              // [T, N]
    int64_t rows;          // per item
    int T;
} matvec_job;

// matvec_item: one chunk of rows for every token, the tokens innermost so the
// chunk's weights are read from memory once and from cache T - 1 times.
static void matvec_item(void *arg, int64_t ch, int tid) {
    const matvec_job *j = arg;
    const int64_t N = j->W->rows;
    int64_t r0 = ch * j->rows, r1 = min64(N, r0 + j->rows);
    if (j->T == 1) {
        if (j->xq) cpu_q8_rows_dot(j->W, j->xq, r0, r1, j->y + r0);
        else cpu_rows_dot(j->W, j->x, j->xsum, r0, r1, j->y + r0);
        return;
    }
    // Several tokens: the chunk in slices of rows that stay in cache while every token
    // passes (an LM head's chunk is megabytes). Slices start at multiples of 64 from
    // r0, so the kernels group rows (by 4, by 2) exactly as for one token.
    for (int64_t a = r0; a < r1; a += MATVEC_SLICE_ROWS) {
        const int64_t b = min64(r1, a + MATVEC_SLICE_ROWS);
        if (!j->xq) {
            cpu_rows_dot_tokens(j->W, j->x, j->xsum, j->T, a, b, j->y + a, N);
            continue;
        }
        for (int t = 0; t < j->T; t++) cpu_q8_rows_dot(j->W, &j->xq[t], a, b, j->y + (int64_t)t * N + a);
    }
}

// matvec: y[t] = W x[t] for T tokens (T = 1: decode; small T: a decode batch), each
// token's rows computed by the same kernel, over the same chunks of rows, as when it
// is alone: a token's output does not depend on which others share its batch, so a
// server's batching changes no token (sgemm's blocking would change the sums' order).
static snp_status matvec(cpu_ctx *c, float *y, const float *x, const bk_weight *W, int T) {
    int64_t N = W->rows, K = W->cols, nb = K / QK_BLOCK;
    int quant = W->type == DTYPE_Q8_0 || W->type == DTYPE_Q4_0 || W->type == DTYPE_Q4_1;
    // The chunking depends on the weight only (never on T), for the reason above.
    int nt = N * K < MATVEC_PARALLEL_MIN ? 1 : c->n_threads;
    // Chunks of rows handed out dynamically, about 8 per thread: on a shared machine
    // a descheduled thread's rows get done by the others instead of holding all up.
    int64_t rows = max64(MATVEC_MIN_CHUNK_ROWS, round_up((N + 8 * nt - 1) / (8 * nt), 8));
    int64_t n_chunks = (N + rows - 1) / rows;
    if (T > 1 && nt == 1 && T * N * K >= MATVEC_PARALLEL_MIN) nt = c->n_threads;
    snp_status st = SNP_OK;
    matvec_job job = {.W = W, .x = x, .y = y, .rows = rows, .T = T};
    if (quant && c->matvec_q8) {
        cpu_q8_row *xq = calloc((size_t)T, sizeof *xq);
        int ok = xq != NULL;
        for (int t = 0; ok && t < T; t++) {
            xq[t].d = malloc(sizeof(float) * (size_t)nb);
            xq[t].s = malloc(sizeof(float) * (size_t)nb);
            xq[t].qs = aligned_alloc(64, (size_t)round_up(K, 64));
            ok = xq[t].d && xq[t].s && xq[t].qs;
            if (ok) cpu_q8_quantize(x + (int64_t)t * K, K, &xq[t]);
        }
        if (!ok) {
            st = snp_fail(SNP_ERR_MEMORY, "cpu: matmul '%s': out of memory for x in int8", W->name);
        } else {
            job.xq = xq;
            cpu_pool_for(c->pool, nt, n_chunks, matvec_item, &job);
        }
        for (int t = 0; xq && t < T; t++) {
            free(xq[t].d);
            free(xq[t].s);
            free(xq[t].qs);
        }
        free(xq);
        return st;
    }
    float *xsum = NULL;
    if (W->type == DTYPE_Q4_1) {
        xsum = malloc(sizeof(float) * (size_t)(nb * T));
        if (!xsum)
            return snp_fail(SNP_ERR_MEMORY, "cpu: matmul '%s': out of memory for block sums",
                            W->name);
        for (int t = 0; t < T; t++) cpu_block_sums(x + (int64_t)t * K, K, xsum + (int64_t)t * nb);
    }
    job.xsum = xsum;
    cpu_pool_for(c->pool, nt, n_chunks, matvec_item, &job);
    free(xsum);
    return st;
}

typedef struct gemm_job {
    cpu_ctx *c;
    const bk_weight *W;
    const float *x;
    float *y;
    int64_t T, P, t_chunks;
    int64_t *have_panel; // [n_threads]: the panel now in that thread's scratch
    _Atomic int failed;
} gemm_job;

static void gemm_item(void *arg, int64_t item, int tid) {
    gemm_job *j = arg;
    const bk_weight *W = j->W;
    const int64_t N = W->rows, K = W->cols, P = j->P;
    int64_t p = item / j->t_chunks, tc = item % j->t_chunks;
    int64_t n0 = p * P, np = min64(P, N - n0);
    int64_t t0 = j->T * tc / j->t_chunks, t1 = j->T * (tc + 1) / j->t_chunks;
    const float *wp = (const float *)W->data + n0 * K;
    if (W->type != DTYPE_F32) {
        float *scratch = cpu_scratch(j->c, tid, sizeof(float) * (size_t)(P * K));
        if (!scratch) {
            j->failed = 1;
            return;
        }
        // Consecutive items of one thread often share a panel (token chunks).
        if (j->have_panel[tid] != p) cpu_rows_to_f32(W, n0, np, scratch);
        j->have_panel[tid] = p;
        wp = scratch;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(t1 - t0), (int)np, (int)K, 1.0f,
                j->x + t0 * K, (int)K, wp, (int)K, 0.0f, j->y + t0 * N + n0, (int)N);
}

static snp_status gemm_panels(cpu_ctx *c, float *y, const float *x, const bk_weight *W, int T) {
    int64_t N = W->rows, K = W->cols;
    int nt = c->n_threads;
    int64_t P;
    if (W->type != DTYPE_F32) {
        P = MATMUL_PANEL_BYTES / (K * (int64_t)sizeof(float)) / 16 * 16;
        P = max64(MATMUL_PANEL_MIN_ROWS, min64(P, MATMUL_PANEL_MAX_ROWS));
    } else {
        P = N; // no conversion: panels only split the work
    }
    P = min64(P, round_up((N + nt - 1) / nt, 16));
    int64_t n_panels = (N + P - 1) / P;
    // Few panels but many tokens (a TP slice of k/v): split the tokens too.
    int64_t t_chunks = 1;
    if (n_panels < 2 * nt && T >= 128) t_chunks = min64((2 * nt + n_panels - 1) / n_panels, T / 64);
    int64_t have_panel[CPU_MAX_THREADS];
    for (int i = 0; i < nt; i++)
        have_panel[i] = -1;
    gemm_job job = {.c = c, .W = W, .x = x, .y = y, .T = T, .P = P, .t_chunks = t_chunks,
                    .have_panel = have_panel};
    cpu_pool_for(c->pool, nt, n_panels * t_chunks, gemm_item, &job);
    if (job.failed)
        return snp_fail(SNP_ERR_MEMORY, "cpu: matmul '%s': out of memory for a %lld x %lld panel",
                        W->name, (long long)P, (long long)K);
    return SNP_OK;
}

typedef struct bias_job {
    float *y;
    const float *b;
    int64_t N;
} bias_job;

static void bias_item(void *arg, int64_t t, int tid) {
    const bias_job *j = arg;
    float *row = j->y + t * j->N;
    for (int64_t n = 0; n < j->N; n++)
        row[n] += j->b[n];
}

snp_status cpu_matmul(void *ctx, void *y, const void *x, const bk_weight *W, const bk_weight *bias,
                      int T) {
    cpu_ctx *c = ctx;
    if (!c || !y || !x || !W)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: matmul: NULL %s",
                        !c   ? "ctx"
                        : !y ? "y"
                        : !x ? "x"
                             : "W");
    if (T <= 0) return snp_fail(SNP_ERR_ARGUMENT, "cpu: matmul '%s': T = %d", W->name, T);
    if (y == x) return snp_fail(SNP_ERR_ARGUMENT, "cpu: matmul '%s': y aliases x", W->name);
    if (bias && (bias->rows != 1 || bias->cols != W->rows))
        return snp_fail(
            SNP_ERR_ARGUMENT, "cpu: matmul '%s': bias '%s' is %lld x %lld, expected 1 x %lld",
            W->name, bias->name, (long long)bias->rows, (long long)bias->cols, (long long)W->rows);
    if ((int64_t)T * W->rows > INT32_MAX || (int64_t)T * W->cols > INT32_MAX)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: matmul '%s': T = %d tokens times %lld x %lld overflows BLAS's int",
                        W->name, T, (long long)W->rows, (long long)W->cols);
    if (T <= MATVEC_BATCH_MAX_T)
        TRY(matvec(c, y, x, W, T));
    else
        TRY(gemm_panels(c, y, x, W, T));
    if (bias) {
        bias_job job = {.y = y, .b = bias->data, .N = W->rows};
        int nt = (int64_t)T * W->rows > MATVEC_PARALLEL_MIN ? c->n_threads : 1;
        cpu_pool_for(c->pool, nt, T, bias_item, &job);
    }
    return SNP_OK;
}
