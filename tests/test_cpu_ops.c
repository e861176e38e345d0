// test_cpu_ops: every CPU backend op except attention (test_cpu_attention.c)
// against a naive, obviously-correct reference in double precision, plus the
// registry, memory, weight loading and the precondition errors.
#include "../kernels/backend.h"
#include "../kernels/cpu/cpu_backend.h"
#include "support/test_support.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Tolerances: errors are max |got - ref| / max |ref| over the output.
#define TOL_MATMUL    2e-6 // fp32 accumulation over K <= 1536 against double
#define TOL_MATMUL_Q8 3e-2 // int8 activations (opt-in path): ~0.4% per element of x
#define TOL_NORM      1e-6 // rms_norm, swiglu
#define TOL_ROPE      1e-6 // cos/sin of the same fp32 angle, fp32 products

static test_counts counts;

// check: one comparison; prints it either way (the errors are the point), counts it.
static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ok) printf("ok   %s\n", msg);
    test_check(&counts, ok, "%s", msg);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double rnd_uniform(void) { // splitmix64, [0, 1)
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static float rnd_normal(void) {
    double u = rnd_uniform() + 1e-12, v = rnd_uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}
static void fill_normal(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        x[i] = rnd_normal() * scale;
}

// max |got - ref| / max |ref|, and max |got - ref|.
static double rel_err(const float *got, const double *ref, size_t n, double *max_abs) {
    double ma = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= ma)) ma = d; // NaN sticks
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    if (max_abs) *max_abs = ma;
    return mr > 0 ? ma / mr : ma;
}

// GGML's reference quantizers, row of n (n % 32 == 0) into dst.
static void quantize_row(dtype t, const float *x, void *dst, size_t n) {
    for (size_t b = 0; b < n / QK_BLOCK; b++) {
        const float *xb = x + b * QK_BLOCK;
        if (t == DTYPE_Q8_0) {
            block_q8_0 *o = (block_q8_0 *)dst + b;
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(xb[j]));
            float d = amax / 127, id = d ? 1 / d : 0;
            o->d = dtype_f32_to_f16(d);
            for (int j = 0; j < 32; j++)
                o->qs[j] = (int8_t)roundf(xb[j] * id);
        } else if (t == DTYPE_Q4_0) {
            block_q4_0 *o = (block_q4_0 *)dst + b;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
            float d = max / -8, id = d ? 1 / d : 0;
            o->d = dtype_f32_to_f16(d);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)(xb[j] * id + 8.5f), q1 = (int)(xb[j + 16] * id + 8.5f);
                q0 = q0 > 15 ? 15 : q0, q1 = q1 > 15 ? 15 : q1;
                o->qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        } else { // Q4_1
            block_q4_1 *o = (block_q4_1 *)dst + b;
            float mn = xb[0], mx = xb[0];
            for (int j = 1; j < 32; j++)
                mn = fminf(mn, xb[j]), mx = fmaxf(mx, xb[j]);
            float d = (mx - mn) / 15, id = d ? 1 / d : 0;
            o->d = dtype_f32_to_f16(d);
            o->m = dtype_f32_to_f16(mn);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)((xb[j] - mn) * id + 0.5f), q1 = (int)((xb[j + 16] - mn) * id + 0.5f);
                q0 = q0 > 15 ? 15 : q0, q1 = q1 > 15 ? 15 : q1;
                o->qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
    }
}

// A random rows x cols weight of type t, rows `pad` bytes wider than needed (a
// strided slice); *deq gets the reference fp32 values (dtype_to_f32).
static void *make_weight(dtype t, int rows, int cols, size_t pad, weight_src *src, float **deq) {
    uint64_t rb;
    dtype_row_bytes(t, (uint64_t)cols, "test", &rb);
    size_t stride = rb + pad;
    char *data = calloc(1, stride * rows);
    float *row = malloc(sizeof(float) * cols);
    *deq = malloc(sizeof(float) * (size_t)rows * cols);
    for (int r = 0; r < rows; r++) {
        fill_normal(row, (size_t)cols, 0.5f);
        char *dst = data + (size_t)r * stride;
        if (t == DTYPE_F32)
            memcpy(dst, row, sizeof(float) * cols);
        else if (t == DTYPE_F16 || t == DTYPE_BF16)
            for (int c = 0; c < cols; c++)
                ((uint16_t *)dst)[c] =
                    t == DTYPE_F16 ? dtype_f32_to_f16(row[c]) : dtype_f32_to_bf16(row[c]);
        else
            quantize_row(t, row, dst, (size_t)cols);
        memset(dst + rb, 0xff, pad); // garbage between rows must not be read
        dtype_to_f32(t, dst, *deq + (size_t)r * cols, (size_t)cols);
    }
    free(row);
    *src = (weight_src){.name = "test.w",
                        .type = t,
                        .rows = (uint64_t)rows,
                        .cols = (uint64_t)cols,
                        .row_stride_bytes = stride,
                        .data = data};
    return data;
}

static void test_matmul_case(backend *be, dtype t, int N, int K, int T, int with_bias, int q8) {
    const backend_ops *o = be->ops;
    weight_src src, bsrc;
    float *wref, *bref = NULL;
    void *wdata = make_weight(t, N, K, 40, &src, &wref);
    void *bdata = with_bias ? make_weight(DTYPE_BF16, 1, N, 0, &bsrc, &bref) : NULL;
    bk_weight *W = NULL, *B = NULL;
    float *x = malloc(sizeof(float) * (size_t)T * K), *y = malloc(sizeof(float) * (size_t)T * N);
    double *ref = malloc(sizeof(double) * (size_t)T * N);
    fill_normal(x, (size_t)T * K, 1.0f);
    snp_status st = o->weight_load(be->ctx, &src, &W);
    free(wdata); // the backend must keep no pointer into src
    if (st == SNP_OK && with_bias) st = o->weight_load(be->ctx, &bsrc, &B);
    free(bdata);
    ((cpu_ctx *)be->ctx)->matvec_q8 = q8;
    if (st == SNP_OK) st = o->matmul(be->ctx, y, x, W, B, T);
    // Batch invariance: up to 64 tokens (a server's decode batch) each token's row
    // must be bit-equal to the same token run alone, so batching changes no token.
    int same = 1;
    float *y1 = malloc(sizeof(float) * (size_t)N);
    for (int tt = 0; st == SNP_OK && T > 1 && T <= 64 && tt < T; tt++) {
        st = o->matmul(be->ctx, y1, x + (size_t)tt * K, W, B, 1);
        same &= memcmp(y1, y + (size_t)tt * N, sizeof(float) * (size_t)N) == 0;
    }
    free(y1);
    ((cpu_ctx *)be->ctx)->matvec_q8 = 0;
    check(same, "matmul %-4s%s N=%d K=%d T=%d: a token's row differs from the token alone",
          dtype_name(t), q8 ? "/q8" : "", N, K, T);
    for (int tt = 0; tt < T; tt++)
        for (int n = 0; n < N; n++) {
            double s = with_bias ? bref[n] : 0.0;
            for (int k = 0; k < K; k++)
                s += (double)x[(size_t)tt * K + k] * wref[(size_t)n * K + k];
            ref[(size_t)tt * N + n] = s;
        }
    double ma, re = rel_err(y, ref, (size_t)T * N, &ma);
    double tol = q8 ? TOL_MATMUL_Q8 : TOL_MATMUL;
    check(st == SNP_OK && re <= tol,
          "matmul %-4s%s N=%-5d K=%-5d T=%-3d bias=%d: max abs %.3g, rel %.3g (tol %.0e) %s",
          dtype_name(t), q8 ? "/q8" : "   ", N, K, T, with_bias, ma, re, tol,
          st ? snp_error() : "");
    o->weight_free(be->ctx, W);
    o->weight_free(be->ctx, B);
    free(x), free(y), free(ref), free(wref), free(bref);
}

static void test_matmul(backend *be) {
    for (int t = 0; t < DTYPE_COUNT; t++) {
        test_matmul_case(be, (dtype)t, 96, 64, 1, 0, 0);
        test_matmul_case(be, (dtype)t, 96, 64, 37, 1, 0);
        test_matmul_case(be, (dtype)t, 200, 576, 1, 1, 0);
        test_matmul_case(be, (dtype)t, 200, 576, 37, 0, 0);
    }
    // Tails: K not a multiple of the vector width (floats), an odd block count (Q*);
    // 43 rows: the 4-row Q4 decode kernel and the 1-row one both meet the odd block.
    for (int t = 0; t < DTYPE_COUNT; t++) {
        int K = t <= DTYPE_BF16 ? 37 : 96;
        test_matmul_case(be, (dtype)t, 43, K, 1, 0, 0);
        test_matmul_case(be, (dtype)t, 43, K, 5, 1, 0);
    }
    // SmolLM2's shapes, the decode and prefill paths.
    test_matmul_case(be, DTYPE_Q4_1, 1536, 576, 1, 0, 0);
    test_matmul_case(be, DTYPE_Q4_1, 1536, 576, 16, 0, 0); // a decode batch of 16
    test_matmul_case(be, DTYPE_Q4_0, 577, 576, 64, 1, 0);  // the largest batch, odd rows
    test_matmul_case(be, DTYPE_Q8_0, 576, 1536, 1, 0, 0);
    test_matmul_case(be, DTYPE_Q8_0, 576, 1536, 300, 0, 0);
    test_matmul_case(be, DTYPE_Q4_1, 64, 576, 257, 1, 0); // few panels: tokens split too
    test_matmul_case(be, DTYPE_F32, 64, 576, 257, 1, 0);
    for (int t = DTYPE_Q8_0; t <= DTYPE_Q4_1; t++) {
        test_matmul_case(be, (dtype)t, 576, 1536, 1, 1, 1);
        test_matmul_case(be, (dtype)t, 40, 96, 1, 0, 1); // odd block count
        test_matmul_case(be, (dtype)t, 43, 96, 6, 0, 1); // a batch through the int8 path
    }
}

static void test_norm_elementwise(backend *be) {
    const backend_ops *o = be->ops;
    enum { T = 7, C = 576 };
    static float x[T * C], y[T * C], g[T * C], u[T * C];
    static double ref[T * C];
    fill_normal(x, T * C, 3.0f);
    weight_src ws;
    float *wref;
    void *wd = make_weight(DTYPE_F16, 1, C, 0, &ws, &wref);
    bk_weight *w = NULL;
    snp_status st = o->weight_load(be->ctx, &ws, &w);
    free(wd);
    const float eps = 1e-5f;
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int c = 0; c < C; c++)
            ss += (double)x[t * C + c] * x[t * C + c];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int c = 0; c < C; c++)
            ref[t * C + c] = x[t * C + c] * r * wref[c];
    }
    if (st == SNP_OK) st = o->rms_norm(be->ctx, y, x, w, eps, T, C);
    double ma, re = rel_err(y, ref, T * C, &ma);
    check(st == SNP_OK && re <= TOL_NORM, "rms_norm T=%d C=%d: max abs %.3g, rel %.3g", T, C, ma,
          re);
    memcpy(y, x, sizeof x);
    if (st == SNP_OK) st = o->rms_norm(be->ctx, y, y, w, eps, T, C); // y aliases x
    re = rel_err(y, ref, T * C, &ma);
    check(st == SNP_OK && re <= TOL_NORM, "rms_norm in place: rel %.3g", re);
    o->weight_free(be->ctx, w);
    free(wref);

    fill_normal(g, T * C, 4.0f);
    fill_normal(u, T * C, 1.0f);
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f;
    for (int i = 0; i < T * C; i++)
        ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    st = o->swiglu(be->ctx, y, g, u, T * C);
    re = rel_err(y, ref, T * C, &ma);
    check(st == SNP_OK && re <= TOL_NORM, "swiglu n=%d: max abs %.3g, rel %.3g", T * C, ma, re);
    st = o->swiglu(be->ctx, g, g, u, T * C); // y aliases gate
    re = rel_err(g, ref, T * C, &ma);
    check(st == SNP_OK && re <= TOL_NORM, "swiglu in place: rel %.3g", re);
    static float big_g[100003], big_u[100003], big_y[100003]; // the threaded path
    static double big_ref[100003];
    fill_normal(big_g, 100003, 3.0f);
    fill_normal(big_u, 100003, 1.0f);
    for (int i = 0; i < 100003; i++)
        big_ref[i] = big_g[i] / (1.0 + exp(-(double)big_g[i])) * big_u[i];
    st = o->swiglu(be->ctx, big_y, big_g, big_u, 100003);
    re = rel_err(big_y, big_ref, 100003, &ma);
    check(st == SNP_OK && re <= TOL_NORM, "swiglu n=100003: rel %.3g", re);

    for (int i = 0; i < T * C; i++)
        ref[i] = (double)(x[i] + y[i]); // fp32 sum: exact match
    memcpy(u, y, sizeof y);
    st = o->add(be->ctx, u, x, T * C);
    re = rel_err(u, ref, T * C, &ma);
    check(st == SNP_OK && ma == 0.0, "add n=%d: max abs %.3g", T * C, ma);

    enum { KT = 5, HKV = 3, D = 16, SCAP = 12, ROW0 = 6 };
    static float kv_src[KT * HKV * D], cache[HKV * SCAP * D];
    fill_normal(kv_src, KT * HKV * D, 1.0f);
    st = o->kv_store(be->ctx, cache, kv_src, KT, HKV, D, SCAP, ROW0);
    int bad = 0;
    for (int h = 0; h < HKV; h++)
        for (int r = 0; r < SCAP; r++)
            for (int d = 0; d < D; d++) {
                float want =
                    r >= ROW0 && r < ROW0 + KT ? kv_src[((r - ROW0) * HKV + h) * D + d] : 0;
                bad += cache[(h * SCAP + r) * D + d] != want;
            }
    check(st == SNP_OK && bad == 0, "kv_store rows %d..%d: %d wrong", ROW0, ROW0 + KT - 1, bad);

    // kv_scale: rows ROW0 + 1 .. ROW0 + 3 of every head times 1.25 (the fp32 product),
    // the rest untouched.
    static float scaled[HKV * SCAP * D];
    memcpy(scaled, cache, sizeof cache);
    st = o->kv_scale(be->ctx, scaled, 3, HKV, D, SCAP, ROW0 + 1, 1.25f);
    bad = 0;
    for (int h = 0; h < HKV; h++)
        for (int r = 0; r < SCAP; r++)
            for (int d = 0; d < D; d++) {
                const float was = cache[(h * SCAP + r) * D + d];
                const float want = r > ROW0 && r <= ROW0 + 3 ? was * 1.25f : was;
                bad += scaled[(h * SCAP + r) * D + d] != want;
            }
    check(st == SNP_OK && bad == 0, "kv_scale rows %d..%d x 1.25: %d wrong", ROW0 + 1, ROW0 + 3,
          bad);
}

static void test_rope(backend *be) {
    enum { T = 6, H = 5, D = 64 };
    static float x[T * H * D], y[T * H * D];
    static double ref[T * H * D];
    float inv_freq[D / 2];
    for (int i = 0; i < D / 2; i++)
        inv_freq[i] = (float)pow(10000.0, -2.0 * i / D);
    int32_t pos[T] = {0, 1, 7, 1000, 65535, 1000000};
    for (int mode = 0; mode < ROPE_MODE_COUNT; mode++) {
        fill_normal(x, T * H * D, 1.0f);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < D / 2; i++) {
                    double ang = (double)((float)pos[t] * inv_freq[i]); // HF: fp32 product
                    int a = mode == ROPE_MODE_NEOX ? i : 2 * i;
                    int b = mode == ROPE_MODE_NEOX ? i + D / 2 : 2 * i + 1;
                    const float *v = x + (t * H + h) * D;
                    ref[(t * H + h) * D + a] = v[a] * cos(ang) - v[b] * sin(ang);
                    ref[(t * H + h) * D + b] = v[b] * cos(ang) + v[a] * sin(ang);
                }
        memcpy(y, x, sizeof x);
        rope_params rp = {.mode = (rope_mode)mode, .inv_freq = inv_freq};
        snp_status st = be->ops->rope(be->ctx, y, pos, T, H, D, &rp);
        double ma, re = rel_err(y, ref, T * H * D, &ma);
        check(st == SNP_OK && re <= TOL_ROPE, "rope %s positions up to 1e6: max abs %.3g, rel %.3g",
              mode == ROPE_MODE_NEOX ? "neox " : "pairs", ma, re);
    }
    // Partial rotary (GLM-4: half of each head): only the first R dims rotate, with R/2
    // frequencies of their own; dims R.. come back bit for bit.
    enum { R = D / 2 };
    float inv_r[R / 2];
    for (int i = 0; i < R / 2; i++)
        inv_r[i] = (float)pow(10000.0, -2.0 * i / R);
    for (int mode = 0; mode < ROPE_MODE_COUNT; mode++) {
        fill_normal(x, T * H * D, 1.0f);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const float *v = x + (t * H + h) * D;
                double *rr = ref + (t * H + h) * D;
                for (int d = R; d < D; d++)
                    rr[d] = v[d];
                for (int i = 0; i < R / 2; i++) {
                    double ang = (double)((float)pos[t] * inv_r[i]);
                    int a = mode == ROPE_MODE_NEOX ? i : 2 * i;
                    int b = mode == ROPE_MODE_NEOX ? i + R / 2 : 2 * i + 1;
                    rr[a] = v[a] * cos(ang) - v[b] * sin(ang);
                    rr[b] = v[b] * cos(ang) + v[a] * sin(ang);
                }
            }
        memcpy(y, x, sizeof x);
        rope_params rp = {.mode = (rope_mode)mode, .inv_freq = inv_r, .n_rot = R};
        snp_status st = be->ops->rope(be->ctx, y, pos, T, H, D, &rp);
        int pass_same = 1;
        for (int r = 0; r < T * H; r++)
            pass_same &= memcmp(y + r * D + R, x + r * D + R, sizeof(float) * (D - R)) == 0;
        double ma, re = rel_err(y, ref, T * H * D, &ma);
        check(st == SNP_OK && re <= TOL_ROPE && pass_same,
              "rope %s, %d of %d dims: max abs %.3g, rel %.3g, the rest untouched %d",
              mode == ROPE_MODE_NEOX ? "neox " : "pairs", R, D, ma, re, pass_same);
    }
    rope_params bad = {.mode = ROPE_MODE_PAIRS, .inv_freq = inv_r, .n_rot = D + 2};
    check(be->ops->rope(be->ctx, y, pos, T, H, D, &bad) == SNP_ERR_ARGUMENT,
          "rope with more rotary dims than the head refused");
}

static void test_embed_memory(backend *be) {
    const backend_ops *o = be->ops;
    void *p = NULL;
    snp_status st = o->alloc(be->ctx, 1000, &p);
    int zero = 1;
    for (int i = 0; st == SNP_OK && i < 1000; i++)
        zero &= ((unsigned char *)p)[i] == 0;
    check(st == SNP_OK && ((uintptr_t)p % 64) == 0 && zero, "alloc: 64-byte aligned, zeroed");
    float h[250], back[250];
    fill_normal(h, 250, 1.0f);
    st = o->from_host_f32(be->ctx, p, h, 250);
    if (st == SNP_OK) st = o->to_host_f32(be->ctx, back, p, 250);
    check(st == SNP_OK && memcmp(h, back, sizeof h) == 0, "from_host_f32 / to_host_f32 round trip");
    o->dealloc(be->ctx, p);
    o->dealloc(be->ctx, NULL);
    o->weight_free(be->ctx, NULL);

    for (int t = 0; t < DTYPE_COUNT; t++) {
        enum { V = 50, C = 64 };
        weight_src src;
        float *ref;
        void *d = make_weight((dtype)t, V, C, 8, &src, &ref);
        bk_weight *w = NULL;
        st = o->weight_load(be->ctx, &src, &w);
        free(d);
        int32_t ids[4] = {3, 0, 49, 3};
        float x[4 * C];
        if (st == SNP_OK) st = o->embed(be->ctx, x, w, ids, 4);
        int same = st == SNP_OK;
        for (int i = 0; same && i < 4; i++)
            same = !memcmp(x + i * C, ref + ids[i] * C, sizeof(float) * C);
        check(same, "embed %s: rows equal dtype_to_f32", dtype_name((dtype)t));
        int32_t bad_ids[2] = {1, 50};
        st = o->embed(be->ctx, x, w, bad_ids, 2);
        check(st == SNP_ERR_ARGUMENT && strstr(snp_error(), "50"), "embed id 50 of 50 rows: %s",
              snp_error());
        o->weight_free(be->ctx, w);
        free(ref);
    }
}

static void expect_status(snp_status st, snp_status want, const char *what) {
    check(st == want && snp_error()[0], "%s -> %s: \"%s\"", what, snp_status_name(st), snp_error());
    snp_error_clear();
}
static void expect_error(snp_status st, const char *what) {
    expect_status(st, SNP_ERR_ARGUMENT, what);
}

static void test_errors(backend *be) {
    const backend_ops *o = be->ops;
    void *ctx = be->ctx;
    float buf[4096] = {0}, out[4096];
    weight_src src;
    float *ref;
    void *d = make_weight(DTYPE_Q8_0, 4, 64, 0, &src, &ref);
    bk_weight *W = NULL, *bad = NULL;
    o->weight_load(ctx, &src, &W);
    weight_src s2 = src;
    s2.cols = 40;
    expect_status(o->weight_load(ctx, &s2, &bad), SNP_ERR_FORMAT,
                  "weight_load Q8_0 with 40 columns");
    s2 = src;
    s2.row_stride_bytes = 10;
    expect_error(o->weight_load(ctx, &s2, &bad), "weight_load stride shorter than a row");
    s2 = src;
    s2.data = NULL;
    expect_error(o->weight_load(ctx, &s2, &bad), "weight_load NULL data");
    expect_error(o->matmul(ctx, buf, buf, W, NULL, 0), "matmul T=0");
    expect_error(o->matmul(ctx, buf, NULL, W, NULL, 1), "matmul NULL x");
    expect_error(o->matmul(ctx, buf, buf, W, NULL, 1), "matmul y == x");
    expect_error(o->matmul(ctx, out, buf, W, W, 1), "matmul with a 4-row bias");
    expect_error(o->rms_norm(ctx, buf, buf, W, 1e-5f, 1, 64), "rms_norm with a 4-row weight");
    rope_params rp = {.mode = ROPE_MODE_NEOX, .inv_freq = buf};
    int32_t pos[2] = {0, 1};
    expect_error(o->rope(ctx, buf, pos, 2, 2, 7, &rp), "rope D=7");
    rp.mode = ROPE_MODE_COUNT;
    expect_error(o->rope(ctx, buf, pos, 2, 2, 8, &rp), "rope bad mode");
    expect_error(o->kv_store(ctx, buf, buf, 4, 1, 8, 10, 7), "kv_store past S_cap");
    expect_error(o->kv_store(ctx, buf, buf, 4, 1, 8, 10, -1), "kv_store row0=-1");
    expect_error(o->kv_scale(ctx, buf, 4, 1, 8, 10, 7, 2.0f), "kv_scale past S_cap");
    expect_error(o->kv_scale(ctx, buf, 4, 1, 8, 10, 0, NAN), "kv_scale NaN factor");
    expect_error(o->swiglu(ctx, buf, buf, NULL, 4), "swiglu NULL up");
    expect_error(o->add(ctx, buf, buf, 0), "add n=0");
    expect_error(o->embed(ctx, buf, W, pos, 0), "embed T=0");
    void *p = NULL;
    expect_error(o->alloc(ctx, 0, &p), "alloc 0 bytes");
    attn_shape as = {.T = 1, .H = 9, .Hkv = 2, .D = 64, .S_cap = 8, .n_keys = 4, .scale = 0.125f};
    expect_error(o->attention(ctx, buf, buf, buf, buf, &as), "attention H=9 Hkv=2");
    as.Hkv = 3, as.n_keys = 9;
    expect_error(o->attention(ctx, buf, buf, buf, buf, &as), "attention n_keys > S_cap");
    as.n_keys = 4, as.q_offset = -1;
    expect_error(o->attention(ctx, buf, buf, buf, buf, &as), "attention q_offset=-1");
    as.q_offset = 3, as.D = 0;
    expect_error(o->attention(ctx, buf, buf, buf, buf, &as), "attention D=0");
    o->weight_free(ctx, W);
    free(d), free(ref);

    backend *none = NULL;
    snp_status st = backend_open("tpu", NULL, &none);
    check(st != SNP_OK && !none && strstr(snp_error(), "cpu"), "backend_open tpu -> \"%s\"",
          snp_error());
}

// The default f16 K/V cache: kv_store rounds like dtype_f32_to_f16 (nearest even)
// and saturates, kv_gather moves f16 rows unchanged, and a type the CPU cannot keep
// is refused naming the ones it can.
static void test_kv_f16(void) {
    backend *be = NULL;
    const backend_options opt = {.n_threads = 2}; // kv_type left at its default
    if (backend_open("cpu", &opt, &be) != SNP_OK) {
        check(0, "backend_open cpu (default KV type): %s", snp_error());
        return;
    }
    const backend_ops *o = be->ops;
    check(o->kv_type(be->ctx) == DTYPE_F16 && backend_kv_bytes(be) == 2,
          "default CPU KV type is f16 (%s)", dtype_name(o->kv_type(be->ctx)));
    enum { KT = 7, HKV = 2, D = 40, SCAP = 9, ROW0 = 1 };
    static float src[KT * HKV * D];
    static uint16_t cache[HKV * SCAP * D], gathered[HKV * 4 * D];
    fill_normal(src, KT * HKV * D, 3.0f);
    src[0] = 1e6f, src[1] = -1e6f, src[2] = NAN, src[3] = 65519.0f, src[4] = 5.96e-8f; // edges
    snp_status st = o->kv_store(be->ctx, cache, src, KT, HKV, D, SCAP, ROW0);
    int bad = 0;
    for (int t = 0; t < KT; t++)
        for (int h = 0; h < HKV; h++)
            for (int d = 0; d < D; d++) {
                float x = src[(t * HKV + h) * D + d];
                uint16_t want = isnan(x) ? 0x7e00 : dtype_f32_to_f16(fminf(fmaxf(x, -65504.0f), 65504.0f));
                uint16_t got = cache[(h * SCAP + ROW0 + t) * D + d];
                bad += isnan(x) ? !isnan(dtype_f16_to_f32(got)) : got != want;
            }
    check(st == SNP_OK && bad == 0, "kv_store f16 rows %d..%d (saturation, NaN, subnormal): %d wrong",
          ROW0, ROW0 + KT - 1, bad);
    check(dtype_f16_to_f32(cache[ROW0 * D]) == 65504.0f &&
              dtype_f16_to_f32(cache[ROW0 * D + 1]) == -65504.0f,
          "kv_store f16 saturates 1e6 to 65504 (got %g, %g)", dtype_f16_to_f32(cache[ROW0 * D]),
          dtype_f16_to_f32(cache[ROW0 * D + 1]));
    static int32_t idx[HKV * 4] = {0, 3, 5, 7, 1, 2, 4, 6};
    for (int i = 0; i < HKV * 4; i++) idx[i] += ROW0;
    st = o->kv_gather(be->ctx, gathered, cache, idx, HKV, D, 4, SCAP, 4, 0);
    bad = 0;
    for (int h = 0; h < HKV; h++)
        for (int i = 0; i < 4; i++)
            bad += memcmp(gathered + (h * 4 + i) * D, cache + (h * SCAP + idx[h * 4 + i]) * D,
                          sizeof(uint16_t) * D) != 0;
    check(st == SNP_OK && bad == 0, "kv_gather f16 rows: %d wrong", bad);
    // kv_scale on an f16 cache: widened, scaled in fp32, rounded back to nearest even.
    static uint16_t before[HKV * SCAP * D];
    memcpy(before, cache, sizeof cache);
    st = o->kv_scale(be->ctx, cache, KT - 1, HKV, D, SCAP, ROW0 + 1, 1.0176f);
    bad = 0;
    for (int h = 0; h < HKV; h++)
        for (int r = 0; r < SCAP; r++)
            for (int d = 0; d < D; d++) {
                const size_t at = ((size_t)h * SCAP + r) * D + d;
                const int scaled = r > ROW0 && r < ROW0 + KT;
                const uint16_t want =
                    scaled ? dtype_f32_to_f16(dtype_f16_to_f32(before[at]) * 1.0176f) : before[at];
                bad += cache[at] != want;
            }
    check(st == SNP_OK && bad == 0, "kv_scale f16 rows %d..%d x 1.0176: %d wrong", ROW0 + 1,
          ROW0 + KT - 1, bad);
    backend_close(be);

    const backend_options bf16 = {.kv_type = KV_DTYPE_BF16};
    st = backend_open("cpu", &bf16, &be);
    check(st != SNP_OK && strstr(snp_error(), "f16 or f32"), "cpu KV type bf16 refused: \"%s\"",
          snp_error());
}

int main(void) {
    backend *be = NULL;
    backend_options opt = {.n_threads = 0, .kv_type = KV_DTYPE_F32};
    if (backend_open("cpu", &opt, &be) != SNP_OK) {
        printf("FAIL backend_open cpu: %s\n", snp_error());
        return 1;
    }
    printf("# backend %s (build has: %s), %d threads; errors are max|got-ref|/max|ref|\n",
           be->ops->name, backend_names(), ((cpu_ctx *)be->ctx)->n_threads);
    test_embed_memory(be);
    test_matmul(be);
    test_norm_elementwise(be);
    test_rope(be);
    test_errors(be);
    backend_close(be);
    test_kv_f16();
    backend_close(NULL);
    return test_finish(&counts, "test_cpu_ops");
}
