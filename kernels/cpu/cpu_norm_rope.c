// cpu_norm_rope: RMS norm and rotary embedding on the CPU, written to round like
// Hugging Face's fp32 Llama code (the parity reference), not for speed: both are
// a small fraction of a layer's time.
#include "cpu_backend.h"

#include <math.h>
#include <stdlib.h>

enum { ELEMENTWISE_PARALLEL_MIN = 1 << 15 }; // elements below which one thread is faster

// rms_norm: y[t,:] = (x[t,:] * rsqrt(mean(x[t,:]^2) + eps)) * w
// x, y: [T, C] fp32; w: 1 x C (stored fp32); y may alias x.
// Numerics as HF LlamaRMSNorm in fp32: the sum of squares in double (cheap, and
// at least as accurate as torch's pairwise fp32 sum), rsqrt as 1 / sqrt in fp32.
snp_status cpu_rms_norm(void *ctx, void *y, const void *x, const bk_weight *w, float eps, int T,
                        int C) {
    cpu_ctx *c = ctx;
    if (!c || !y || !x || !w)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: rms_norm: NULL %s",
                        !c   ? "ctx"
                        : !y ? "y"
                        : !x ? "x"
                             : "w");
    if (T <= 0 || C <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: rms_norm: T = %d, C = %d must be positive", T, C);
    if (w->rows != 1 || w->cols != C)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: rms_norm: weight '%s' is %lld x %lld, expected 1 x %d", w->name,
                        (long long)w->rows, (long long)w->cols, C);
    if (!(eps >= 0.0f) || isinf(eps))
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: rms_norm: eps = %g is not a finite value >= 0",
                        (double)eps);
    const float *g = w->data;
#pragma omp parallel for num_threads(c->n_threads) if ((int64_t)T * C >= ELEMENTWISE_PARALLEL_MIN)
    for (int t = 0; t < T; t++) {
        const float *xr = (const float *)x + (size_t)t * C;
        float *yr = (float *)y + (size_t)t * C;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++)
            ss += (double)xr[i] * (double)xr[i];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < C; i++)
            yr[i] = (xr[i] * r) * g[i];
    }
    return SNP_OK;
}

// rope: x[t,h,:] rotated in place by angles pos[t] * inv_freq[i], i < D/2.
// NEOX pairs (i, i + D/2), PAIRS pairs (2i, 2i + 1). As HF: the angle is one fp32
// product of (float)pos and inv_freq, cos and sin in fp32 (glibc, < 1 ulp), then
// out_a = a cos - b sin, out_b = b cos + a sin.
snp_status cpu_rope(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                    const rope_params *rp) {
    cpu_ctx *c = ctx;
    if (!c || !x || !pos || !rp || !rp->inv_freq)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: rope: NULL %s",
                        !c     ? "ctx"
                        : !x   ? "x"
                        : !pos ? "pos"
                        : !rp  ? "rope params"
                               : "inv_freq");
    if (T <= 0 || H <= 0 || D <= 0 || D % 2 != 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: rope: T = %d, H = %d, D = %d: all must be positive and D even", T, H,
                        D);
    if ((unsigned)rp->mode >= ROPE_MODE_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: rope: unknown mode %d", (int)rp->mode);
    const int half = D / 2;
    float *cs = malloc(sizeof(float) * 2 * (size_t)T * half); // [T][half] cos, then sin
    if (!cs) return snp_fail(SNP_ERR_MEMORY, "cpu: rope: out of memory for %d angles", T * half);
    float *sn = cs + (size_t)T * half;
    const int big = (int64_t)T * H * D >= ELEMENTWISE_PARALLEL_MIN;
#pragma omp parallel num_threads(c->n_threads) if (big)
    {
#pragma omp for
        for (int t = 0; t < T; t++)
            for (int i = 0; i < half; i++) {
                float ang = (float)pos[t] * rp->inv_freq[i];
                cs[(size_t)t * half + i] = cosf(ang);
                sn[(size_t)t * half + i] = sinf(ang);
            }
#pragma omp for
        for (int t = 0; t < T; t++) {
            const float *ct = cs + (size_t)t * half, *st = sn + (size_t)t * half;
            for (int h = 0; h < H; h++) {
                float *v = (float *)x + ((size_t)t * H + h) * D;
                if (rp->mode == ROPE_MODE_NEOX) {
                    for (int i = 0; i < half; i++) {
                        float a = v[i], b = v[i + half];
                        v[i] = a * ct[i] - b * st[i];
                        v[i + half] = b * ct[i] + a * st[i];
                    }
                } else {
                    for (int i = 0; i < half; i++) {
                        float a = v[2 * i], b = v[2 * i + 1];
                        v[2 * i] = a * ct[i] - b * st[i];
                        v[2 * i + 1] = b * ct[i] + a * st[i];
                    }
                }
            }
        }
    }
    free(cs);
    return SNP_OK;
}
