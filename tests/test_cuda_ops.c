// test_cuda_ops: every CUDA op against the CPU backend (or, for SnapKV ops the CPU
// backend lacks, a double-precision reference here) on the same random inputs,
// rounded to bf16 first so both backends see identical numbers. The CUDA backend's
// host logic (argument checks, launch plans, weight conversion) is tested first
// and needs no GPU; without a device the rest prints "skipped: no GPU".
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_host.h"
#include "support/test_support.h"

// Weak: this test is built whether or not the CUDA backend is; without it these
// are NULL and the host-logic checks are skipped.
#pragma weak cuda_attn_check
#pragma weak cuda_attn_plan_make
#pragma weak cuda_snapkv_check
#pragma weak cuda_snapkv_plan_make
#pragma weak cuda_host_rows_to_bf16

// Tolerances: max |cuda - reference| over the reference's range (test_max_rel_error).
// Expected from the precision contract (kernels/cuda/README.md), not yet measured.
#define TOL_BF16_ELEM 1e-2 // one bf16 rounding of the output (2^-8 relative)
#define TOL_MATMUL    1e-2 // fp32 accumulation, bf16 output
#define TOL_MATMUL_Q  2e-2 // plus the weights' rounding to bf16 at load
#define TOL_ATTN      2e-2 // P rounded to bf16 before P V (tensor-core kernel)
#define TOL_VOTES     1e-4 // fp32 throughout, against a double reference
#define TOL_POOL      1e-5

static test_counts tc;
static uint64_t rng = 88172645463325252ull;

static float frand(void) { // uniform in [-1, 1), rounded to bf16
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    float f = (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
    return dtype_bf16_to_f32(dtype_f32_to_bf16(f));
}

static int rand_below(int n) { // uniform enough in [0, n) for small n
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (int)((rng >> 33) % (uint64_t)n);
}

static float *rand_vec(size_t n, float scale) {
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        v[i] = dtype_bf16_to_f32(dtype_f32_to_bf16(frand() * scale));
    return v;
}

// --- the host logic, no GPU needed ---

static void test_host_logic(void) {
    if (!cuda_attn_check || !cuda_attn_plan_make || !cuda_host_rows_to_bf16) {
        printf("host logic: CUDA backend not in this build, skipped\n");
        tc.skipped++;
        return;
    }
    static char buf[1024] __attribute__((aligned(16)));
    attn_shape s = {.T = 100,
                    .H = 8,
                    .Hkv = 2,
                    .D = 64,
                    .S_cap = 256,
                    .n_keys = 100,
                    .q_offset = 0,
                    .scale = 0.125f};
    test_check(&tc, cuda_attn_check(buf, buf, buf, buf, &s) == SNP_OK, "attn check: valid shape");
    attn_shape bad = s;
    bad.D = 12;
    test_check(&tc,
               cuda_attn_check(buf, buf, buf, buf, &bad) == SNP_ERR_ARGUMENT &&
                   strstr(snp_error(), "D = 12"),
               "attn check: D = 12 refused naming it: %s", snp_error());
    bad = s;
    bad.H = 6, bad.Hkv = 4;
    test_check(&tc, cuda_attn_check(buf, buf, buf, buf, &bad) == SNP_ERR_ARGUMENT,
               "attn check: H %% Hkv != 0 refused");
    bad = s;
    bad.n_keys = 300;
    test_check(&tc, cuda_attn_check(buf, buf, buf, buf, &bad) == SNP_ERR_ARGUMENT,
               "attn check: n_keys > S_cap refused");
    test_check(&tc,
               cuda_attn_check(buf + 2, buf, buf, buf, &s) == SNP_ERR_ARGUMENT &&
                   strstr(snp_error(), "aligned"),
               "attn check: misaligned out refused: %s", snp_error());

    // Dual Chunk Attention: its fields (backend_checks.c), aligned rotations, and
    // positions that fit the kernels' int arithmetic.
    attn_dca dca = {.chunk_len = 48, .q_succ = buf, .q_inter = buf};
    attn_shape sd = s;
    sd.dca = &dca;
    test_check(&tc, cuda_attn_check(buf, buf, buf, buf, &sd) == SNP_OK, "attn check: DCA shape: %s",
               snp_error());
    attn_dca bd = dca;
    bd.q_inter = buf + 8;
    sd.dca = &bd; // the cases below edit bd
    test_check(&tc,
               cuda_attn_check(buf, buf, buf, buf, &sd) == SNP_ERR_ARGUMENT &&
                   strstr(snp_error(), "q_inter"),
               "attn check: DCA misaligned q_inter refused naming it: %s", snp_error());
    bd = dca;
    bd.pos_offset = INT32_MAX - 50;
    test_check(&tc,
               cuda_attn_check(buf, buf, buf, buf, &sd) == SNP_ERR_ARGUMENT &&
                   strstr(snp_error(), "2^31"),
               "attn check: DCA positions past 2^31 - 1 refused: %s", snp_error());
    bd = dca;
    bd.chunk_len = 0;
    test_check(&tc, cuda_attn_check(buf, buf, buf, buf, &sd) == SNP_ERR_ARGUMENT,
               "attn check: DCA chunk length 0 refused");
    bd = dca;
    bd.n_pos_rows = 10, bd.pos_cap = 10;
    test_check(&tc, cuda_attn_check(buf, buf, buf, buf, &sd) == SNP_ERR_ARGUMENT,
               "attn check: DCA stored positions without a pos array refused");
    // DCA's plans: the tensor-core kernel for D 64 and 128 only (Q in registers).
    struct {
        int T, D, want_kernel;
    } dcases[] = {
        {100, 64, CUDA_ATTN_KERNEL_MMA},   {100, 128, CUDA_ATTN_KERNEL_MMA},
        {100, 256, CUDA_ATTN_KERNEL_ROWS}, {100, 96, CUDA_ATTN_KERNEL_ROWS},
        {1, 128, CUDA_ATTN_KERNEL_ROWS},
    };
    for (size_t i = 0; i < sizeof dcases / sizeof dcases[0]; i++) {
        attn_shape a = s;
        a.T = a.n_keys = dcases[i].T;
        a.D = dcases[i].D;
        a.dca = &dca;
        cuda_attn_plan p;
        cuda_attn_plan_make(&a, 132, 0, &p);
        test_check(&tc, (int)p.kernel == dcases[i].want_kernel,
                   "attn plan, DCA T = %d D = %d: kernel %d, want %d", a.T, a.D, (int)p.kernel,
                   dcases[i].want_kernel);
    }

    // Plans: the splits tile [0, kend) exactly, in whole key tiles, none empty.
    struct {
        int T, H, Hkv, D, n_keys, q_offset, n_sm, rows, want_kernel;
    } cases[] = {
        {100, 8, 2, 64, 100, 0, 132, 0, CUDA_ATTN_KERNEL_MMA},
        {100, 8, 2, 96, 100, 0, 132, 0, CUDA_ATTN_KERNEL_ROWS},
        {100, 8, 2, 64, 100, 0, 132, 1, CUDA_ATTN_KERNEL_ROWS},
        {1, 32, 8, 128, 1000000, 999999, 132, 0, CUDA_ATTN_KERNEL_ROWS},
        {4, 32, 8, 128, 2048, 2044, 108, 0, CUDA_ATTN_KERNEL_ROWS},
        {8192, 32, 8, 128, 1000000, 991808, 132, 0, CUDA_ATTN_KERNEL_MMA},
        {64, 4, 1, 256, 300000, 299936, 132, 0, CUDA_ATTN_KERNEL_MMA},
        {16, 2, 2, 128, 16, 0, 132, 0, CUDA_ATTN_KERNEL_MMA},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        attn_shape a = {.T = cases[i].T,
                        .H = cases[i].H,
                        .Hkv = cases[i].Hkv,
                        .D = cases[i].D,
                        .S_cap = cases[i].n_keys,
                        .n_keys = cases[i].n_keys,
                        .q_offset = cases[i].q_offset,
                        .scale = 0.1f};
        cuda_attn_plan p;
        cuda_attn_plan_make(&a, cases[i].n_sm, cases[i].rows, &p);
        int64_t tile = p.kernel == CUDA_ATTN_KERNEL_MMA ? CUDA_ATTN_MMA_BC : CUDA_ATTN_ROWS_BC;
        int64_t kend = a.n_keys < (int64_t)a.q_offset + a.T ? a.n_keys : (int64_t)a.q_offset + a.T;
        int ok = (int)p.kernel == cases[i].want_kernel && p.kend == kend && p.chunk % tile == 0 &&
                 p.n_split >= 1 && p.n_split * p.chunk >= kend &&
                 (int64_t)(p.n_split - 1) * p.chunk < kend &&
                 (p.ws_bytes == 0) == (p.n_split == 1) &&
                 (p.n_split == 1 || p.chunk >= CUDA_ATTN_MIN_SPLIT_KEYS);
        test_check(&tc, ok, "attn plan %zu: kernel %d, n_split %d, chunk %lld, kend %lld", i,
                   (int)p.kernel, p.n_split, (long long)p.chunk, (long long)p.kend);
        if (cases[i].T == 1) // decode over 1M keys must use the device: many splits
            test_check(&tc, p.n_split >= 8, "attn plan: decode over 10^6 keys has %d splits",
                       p.n_split);
    }

    snapkv_shape ks = {.H = 8,
                       .Hkv = 2,
                       .D = 64,
                       .S_cap = 4096,
                       .L = 3000,
                       .w = 32,
                       .budget = 256,
                       .kernel = 7,
                       .pooling = SNAPKV_POOL_MAX,
                       .scale = 0.125f};
    test_check(&tc,
               cuda_snapkv_check(&ks, "t", 0) == SNP_OK &&
                   cuda_snapkv_check(&ks, "t", 1) == SNP_OK &&
                   cuda_snapkv_check(&ks, "t", 2) == SNP_OK,
               "snapkv check: valid shape: %s", snp_error());
    snapkv_shape kb = ks;
    kb.kernel = 4;
    test_check(&tc, cuda_snapkv_check(&kb, "t", 1) == SNP_ERR_ARGUMENT, "snapkv: even kernel");
    kb = ks;
    kb.budget = 3000;
    test_check(&tc, cuda_snapkv_check(&kb, "t", 2) == SNP_ERR_ARGUMENT, "snapkv: budget >= L");
    for (int L = 33; L <= 2000000; L = L * 7 + 1) {
        ks.L = ks.S_cap = L;
        cuda_snapkv_plan p;
        cuda_snapkv_plan_make(&ks, 132, &p);
        test_check(&tc,
                   p.chunk % CUDA_SNAPKV_BK == 0 && p.n_split * p.chunk >= L &&
                       (int64_t)(p.n_split - 1) * p.chunk < L && p.P == L - 32,
                   "snapkv plan L = %d: n_split %d, chunk %lld", L, p.n_split, (long long)p.chunk);
    }

    // Weight rows to bf16: a strided Q8_0 slice equals the reference dequantization
    // rounded once; BF16 rows copy bit for bit.
    enum { ROWS = 3, COLS = 64, STRIDE_BLOCKS = 3 };
    block_q8_0 q[ROWS * STRIDE_BLOCKS];
    for (int i = 0; i < ROWS * STRIDE_BLOCKS; i++) {
        q[i].d = dtype_f32_to_f16(0.01f * (float)(i + 1));
        for (int j = 0; j < QK_BLOCK; j++)
            q[i].qs[j] = (int8_t)(j * 7 - 100 + i);
    }
    weight_src ws = {.name = "q",
                     .type = DTYPE_Q8_0,
                     .rows = ROWS,
                     .cols = COLS,
                     .row_stride_bytes = sizeof(block_q8_0) * STRIDE_BLOCKS,
                     .data = q};
    uint16_t got[ROWS * COLS];
    float tmp[COLS], ref[COLS];
    cuda_host_rows_to_bf16(&ws, 0, ROWS, got, tmp);
    int same = 1;
    for (int r = 0; r < ROWS; r++) {
        dtype_to_f32(DTYPE_Q8_0, q + r * STRIDE_BLOCKS, ref, COLS);
        for (int c = 0; c < COLS; c++)
            same &= got[r * COLS + c] == dtype_f32_to_bf16(ref[c]);
    }
    test_check(&tc, same, "rows_to_bf16: strided Q8_0 equals dtype_to_f32 rounded to bf16");
    uint16_t bsrc[2 * 40];
    for (int i = 0; i < 80; i++)
        bsrc[i] = (uint16_t)(i * 977);
    weight_src wb = {.name = "b",
                     .type = DTYPE_BF16,
                     .rows = 2,
                     .cols = 8,
                     .row_stride_bytes = 80,
                     .data = bsrc};
    uint16_t gb[16];
    cuda_host_rows_to_bf16(&wb, 0, 2, gb, tmp);
    test_check(&tc, memcmp(gb, bsrc, 16) == 0 && memcmp(gb + 8, bsrc + 40, 16) == 0,
               "rows_to_bf16: strided BF16 rows copied exactly");
}

// --- GPU comparisons ---

typedef struct pair {
    backend *cpu, *gpu;
} pair;

static void *put(backend *b, const float *src, size_t n) {
    void *p = NULL;
    if (b->ops->alloc(b->ctx, n * b->ops->act_bytes, &p) != SNP_OK ||
        b->ops->from_host_f32(b->ctx, p, src, n) != SNP_OK) {
        fprintf(stderr, "put: %s\n", snp_error());
        exit(1);
    }
    return p;
}

static void get(backend *b, float *dst, const void *src, size_t n) {
    if (b->ops->to_host_f32(b->ctx, dst, src, n) != SNP_OK) {
        fprintf(stderr, "get: %s\n", snp_error());
        exit(1);
    }
}

// Raw bytes (fp32 scores, int32 indices): the CPU backend's memory is host memory.
static void *put_raw(backend *b, const void *src, size_t n_bytes) {
    void *p = NULL;
    if (b->ops->alloc(b->ctx, n_bytes, &p) != SNP_OK) exit(1);
    if (b->ops->upload)
        b->ops->upload(b->ctx, p, src, n_bytes);
    else
        memcpy(p, src, n_bytes);
    return p;
}

static void get_raw(backend *b, void *dst, const void *src, size_t n_bytes) {
    if (b->ops->download) {
        if (b->ops->download(b->ctx, dst, src, n_bytes) != SNP_OK) exit(1);
    } else {
        memcpy(dst, src, n_bytes);
    }
}

static bk_weight *load(backend *b, dtype type, const void *data, int rows, int cols) {
    uint64_t rb = 0;
    dtype_row_bytes(type, (uint64_t)cols, "w", &rb);
    weight_src s = {.name = "w",
                    .type = type,
                    .rows = (uint64_t)rows,
                    .cols = (uint64_t)cols,
                    .row_stride_bytes = rb,
                    .data = data};
    bk_weight *w = NULL;
    if (b->ops->weight_load(b->ctx, &s, &w) != SNP_OK) {
        fprintf(stderr, "weight_load: %s\n", snp_error());
        exit(1);
    }
    return w;
}

// Runs `n` outputs through both backends' buffers and compares.
static void compare(pair *p, const char *what, void *out_cpu, void *out_gpu, size_t n, double tol) {
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    p->gpu->ops->sync(p->gpu->ctx);
    get(p->cpu, a, out_cpu, n);
    get(p->gpu, b, out_gpu, n);
    double e = test_max_rel_error(b, a, n);
    printf("%-44s max err / range %.3g (tol %.1g)\n", what, e, tol);
    test_check(&tc, e <= tol, "%s: error %.3g over %.1g", what, e, tol);
    free(a);
    free(b);
}

#define BOTH(call_cpu, call_gpu, what)                                                             \
    do {                                                                                           \
        snp_status s1 = (call_cpu), s2 = (call_gpu);                                               \
        if (!test_check(&tc, s1 == SNP_OK && s2 == SNP_OK, "%s: cpu %d, cuda %d: %s", what,        \
                        (int)s1, (int)s2, snp_error()))                                            \
            return;                                                                                \
    } while (0)

static void test_pointwise(pair *p) {
    const backend_ops *c = p->cpu->ops, *g = p->gpu->ops;
    void *cc = p->cpu->ctx, *gc = p->gpu->ctx;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = pass ? 1003 : 4096; // 1003: the element-wise (unvectorized) kernels
        float *x = rand_vec(n, 4.0f), *y = rand_vec(n, 1.0f);
        void *xc = put(p->cpu, x, n), *xg = put(p->gpu, x, n);
        void *yc = put(p->cpu, y, n), *yg = put(p->gpu, y, n);
        BOTH(c->swiglu(cc, yc, xc, yc, n), g->swiglu(gc, yg, xg, yg, n), "swiglu");
        compare(p, pass ? "swiglu (n = 1003)" : "swiglu (n = 4096)", yc, yg, n, TOL_BF16_ELEM);
        BOTH(c->add(cc, yc, xc, n), g->add(gc, yg, xg, n), "add");
        compare(p, "add", yc, yg, n, TOL_BF16_ELEM);
        free(x), free(y);
    }
    // embed, rms_norm, rope, kv_store
    enum { V = 50, C = 256, T = 6, H = 4, D = 64, HKV = 2, SCAP = 16 };
    float *table = rand_vec((size_t)V * C, 1.0f), *gain = rand_vec(C, 2.0f);
    int32_t ids[T] = {3, 0, 49, 3, 17, 8};
    bk_weight *tc_ = load(p->cpu, DTYPE_F32, table, V, C),
              *tg = load(p->gpu, DTYPE_F32, table, V, C);
    bk_weight *gc_ = load(p->cpu, DTYPE_F32, gain, 1, C), *gg = load(p->gpu, DTYPE_F32, gain, 1, C);
    float *zero = calloc((size_t)T * C, sizeof(float));
    void *xc = put(p->cpu, zero, (size_t)T * C), *xg = put(p->gpu, zero, (size_t)T * C);
    BOTH(c->embed(cc, xc, tc_, ids, T), g->embed(gc, xg, tg, ids, T), "embed");
    compare(p, "embed", xc, xg, (size_t)T * C, 0.0);
    BOTH(c->rms_norm(cc, xc, xc, gc_, 1e-5f, T, C), g->rms_norm(gc, xg, xg, gg, 1e-5f, T, C),
         "rms_norm");
    compare(p, "rms_norm (in place)", xc, xg, (size_t)T * C, TOL_BF16_ELEM);

    float inv_freq[D / 2];
    for (int i = 0; i < D / 2; i++)
        inv_freq[i] = powf(10000.0f, -2.0f * i / D);
    int32_t pos[T] = {0, 1, 7, 1000, 65535, 999999};
    // The third pass scales cos and sin as YaRN does (0.1 ln 4 + 1).
    for (int k = 0; k < ROPE_MODE_COUNT + 1; k++) {
        const int mode = k < ROPE_MODE_COUNT ? k : ROPE_MODE_NEOX;
        float *q = rand_vec((size_t)T * H * D, 1.0f);
        void *qc = put(p->cpu, q, (size_t)T * H * D), *qg = put(p->gpu, q, (size_t)T * H * D);
        rope_params rp = {.mode = (rope_mode)mode,
                          .inv_freq = inv_freq,
                          .cs_scale = k < ROPE_MODE_COUNT ? 0.0f : 1.1386294f};
        BOTH(c->rope(cc, qc, pos, T, H, D, &rp), g->rope(gc, qg, pos, T, H, D, &rp), "rope");
        compare(p,
                k == ROPE_MODE_COUNT     ? "rope NEOX, cos/sin x 1.1386 (yarn)"
                : mode == ROPE_MODE_NEOX ? "rope NEOX (pos up to 999999)"
                                         : "rope PAIRS",
                qc, qg, (size_t)T * H * D, TOL_BF16_ELEM);
        free(q);
    }
    { // partial rotary (GLM-4): the first D/2 dims on adjacent pairs, the rest untouched
        float inv_r[D / 4];
        for (int i = 0; i < D / 4; i++)
            inv_r[i] = powf(10000.0f, -4.0f * i / D);
        float *q = rand_vec((size_t)T * H * D, 1.0f);
        void *qc = put(p->cpu, q, (size_t)T * H * D), *qg = put(p->gpu, q, (size_t)T * H * D);
        rope_params rp = {.mode = ROPE_MODE_PAIRS, .inv_freq = inv_r, .n_rot = D / 2};
        BOTH(c->rope(cc, qc, pos, T, H, D, &rp), g->rope(gc, qg, pos, T, H, D, &rp), "rope");
        compare(p, "rope PAIRS, partial (first D/2 dims)", qc, qg, (size_t)T * H * D,
                TOL_BF16_ELEM);
        free(q);
    }
    float *src = rand_vec((size_t)T * HKV * D, 1.0f),
          *cache0 = rand_vec((size_t)HKV * SCAP * D, 1.0f);
    void *sc = put(p->cpu, src, (size_t)T * HKV * D), *sg = put(p->gpu, src, (size_t)T * HKV * D);
    void *kc = put(p->cpu, cache0, (size_t)HKV * SCAP * D),
         *kg = put(p->gpu, cache0, (size_t)HKV * SCAP * D);
    BOTH(c->kv_store(cc, kc, sc, T, HKV, D, SCAP, 5), g->kv_store(gc, kg, sg, T, HKV, D, SCAP, 5),
         "kv_store");
    compare(p, "kv_store", kc, kg, (size_t)HKV * SCAP * D, 0.0);
    test_check(&tc, g->kv_store(gc, kg, sg, T, HKV, D, SCAP, 11) == SNP_ERR_ARGUMENT,
               "kv_store past S_cap refused");
    // kv_scale (a stored document's keys brought to another prompt's DCA scaling),
    // then copy (device to device) of the scaled cache.
    BOTH(c->kv_scale(cc, kc, 8, HKV, D, SCAP, 2, 1.0176f),
         g->kv_scale(gc, kg, 8, HKV, D, SCAP, 2, 1.0176f), "kv_scale");
    compare(p, "kv_scale rows 2..9 x 1.0176", kc, kg, (size_t)HKV * SCAP * D, TOL_BF16_ELEM);
    test_check(&tc, g->kv_scale(gc, kg, 8, HKV, D, SCAP, 9, 2.0f) == SNP_ERR_ARGUMENT,
               "kv_scale past S_cap refused");
    void *kc2 = put(p->cpu, cache0, (size_t)HKV * SCAP * D),
         *kg2 = put(p->gpu, cache0, (size_t)HKV * SCAP * D);
    BOTH(c->copy(cc, kc2, kc, (size_t)HKV * SCAP * D * c->act_bytes),
         g->copy(gc, kg2, kg, (size_t)HKV * SCAP * D * g->act_bytes), "copy");
    compare(p, "copy (device to device)", kc2, kg2, (size_t)HKV * SCAP * D, TOL_BF16_ELEM);
    free(table), free(gain), free(zero), free(src), free(cache0);
}

static void test_matmul(pair *p) {
    const backend_ops *c = p->cpu->ops, *g = p->gpu->ops;
    void *cc = p->cpu->ctx, *gc = p->gpu->ctx;
    enum { N = 96, K = 256 };
    float *w = rand_vec((size_t)N * K, 0.5f), *bias = rand_vec(N, 1.0f);
    const dtype types[] = {DTYPE_F32, DTYPE_F16, DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_1};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        // Quantized sources: build them with the CPU path's own converter-free
        // bytes (a simple symmetric quantization here; exactness is not the point).
        void *data = w;
        uint8_t *qbuf = NULL;
        if (types[ti] != DTYPE_F32) {
            uint64_t rb = 0;
            dtype_row_bytes(types[ti], K, "w", &rb);
            qbuf = calloc(N, rb);
            for (int r = 0; r < N; r++) {
                uint8_t *row = qbuf + r * rb;
                const float *x = w + (size_t)r * K;
                for (int b = 0; b < K / QK_BLOCK; b++) {
                    const float *xb = x + b * QK_BLOCK;
                    float amax = 0;
                    for (int j = 0; j < QK_BLOCK; j++)
                        amax = fmaxf(amax, fabsf(xb[j]));
                    if (types[ti] == DTYPE_F16) {
                        for (int j = 0; j < QK_BLOCK; j++)
                            ((uint16_t *)row)[b * QK_BLOCK + j] = dtype_f32_to_f16(xb[j]);
                    } else if (types[ti] == DTYPE_Q8_0) {
                        block_q8_0 *q = (block_q8_0 *)row + b;
                        float d = amax / 127.0f;
                        q->d = dtype_f32_to_f16(d);
                        for (int j = 0; j < QK_BLOCK; j++)
                            q->qs[j] = (int8_t)lrintf(d > 0 ? xb[j] / d : 0);
                    } else if (types[ti] == DTYPE_Q4_0) {
                        block_q4_0 *q = (block_q4_0 *)row + b;
                        float d = amax / 7.0f;
                        q->d = dtype_f32_to_f16(d);
                        for (int j = 0; j < QK_BLOCK / 2; j++) {
                            int lo = (int)lrintf(d > 0 ? xb[j] / d : 0) + 8;
                            int hi = (int)lrintf(d > 0 ? xb[j + 16] / d : 0) + 8;
                            q->qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
                        }
                    } else {
                        block_q4_1 *q = (block_q4_1 *)row + b;
                        q->d = dtype_f32_to_f16(amax / 7.5f);
                        q->m = dtype_f32_to_f16(-amax);
                        for (int j = 0; j < QK_BLOCK / 2; j++)
                            q->qs[j] = (uint8_t)((j & 15) | ((15 - j) & 15) << 4);
                    }
                }
            }
            data = qbuf;
        }
        bk_weight *wc = load(p->cpu, types[ti], data, N, K),
                  *wg = load(p->gpu, types[ti], data, N, K);
        bk_weight *bc = load(p->cpu, DTYPE_F32, bias, 1, N),
                  *bg = load(p->gpu, DTYPE_F32, bias, 1, N);
        const int Ts[] = {1, 7, 64};
        for (int i = 0; i < 3; i++) {
            int T = Ts[i];
            float *x = rand_vec((size_t)T * K, 1.0f);
            void *xc = put(p->cpu, x, (size_t)T * K), *xg = put(p->gpu, x, (size_t)T * K);
            float *z = calloc((size_t)T * N, sizeof(float));
            void *yc = put(p->cpu, z, (size_t)T * N), *yg = put(p->gpu, z, (size_t)T * N);
            BOTH(c->matmul(cc, yc, xc, wc, bc, T), g->matmul(gc, yg, xg, wg, bg, T), "matmul");
            char what[64];
            snprintf(what, sizeof what, "matmul %s T = %d (+ bias)", dtype_name(types[ti]), T);
            compare(p, what, yc, yg, (size_t)T * N,
                    types[ti] == DTYPE_F32 ? TOL_MATMUL : TOL_MATMUL_Q);
            free(x), free(z);
        }
        free(qbuf);
    }
    free(w), free(bias);
}

static void attn_case(pair *p, int T, int H, int Hkv, int D, int S_cap, int n_keys, int q_offset) {
    attn_shape s = {.T = T,
                    .H = H,
                    .Hkv = Hkv,
                    .D = D,
                    .S_cap = S_cap,
                    .n_keys = n_keys,
                    .q_offset = q_offset,
                    .scale = 1.0f / sqrtf((float)D)};
    size_t nq = (size_t)T * H * D, nk = (size_t)Hkv * S_cap * D;
    float *q = rand_vec(nq, 2.0f), *k = rand_vec(nk, 2.0f), *v = rand_vec(nk, 1.0f);
    void *qc = put(p->cpu, q, nq), *qg = put(p->gpu, q, nq);
    void *kc = put(p->cpu, k, nk), *kg = put(p->gpu, k, nk);
    void *vc = put(p->cpu, v, nk), *vg = put(p->gpu, v, nk);
    void *oc = put(p->cpu, q, nq), *og = put(p->gpu, q, nq);
    BOTH(p->cpu->ops->attention(p->cpu->ctx, oc, qc, kc, vc, &s),
         p->gpu->ops->attention(p->gpu->ctx, og, qg, kg, vg, &s), "attention");
    char what[96];
    snprintf(what, sizeof what, "attention T=%d H=%d/%d D=%d keys=%d off=%d", T, H, Hkv, D, n_keys,
             q_offset);
    compare(p, what, oc, og, nq, TOL_ATTN);
    free(q), free(k), free(v);
}

static void test_attention(pair *p) {
    attn_case(p, 100, 8, 2, 64, 128, 100, 0);         // prefill, tensor cores, D = 64
    attn_case(p, 70, 4, 4, 128, 320, 300, 230);       // a later chunk: keys before the queries
    attn_case(p, 20, 4, 1, 256, 64, 20, 0);           // D = 256, one stage
    attn_case(p, 33, 6, 2, 96, 40, 33, 0);            // D = 96: the SIMT row kernel
    attn_case(p, 1, 8, 2, 128, 5000, 5000, 4999);     // decode, split keys + merge
    attn_case(p, 3, 8, 8, 64, 3000, 2000, 1997);      // a few decode tokens, MHA
    attn_case(p, 64, 8, 2, 128, 40000, 40000, 39936); // short chunk, long context: splits (mma)
}

// Dual Chunk Attention: q and its two other rotations, random and independent, so a
// key met by the wrong rotation shows. n_pos_rows == 0: key row r is position r +
// gap (a prefill chunk). Otherwise the first n_pos_rows rows of each KV head hold
// ascending random positions (a SnapKV-compressed cache; the pos array is wider
// than they need, pos_cap = n_pos_rows + 5) and later rows continue past the
// largest of them, gap positions on (decode tokens appended after the prompt).
static void attn_dca_case(pair *p, int T, int H, int Hkv, int D, int S_cap, int n_keys,
                          int q_offset, int chunk_len, int n_pos_rows, int gap) {
    size_t nq = (size_t)T * H * D, nk = (size_t)Hkv * S_cap * D;
    float *q = rand_vec(nq, 2.0f), *qs = rand_vec(nq, 2.0f), *qi = rand_vec(nq, 2.0f);
    float *k = rand_vec(nk, 2.0f), *v = rand_vec(nk, 1.0f);
    const int pos_cap = n_pos_rows > 0 ? n_pos_rows + 5 : 0;
    int32_t *pos = n_pos_rows > 0 ? calloc((size_t)Hkv * pos_cap, sizeof(int32_t)) : NULL;
    int32_t last = -1; // the largest stored position over the heads
    for (int h = 0; h < Hkv; h++) {
        int32_t x = -1;
        for (int r = 0; r < n_pos_rows; r++) {
            x += 1 + rand_below(4); // ascending, 1 to 4 apart
            pos[(size_t)h * pos_cap + r] = x;
        }
        if (x > last) last = x;
    }
    const int pos_offset = n_pos_rows > 0 ? last + 1 + gap - n_pos_rows : gap;

    void *qc = put(p->cpu, q, nq), *qg = put(p->gpu, q, nq);
    void *qsc = put(p->cpu, qs, nq), *qsg = put(p->gpu, qs, nq);
    void *qic = put(p->cpu, qi, nq), *qig = put(p->gpu, qi, nq);
    void *kc = put(p->cpu, k, nk), *kg = put(p->gpu, k, nk);
    void *vc = put(p->cpu, v, nk), *vg = put(p->gpu, v, nk);
    void *oc = put(p->cpu, q, nq), *og = put(p->gpu, q, nq);
    const size_t pos_bytes = sizeof(int32_t) * (size_t)Hkv * pos_cap;
    int32_t *pc = pos ? put_raw(p->cpu, pos, pos_bytes) : NULL;
    int32_t *pg = pos ? put_raw(p->gpu, pos, pos_bytes) : NULL;
    attn_dca dc = {.chunk_len = chunk_len,
                   .q_succ = qsc,
                   .q_inter = qic,
                   .pos = pc,
                   .pos_cap = pos_cap,
                   .n_pos_rows = n_pos_rows,
                   .pos_offset = pos_offset};
    attn_dca dg = dc;
    dg.q_succ = qsg, dg.q_inter = qig, dg.pos = pg;
    attn_shape sc = {.T = T,
                     .H = H,
                     .Hkv = Hkv,
                     .D = D,
                     .S_cap = S_cap,
                     .n_keys = n_keys,
                     .q_offset = q_offset,
                     .scale = 1.0f / sqrtf((float)D),
                     .dca = &dc};
    attn_shape sg = sc;
    sg.dca = &dg;
    BOTH(p->cpu->ops->attention(p->cpu->ctx, oc, qc, kc, vc, &sc),
         p->gpu->ops->attention(p->gpu->ctx, og, qg, kg, vg, &sg), "attention (DCA)");
    char what[96];
    snprintf(what, sizeof what, "attention DCA T=%d H=%d/%d D=%d keys=%d chunk=%d pos=%d", T, H,
             Hkv, D, n_keys, chunk_len, n_pos_rows);
    compare(p, what, oc, og, nq, TOL_ATTN);
    void *bufs_c[] = {qc, qsc, qic, kc, vc, oc, pc}, *bufs_g[] = {qg, qsg, qig, kg, vg, og, pg};
    for (int i = 0; i < 7; i++) {
        p->cpu->ops->dealloc(p->cpu->ctx, bufs_c[i]);
        p->gpu->ops->dealloc(p->gpu->ctx, bufs_g[i]);
    }
    free(q), free(qs), free(qi), free(k), free(v), free(pos);
}

static void test_attention_dca(pair *p) {
    // Prefill (tensor cores for D 64/128): chunk boundaries inside query and key
    // tiles, so tiles that need two or three rotations occur.
    attn_dca_case(p, 200, 8, 2, 64, 256, 200, 0, 48, 0, 0);
    attn_dca_case(p, 100, 8, 2, 128, 448, 400, 300, 70, 0, 13); // a later chunk, positions + 13
    attn_dca_case(p, 64, 8, 2, 128, 20000, 20000, 19936, 4096, 0, 0); // long context: splits
    // Tokens after a compressed cache: stored positions, then the affine rows.
    attn_dca_case(p, 40, 8, 2, 128, 256, 190, 150, 100, 150, 0);
    // Decode (row kernel, split keys + merge) over a compressed cache, every rotation.
    attn_dca_case(p, 1, 8, 2, 128, 3000, 2600, 2599, 1500, 2000, 7);
    attn_dca_case(p, 1, 8, 2, 64, 3000, 2600, 2599, 1000, 2000, 0);
    attn_dca_case(p, 3, 8, 8, 64, 2000, 2000, 1997, 777, 1500, 3); // a few tokens, MHA
    attn_dca_case(p, 20, 4, 1, 256, 64, 20, 0, 6, 0, 0);           // D = 256: row kernel
    attn_dca_case(p, 33, 6, 2, 96, 40, 33, 0, 10, 0, 0);           // D = 96: row kernel
}

// SnapKV references in double: votes, pooling, selection by a stable (-vote, pos) order.
// q: the window queries; with s->dca, q[1] and q[2] are its q_succ and q_inter (host
// copies) and key j meets the rotation attn_dca_part picks for window row P + i.
static void ref_votes(const float *const q[3], const float *k, const snapkv_shape *s,
                      float *votes) {
    int P = s->L - s->w, G = s->H / s->Hkv;
    double *sc = malloc(sizeof(double) * s->L);
    for (int h = 0; h < s->H; h++) {
        for (int p = 0; p < P; p++)
            votes[(size_t)h * P + p] = 0;
        const float *kh = k + (size_t)(h / G) * s->S_cap * s->D;
        for (int i = 0; i < s->w; i++) {
            double m = -INFINITY, l = 0;
            int n = P + i + 1; // causal inside the window
            for (int j = 0; j < n; j++) {
                const int part =
                    s->dca ? attn_dca_part(s->dca->chunk_len, (P + i) / s->dca->chunk_len, j) : 0;
                const float *qr = q[part] + ((size_t)i * s->H + h) * s->D;
                double d = 0;
                for (int e = 0; e < s->D; e++)
                    d += (double)qr[e] * kh[(size_t)j * s->D + e];
                sc[j] = d * s->scale;
                if (sc[j] > m) m = sc[j];
            }
            for (int j = 0; j < n; j++)
                l += exp(sc[j] - m);
            for (int p = 0; p < P; p++)
                votes[(size_t)h * P + p] += (float)(exp(sc[p] - m) / l);
        }
    }
    free(sc);
}

static void ref_pool(const float *votes, const snapkv_shape *s, float *pooled) {
    int P = s->L - s->w, G = s->H / s->Hkv, r = s->kernel / 2;
    for (int hk = 0; hk < s->Hkv; hk++)
        for (int p = 0; p < P; p++) {
            double acc = 0;
            for (int g = 0; g < G; g++) {
                const float *v = votes + (size_t)(hk * G + g) * P;
                double x = s->pooling == SNAPKV_POOL_MAX ? -INFINITY : 0;
                for (int j = p - r; j <= p + r; j++) {
                    if (j < 0 || j >= P) continue;
                    if (s->pooling == SNAPKV_POOL_MAX)
                        x = v[j] > x ? v[j] : x;
                    else
                        x += v[j];
                }
                acc += s->pooling == SNAPKV_POOL_MAX ? x : x / s->kernel;
            }
            pooled[(size_t)hk * P + p] = (float)(acc / G);
        }
}

static const float *sort_keys;
static int by_vote_then_pos(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    float x = sort_keys[i], y = sort_keys[j];
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j;
}
static int by_pos(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

static void ref_select(const float *pooled, const snapkv_shape *s, int32_t *idx) {
    int P = s->L - s->w, K = s->budget - s->w;
    int *ord = malloc(sizeof(int) * P);
    for (int hk = 0; hk < s->Hkv; hk++) {
        for (int p = 0; p < P; p++)
            ord[p] = p;
        sort_keys = pooled + (size_t)hk * P;
        qsort(ord, P, sizeof(int), by_vote_then_pos);
        qsort(ord, K, sizeof(int), by_pos);
        for (int i = 0; i < K; i++)
            idx[(size_t)hk * s->budget + i] = ord[i];
        for (int i = 0; i < s->w; i++)
            idx[(size_t)hk * s->budget + K + i] = P + i;
    }
    free(ord);
}

static void test_select_case(pair *p, const snapkv_shape *s, const float *pooled,
                             const char *what) {
    backend *gb = p->gpu;
    size_t P = (size_t)(s->L - s->w);
    size_t n_idx = (size_t)s->Hkv * s->budget;
    int32_t *want = malloc(sizeof(int32_t) * n_idx), *got = malloc(sizeof(int32_t) * n_idx);
    ref_select(pooled, s, want);
    float *pg = put_raw(gb, pooled, sizeof(float) * s->Hkv * P);
    int32_t *ig = put_raw(gb, want, sizeof(int32_t) * n_idx); // overwritten
    snp_status st = gb->ops->snapkv_select(gb->ctx, ig, pg, s);
    get_raw(gb, got, ig, sizeof(int32_t) * n_idx);
    size_t bad = 0;
    for (size_t i = 0; i < n_idx; i++)
        bad += got[i] != want[i];
    printf("%-44s %zu of %zu indices differ\n", what, bad, n_idx);
    test_check(&tc, st == SNP_OK && bad == 0, "%s: %zu indices differ (%s)", what, bad,
               snp_error());
    if (p->cpu->ops->snapkv_select) { // the CPU backend's op, once it has one, agrees too
        backend *cb = p->cpu;
        float *pc = put_raw(cb, pooled, sizeof(float) * s->Hkv * P);
        int32_t *ic = put_raw(cb, want, sizeof(int32_t) * n_idx);
        st = cb->ops->snapkv_select(cb->ctx, ic, pc, s);
        get_raw(cb, got, ic, sizeof(int32_t) * n_idx);
        bad = 0;
        for (size_t i = 0; i < n_idx; i++)
            bad += got[i] != want[i];
        test_check(&tc, st == SNP_OK && bad == 0, "%s: cpu backend: %zu indices differ", what, bad);
        cb->ops->dealloc(cb->ctx, pc);
        cb->ops->dealloc(cb->ctx, ic);
    }
    gb->ops->dealloc(gb->ctx, pg);
    gb->ops->dealloc(gb->ctx, ig);
    free(want), free(got);
}

static void test_snapkv(pair *p) {
    backend *gb = p->gpu;
    const backend_ops *g = gb->ops;
    snapkv_shape s = {.H = 8,
                      .Hkv = 2,
                      .D = 64,
                      .S_cap = 3100,
                      .L = 3000,
                      .w = 32,
                      .budget = 256,
                      .kernel = 7,
                      .pooling = SNAPKV_POOL_MAX,
                      .scale = 0.125f};
    int P = s.L - s.w;
    size_t nq = (size_t)s.w * s.H * s.D, nk = (size_t)s.Hkv * s.S_cap * s.D;
    float *q = rand_vec(nq, 3.0f), *k = rand_vec(nk, 3.0f);
    float *votes = malloc(sizeof(float) * s.H * P), *got = malloc(sizeof(float) * s.H * P);
    const float *qr[3] = {q, NULL, NULL};
    ref_votes(qr, k, &s, votes);
    void *qg = put(gb, q, nq), *kg = put(gb, k, nk);
    float *vg = put_raw(gb, votes, sizeof(float) * s.H * P),
          *pg = put_raw(gb, votes, sizeof(float) * s.Hkv * P);
    test_check(&tc, g->snapkv_votes(gb->ctx, vg, qg, kg, &s) == SNP_OK, "snapkv_votes: %s",
               snp_error());
    get_raw(gb, got, vg, sizeof(float) * s.H * P);
    double e = test_max_rel_error(got, votes, (size_t)s.H * P);
    printf("%-44s max err / range %.3g (tol %.1g)\n", "snapkv_votes (vs double reference)", e,
           TOL_VOTES);
    test_check(&tc, e <= TOL_VOTES, "snapkv_votes: error %.3g", e);
    if (p->cpu->ops->snapkv_votes) { // the CPU backend's op, once it has one
        backend *cb = p->cpu;
        void *qc = put(cb, q, nq), *kc = put(cb, k, nk);
        float *vc = put_raw(cb, votes, sizeof(float) * s.H * P),
              *cv = malloc(sizeof(float) * s.H * P);
        test_check(&tc, cb->ops->snapkv_votes(cb->ctx, vc, qc, kc, &s) == SNP_OK, "cpu votes: %s",
                   snp_error());
        get_raw(cb, cv, vc, sizeof(float) * s.H * P);
        e = test_max_rel_error(got, cv, (size_t)s.H * P);
        printf("%-44s max err / range %.3g (tol %.1g)\n", "snapkv_votes (vs cpu backend)", e,
               TOL_VOTES);
        test_check(&tc, e <= TOL_VOTES, "snapkv_votes vs cpu: error %.3g", e);
        free(cv);
    }

    float *pooled = malloc(sizeof(float) * s.Hkv * P), *pgot = malloc(sizeof(float) * s.Hkv * P);
    for (int mode = 0; mode < SNAPKV_POOL_COUNT; mode++) {
        s.pooling = (snapkv_pooling)mode;
        ref_pool(got, &s, pooled); // from the GPU's own votes: pooling is tested alone
        test_check(&tc, g->snapkv_pool(gb->ctx, pg, vg, &s) == SNP_OK, "snapkv_pool: %s",
                   snp_error());
        get_raw(gb, pgot, pg, sizeof(float) * s.Hkv * P);
        e = test_max_rel_error(pgot, pooled, (size_t)s.Hkv * P);
        printf("%-44s max err / range %.3g (tol %.1g)\n",
               mode == SNAPKV_POOL_MAX ? "snapkv_pool max k=7" : "snapkv_pool avg k=7", e,
               TOL_POOL);
        test_check(&tc, e <= TOL_POOL, "snapkv_pool mode %d: error %.3g", mode, e);
        test_select_case(p, &s, pgot,
                         mode ? "snapkv_select (GPU-pooled max votes)"
                              : "snapkv_select (GPU-pooled avg votes)");
    }
    // Ties: votes on 5 levels; and a 10^6-position prefix with plateaus.
    for (int i = 0; i < s.Hkv * P; i++)
        pooled[i] = (float)(i * 2654435761u % 5);
    test_select_case(p, &s, pooled, "snapkv_select (5 vote levels: ties)");
    snapkv_shape big = s;
    big.L = big.S_cap = (1 << 20) + 32;
    big.budget = 2048;
    size_t bigP = (size_t)(big.L - big.w);
    float *bv = malloc(sizeof(float) * big.Hkv * bigP);
    for (size_t i = 0; i < big.Hkv * bigP; i++)
        bv[i] = (float)((i * 2654435761u >> 7) % 4096) * 1e-3f;
    test_select_case(p, &big, bv, "snapkv_select (P = 2^20, plateaus)");
    free(bv);

    // kv_gather with the selected rows, against a host gather; then a bad index.
    int32_t *idx = malloc(sizeof(int32_t) * s.Hkv * s.budget);
    ref_select(pgot, &s, idx);
    int32_t *ig = put_raw(gb, idx, sizeof(int32_t) * s.Hkv * s.budget);
    float *dst = calloc((size_t)s.Hkv * s.budget * s.D, sizeof(float));
    void *dg = put(gb, dst, (size_t)s.Hkv * s.budget * s.D);
    test_check(&tc,
               g->kv_gather(gb->ctx, dg, kg, ig, s.Hkv, s.D, s.budget, s.S_cap, s.budget, 0) ==
                       SNP_OK &&
                   g->sync(gb->ctx) == SNP_OK,
               "kv_gather: %s", snp_error());
    float *dgot = malloc(sizeof(float) * s.Hkv * s.budget * s.D);
    get(gb, dgot, dg, (size_t)s.Hkv * s.budget * s.D);
    for (int h = 0; h < s.Hkv; h++)
        for (int i = 0; i < s.budget; i++)
            memcpy(dst + ((size_t)h * s.budget + i) * s.D,
                   k + ((size_t)h * s.S_cap + idx[h * s.budget + i]) * s.D, sizeof(float) * s.D);
    test_check(&tc, memcmp(dst, dgot, sizeof(float) * s.Hkv * s.budget * s.D) == 0,
               "kv_gather: rows equal the host gather");
    idx[5] = s.S_cap + 7;
    gb->ops->upload(gb->ctx, ig, idx, sizeof(int32_t) * s.Hkv * s.budget);
    snp_status st = g->kv_gather(gb->ctx, dg, kg, ig, s.Hkv, s.D, s.budget, s.S_cap, s.budget, 0);
    if (st == SNP_OK) st = g->sync(gb->ctx);
    test_check(&tc, st == SNP_ERR_ARGUMENT && strstr(snp_error(), "3107"),
               "kv_gather: a bad device index is reported at sync: %s", snp_error());
    free(q), free(k), free(votes), free(got), free(pooled), free(pgot), free(idx), free(dst),
        free(dgot);
}

// SnapKV's votes under Dual Chunk Attention: against the double reference and the CPU
// backend. chunk_len picks where the chunk boundaries fall: before the window (every
// window row in one chunk, keys in three parts) or inside it (rows in two chunks).
static void test_snapkv_dca(pair *p, int D, int chunk_len) {
    snapkv_shape s = {.H = 8,
                      .Hkv = 2,
                      .D = D,
                      .S_cap = 3100,
                      .L = 3000,
                      .w = 32,
                      .budget = 256,
                      .kernel = 7,
                      .pooling = SNAPKV_POOL_MAX,
                      .scale = 1.0f / sqrtf((float)D)};
    int P = s.L - s.w;
    size_t nq = (size_t)s.w * s.H * s.D, nk = (size_t)s.Hkv * s.S_cap * s.D, nv = (size_t)s.H * P;
    float *q[3] = {rand_vec(nq, 3.0f), rand_vec(nq, 3.0f), rand_vec(nq, 3.0f)};
    float *k = rand_vec(nk, 3.0f), *want = malloc(sizeof(float) * nv);
    float *got = malloc(sizeof(float) * nv), *cv = malloc(sizeof(float) * nv);
    attn_dca dh = {.chunk_len = chunk_len, .q_succ = q[1], .q_inter = q[2]};
    s.dca = &dh;
    ref_votes((const float *const *)q, k, &s, want);
    char what[96];

    backend *b[2] = {p->gpu, p->cpu};
    float *out[2] = {got, cv};
    for (int i = 0; i < 2; i++) {
        void *qb[3];
        for (int r = 0; r < 3; r++)
            qb[r] = put(b[i], q[r], nq);
        void *kb = put(b[i], k, nk);
        float *vb = put_raw(b[i], want, sizeof(float) * nv); // overwritten
        attn_dca db = {.chunk_len = chunk_len, .q_succ = qb[1], .q_inter = qb[2]};
        s.dca = &db;
        snp_status st = b[i]->ops->snapkv_votes(b[i]->ctx, vb, qb[0], kb, &s);
        test_check(&tc, st == SNP_OK, "snapkv_votes DCA (%s): %s", b[i]->ops->name, snp_error());
        get_raw(b[i], out[i], vb, sizeof(float) * nv);
        for (int r = 0; r < 3; r++)
            b[i]->ops->dealloc(b[i]->ctx, qb[r]);
        b[i]->ops->dealloc(b[i]->ctx, kb);
        b[i]->ops->dealloc(b[i]->ctx, vb);
    }
    double e = test_max_rel_error(got, want, nv);
    snprintf(what, sizeof what, "snapkv_votes DCA D=%d chunk=%d (vs double)", D, chunk_len);
    printf("%-44s max err / range %.3g (tol %.1g)\n", what, e, TOL_VOTES);
    test_check(&tc, e <= TOL_VOTES, "%s: error %.3g", what, e);
    e = test_max_rel_error(got, cv, nv);
    snprintf(what, sizeof what, "snapkv_votes DCA D=%d chunk=%d (vs cpu)", D, chunk_len);
    printf("%-44s max err / range %.3g (tol %.1g)\n", what, e, TOL_VOTES);
    test_check(&tc, e <= TOL_VOTES, "%s: error %.3g", what, e);
    for (int r = 0; r < 3; r++)
        free(q[r]);
    free(k), free(want), free(got), free(cv);
}

int main(void) {
    test_host_logic();
    // Parity: cuBLAS may not sum split-K partials in bf16 (cuda_backend.c); a value
    // given in the environment wins.
    setenv("SNAPTP_CUDA_STRICT_REDUCTION", "1", 0);
    backend_options opt = {.n_threads = 2, .device = 0};
    pair p = {0};
    snp_status st = backend_open("cuda", &opt, &p.gpu);
    if (st != SNP_OK) {
        int no_gpu = st == SNP_ERR_DEVICE && strstr(snp_error(), "no CUDA device");
        int not_built = st == SNP_ERR_UNSUPPORTED;
        printf("%s\n", snp_error());
        if (no_gpu || not_built) {
            printf(no_gpu ? "skipped: no GPU\n" : "skipped: CUDA backend not built\n");
            return test_finish(&tc, "test_cuda_ops");
        }
        test_check(&tc, 0, "backend_open(cuda): %s", snp_error());
        return test_finish(&tc, "test_cuda_ops");
    }
    // The CPU reference keeps fp32 K/V: the harness fills caches with from_host_f32 on
    // both sides, which is the cache's type on CUDA (bf16) and on an fp32 CPU cache.
    const backend_options cpu_opt = {.n_threads = 2, .kv_type = KV_DTYPE_F32};
    if (backend_open("cpu", &cpu_opt, &p.cpu) != SNP_OK) {
        fprintf(stderr, "cpu backend: %s\n", snp_error());
        return 1;
    }
    test_pointwise(&p);
    test_matmul(&p);
    test_attention(&p);
    test_attention_dca(&p);
    test_snapkv(&p);
    test_snapkv_dca(&p, 64, 1000);  // window in chunk 2: keys meet all three rotations
    test_snapkv_dca(&p, 128, 1490); // a boundary (2980) inside the window [2968, 3000)
    // The SIMT kernel for everything (SNAPTP_CUDA_ATTENTION=rows, read at init).
    setenv("SNAPTP_CUDA_ATTENTION", "rows", 1);
    backend *rows = NULL;
    if (backend_open("cuda", &opt, &rows) == SNP_OK) {
        pair pr = {.cpu = p.cpu, .gpu = rows};
        printf("# SNAPTP_CUDA_ATTENTION=rows\n");
        attn_case(&pr, 100, 8, 2, 64, 128, 100, 0);
        attn_case(&pr, 70, 4, 4, 128, 320, 300, 230);
        attn_case(&pr, 20, 4, 1, 256, 64, 20, 0);
        attn_dca_case(&pr, 200, 8, 2, 64, 256, 200, 0, 48, 0, 0);
        attn_dca_case(&pr, 100, 8, 2, 128, 448, 400, 300, 70, 0, 13);
        attn_dca_case(&pr, 40, 8, 2, 128, 256, 190, 150, 100, 150, 0);
        backend_close(rows);
    }
    // The tensor-core kernel with Q in shared memory (SNAPTP_CUDA_ATTENTION=qsmem), the
    // layout before Q moved to registers: both variants must match the CPU.
    setenv("SNAPTP_CUDA_ATTENTION", "qsmem", 1);
    backend *qsmem = NULL;
    if (backend_open("cuda", &opt, &qsmem) == SNP_OK) {
        pair pq = {.cpu = p.cpu, .gpu = qsmem};
        printf("# SNAPTP_CUDA_ATTENTION=qsmem\n");
        attn_case(&pq, 100, 8, 2, 64, 128, 100, 0);
        attn_case(&pq, 70, 4, 4, 128, 320, 300, 230);
        attn_dca_case(&pq, 200, 8, 2, 64, 256, 200, 0, 48, 0, 0); // DCA ignores qsmem
        backend_close(qsmem);
    }
    unsetenv("SNAPTP_CUDA_ATTENTION");
    backend_close(p.gpu);
    backend_close(p.cpu);
    return test_finish(&tc, "test_cuda_ops");
}
