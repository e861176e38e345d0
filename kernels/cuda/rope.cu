// rope: rotary position embedding in place on bf16 [T, H, D], both pairings
// (NEOX halves, PAIRS adjacent), over all D dims or the first n_rot (partial rotary). Positions and
// inv_freq come from the host, and are uploaded only when they change (cuda_param_upload): inv_freq
// once per load, the positions once per step (q and k, and every layer, share them).
#include <math.h>

#include "cuda_device.h"
#include "cuda_internal.h"

enum { ROPE_THREADS = 256, ROPE_MAX_D = 8192 };

// rope: x[t,h,:] rotated by angle pos[t] * inv_freq[i] for pair i < n_rot/2;
// NEOX pairs (i, i + n_rot/2), PAIRS pairs (2i, 2i + 1); dims n_rot .. D-1 are not
// touched (partial rotary: GLM-4 rotates half of each head); out_a = a cos - b sin,
// out_b = b cos + a sin, in fp32, rounded once to bf16; cos and sin are first
// multiplied by `scale` (YaRN's attention temperature; 1 otherwise), as HF does.
// x: [T, H, D] bf16; pos: [T] int32 and inv_freq: [n_rot/2] fp32, device copies.
// Numerics as the CPU backend: the angle is one fp32 product, then sincosf (the
// accurate one, with full range reduction: positions reach 10^6 radians).
// grid (T), block 256, dynamic shared memory n_rot floats (cos, sin of each pair).
__global__ void __launch_bounds__(ROPE_THREADS)
    rope_kernel(bf16 *x, const int32_t *pos, const float *inv_freq, int H, int D, int n_rot,
                int neox, float scale) {
    extern __shared__ float rope_cs[]; // [n_rot/2] cos, then [n_rot/2] sin
    const int half = n_rot / 2, t = blockIdx.x;
    float *cs = rope_cs, *sn = rope_cs + half;
    const float p = (float)pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf(p * inv_freq[i], &s, &c);
        sn[i] = s * scale;
        cs[i] = c * scale;
    }
    __syncthreads(); // all angles are in shared memory before any thread rotates
    bf16 *xt = x + (size_t)t * H * D;
    for (int j = threadIdx.x; j < H * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        bf16 *v = xt + (size_t)h * D;
        const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        const float a = __bfloat162float(v[ia]), b = __bfloat162float(v[ib]);
        v[ia] = __float2bfloat16_rn(a * cs[i] - b * sn[i]);
        v[ib] = __float2bfloat16_rn(b * cs[i] + a * sn[i]);
    }
}

snp_status cuda_rope(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                     const rope_params *rp) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !x || !pos || !rp || !rp->inv_freq)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: rope: NULL %s",
                        !c     ? "ctx"
                        : !x   ? "x"
                        : !pos ? "pos"
                        : !rp  ? "rope params"
                               : "inv_freq");
    if (T <= 0 || H <= 0 || D <= 0 || D % 2 != 0 || D > ROPE_MAX_D)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: rope: T = %d, H = %d, D = %d: all must be positive, D even and at "
                        "most %d",
                        T, H, D, ROPE_MAX_D);
    if ((int64_t)H * (D / 2) > INT32_MAX)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: rope: H = %d x D = %d overflows", H, D);
    if ((unsigned)rp->mode >= ROPE_MODE_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: rope: unknown mode %d", (int)rp->mode);
    const int n_rot = rp->n_rot != 0 ? rp->n_rot : D;
    if (n_rot < 0 || n_rot > D || n_rot % 2 != 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: rope: %d rotary dims of a head of %d: they must be even and at "
                        "most the head size",
                        rp->n_rot, D);
    TRY(cuda_ctx_enter(c));
    const void *d_pos = NULL, *d_freq = NULL;
    TRY(cuda_param_upload(c, &c->rope_pos, pos, sizeof(int32_t) * (size_t)T, &d_pos));
    TRY(cuda_param_upload(c, &c->rope_freq, rp->inv_freq, sizeof(float) * (size_t)(n_rot / 2),
                          &d_freq));
    rope_kernel<<<T, ROPE_THREADS, sizeof(float) * (size_t)n_rot, c->stream>>>(
        (bf16 *)x, (const int32_t *)d_pos, (const float *)d_freq, H, D, n_rot,
        rp->mode == ROPE_MODE_NEOX, rp->cs_scale != 0.0f ? rp->cs_scale : 1.0f);
    CUDA_LAUNCHED("rope_kernel");
    return SNP_OK;
}
