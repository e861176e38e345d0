// cpu_norm_rope: RMS norm and rotary embedding on the CPU, written to round like
// Hugging Face's fp32 Llama code (the parity reference), not for speed: both are
// a small fraction of a layer's time.
#include "cpu_backend.h"

#include <math.h>
#include <stdlib.h>

enum { ELEMENTWISE_PARALLEL_MIN = 1 << 15 }; // elements below which one thread is faster

typedef struct norm_job {
    float *y;
    const float *x, *g;
    float eps;
    int C;
} norm_job;

static void norm_row(void *arg, int64_t t, int tid) {
    const norm_job *j = arg;
    const int C = j->C;
    const float *xr = j->x + (size_t)t * C;
    float *yr = j->y + (size_t)t * C;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < C; i++)
        ss += (double)xr[i] * (double)xr[i];
    float var = (float)(ss / C);
    float r = 1.0f / sqrtf(var + j->eps);
    for (int i = 0; i < C; i++)
        yr[i] = (xr[i] * r) * j->g[i];
}

typedef struct rope_job {
    float *x, *cs, *sn; // cs, sn: [T][n_rot/2] scratch
    const int32_t *pos;
    const rope_params *rp;
    int H, D, n_rot;
} rope_job;

static void rope_row(void *arg, int64_t t, int tid) {
    const rope_job *j = arg;
    const int half = j->n_rot / 2; // dims n_rot .. D-1 of each head are left as they are
    const float scale = j->rp->cs_scale != 0.0f ? j->rp->cs_scale : 1.0f;
    float *ct = j->cs + (size_t)t * half, *st = j->sn + (size_t)t * half;
    for (int i = 0; i < half; i++) {
        float ang = (float)j->pos[t] * j->rp->inv_freq[i];
        // HF: emb.cos() * attention_scaling, one fp32 product (exact when it is 1).
        ct[i] = cosf(ang) * scale;
        st[i] = sinf(ang) * scale;
    }
    for (int h = 0; h < j->H; h++) {
        float *v = j->x + ((size_t)t * j->H + h) * j->D;
        if (j->rp->mode == ROPE_MODE_NEOX) {
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
    norm_job job = {y, x, w->data, eps, C};
    int nt = (int64_t)T * C >= ELEMENTWISE_PARALLEL_MIN ? c->n_threads : 1;
    cpu_pool_for(c->pool, nt, T, norm_row, &job);
    return SNP_OK;
}

// rope: x[t,h,:] rotated in place by angles pos[t] * inv_freq[i], i < n_rot/2 (n_rot:
// rp->n_rot, 0 meaning D). NEOX pairs (i, i + n_rot/2), PAIRS pairs (2i, 2i + 1); the
// dims past n_rot pass through (partial rotary, HF's q[..., rotary_dim:]). As HF: the angle is one
// fp32 product of (float)pos and inv_freq, cos and sin in fp32 (glibc, < 1 ulp), each times
// rp->cs_scale (YaRN), then out_a = a cos - b sin, out_b = b cos + a sin.
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
    const int n_rot = rp->n_rot != 0 ? rp->n_rot : D;
    if (n_rot < 0 || n_rot > D || n_rot % 2 != 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: rope: %d rotary dims of a head of %d: they must be even and at most "
                        "the head size",
                        rp->n_rot, D);
    const int half = n_rot / 2;
    float *cs = malloc(sizeof(float) * 2 * (size_t)T * half); // [T][half] cos, then sin
    if (!cs) return snp_fail(SNP_ERR_MEMORY, "cpu: rope: out of memory for %d angles", T * half);
    float *sn = cs + (size_t)T * half;
    rope_job job = {x, cs, sn, pos, rp, H, D, n_rot};
    int nt = (int64_t)T * H * D >= ELEMENTWISE_PARALLEL_MIN ? c->n_threads : 1;
    cpu_pool_for(c->pool, nt, T, rope_row, &job);
    free(cs);
    return SNP_OK;
}
