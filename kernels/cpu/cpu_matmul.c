// cpu_matmul: y = x W^T (+ bias) on the CPU. T == 1 (decode) is a fused
// dequantize-dot matvec over chunks of rows shared out to the threads; T > 1
// dequantizes panels of W into per-thread fp32 scratch and hands each panel to
// single-threaded sgemm (F32 weights go to sgemm directly).
// The row kernels themselves are in cpu_rows.c and cpu_q8.c.
#include "cpu_backend.h"

#include <cblas.h>
#include <omp.h>
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

static snp_status matvec(cpu_ctx *c, float *y, const float *x, const bk_weight *W) {
    int64_t N = W->rows, K = W->cols;
    int quant = W->type == DTYPE_Q8_0 || W->type == DTYPE_Q4_0 || W->type == DTYPE_Q4_1;
    int nt = N * K < MATVEC_PARALLEL_MIN ? 1 : c->n_threads;
    // Chunks of rows handed out dynamically, about 8 per thread: on a shared machine
    // a descheduled thread's rows get done by the others instead of holding all up.
    int64_t rows = max64(MATVEC_MIN_CHUNK_ROWS, round_up((N + 8 * nt - 1) / (8 * nt), 8));
    int64_t n_chunks = (N + rows - 1) / rows;
    snp_status st = SNP_OK;
    if (quant && c->matvec_q8) {
        cpu_q8_row xq = {0};
        xq.d = malloc(sizeof(float) * (size_t)(K / QK_BLOCK));
        xq.s = malloc(sizeof(float) * (size_t)(K / QK_BLOCK));
        xq.qs = aligned_alloc(64, (size_t)round_up(K, 64));
        if (!xq.d || !xq.s || !xq.qs) {
            st = snp_fail(SNP_ERR_MEMORY, "cpu: matmul '%s': out of memory for x in int8", W->name);
        } else {
            cpu_q8_quantize(x, K, &xq);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
            for (int64_t ch = 0; ch < n_chunks; ch++) {
                int64_t r0 = ch * rows, r1 = min64(N, r0 + rows);
                cpu_q8_rows_dot(W, &xq, r0, r1, y + r0);
            }
        }
        free(xq.d);
        free(xq.s);
        free(xq.qs);
        return st;
    }
    float *xsum = NULL;
    if (W->type == DTYPE_Q4_1) {
        xsum = malloc(sizeof(float) * (size_t)(K / QK_BLOCK));
        if (!xsum)
            return snp_fail(SNP_ERR_MEMORY, "cpu: matmul '%s': out of memory for block sums",
                            W->name);
        cpu_block_sums(x, K, xsum);
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t ch = 0; ch < n_chunks; ch++) {
        int64_t r0 = ch * rows, r1 = min64(N, r0 + rows);
        cpu_rows_dot(W, x, xsum, r0, r1, y + r0);
    }
    free(xsum);
    return st;
}

static snp_status gemm_panels(cpu_ctx *c, float *y, const float *x, const bk_weight *W, int T) {
    int64_t N = W->rows, K = W->cols;
    int nt = c->n_threads;
    int need_scratch = W->type != DTYPE_F32;
    int64_t P;
    if (need_scratch) {
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
    int64_t n_items = n_panels * t_chunks;
    int failed = 0;

#pragma omp parallel num_threads(nt)
    {
        float *scratch = NULL;
        if (need_scratch) {
            scratch = cpu_scratch(c, omp_get_thread_num(), sizeof(float) * (size_t)(P * K));
            if (!scratch) {
#pragma omp atomic write
                failed = 1;
            }
        }
        int64_t have_panel = -1; // the panel now in scratch: consecutive items share it
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            if (need_scratch && !scratch) continue;
            int64_t p = item / t_chunks, tc = item % t_chunks;
            int64_t n0 = p * P, np = min64(P, N - n0);
            int64_t t0 = T * tc / t_chunks, t1 = T * (tc + 1) / t_chunks;
            const float *wp = (const float *)W->data + n0 * K;
            if (need_scratch) {
                if (have_panel != p) cpu_rows_to_f32(W, n0, np, scratch);
                have_panel = p;
                wp = scratch;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(t1 - t0), (int)np, (int)K,
                        1.0f, x + t0 * K, (int)K, wp, (int)K, 0.0f, y + t0 * N + n0, (int)N);
        }
    }
    if (failed)
        return snp_fail(SNP_ERR_MEMORY, "cpu: matmul '%s': out of memory for a %lld x %lld panel",
                        W->name, (long long)P, (long long)K);
    return SNP_OK;
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
    if (T == 1)
        TRY(matvec(c, y, x, W));
    else
        TRY(gemm_panels(c, y, x, W, T));
    if (bias) {
        const float *b = bias->data;
        float *out = y;
        int64_t N = W->rows;
#pragma omp parallel for num_threads(c->n_threads) if ((int64_t)T * N > MATVEC_PARALLEL_MIN)
        for (int t = 0; t < T; t++)
            for (int64_t n = 0; n < N; n++)
                out[(int64_t)t * N + n] += b[n];
    }
    return SNP_OK;
}
