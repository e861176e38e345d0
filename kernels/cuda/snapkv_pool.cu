// snapkv_pool: SnapKV steps 6-7 (../shared/SNAPKV.md): votes pooled along
// positions, then averaged over the query heads of each KV head.
#include "cuda_device.h"
#include "cuda_internal.h"

enum { POOL_THREADS = 256 };

// snapkv_pool_kernel: pooled[hk, p] = (1/G) sum_g pool(votes[hk G + g, :])[p]
// with pool over [p - k/2, p + k/2] ∩ [0, P): avg divides by k at the edges too
// (avg_pool1d's count_include_pad = True), max ignores the padding.
// votes: [H, P] fp32; pooled: [Hkv, P] fp32. grid (ceil(P / 256), Hkv), block 256,
// one position per thread (k <= 1023 reads per head, served by L1/L2).
__global__ void __launch_bounds__(POOL_THREADS)
    snapkv_pool_kernel(float *pooled, const float *votes, int P, int G, int kernel, int is_max) {
    const int p = blockIdx.x * POOL_THREADS + threadIdx.x, hk = blockIdx.y;
    if (p >= P) return;
    const int r = kernel / 2, lo = max(0, p - r), hi = min(P - 1, p + r);
    float acc = 0.0f;
    for (int g = 0; g < G; g++) {
        const float *v = votes + (size_t)(hk * G + g) * P;
        float x;
        if (is_max) {
            x = -INFINITY;
            for (int j = lo; j <= hi; j++)
                x = fmaxf(x, v[j]);
        } else {
            x = 0.0f;
            for (int j = lo; j <= hi; j++)
                x += v[j];
            x /= (float)kernel;
        }
        acc += x;
    }
    pooled[(size_t)hk * P + p] = acc / (float)G;
}

snp_status cuda_snapkv_pool(void *ctx, float *pooled, const float *votes, const snapkv_shape *s) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !pooled || !votes)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: snapkv_pool: NULL %s",
                        !c        ? "ctx"
                        : !pooled ? "pooled"
                                  : "votes");
    TRY(cuda_snapkv_check(s, "snapkv_pool", 1));
    if (pooled == votes)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: snapkv_pool: pooled and votes are the same buffer");
    TRY(cuda_ctx_enter(c));
    const int P = s->L - s->w, G = s->H / s->Hkv;
    snapkv_pool_kernel<<<dim3((unsigned)((P + POOL_THREADS - 1) / POOL_THREADS), (unsigned)s->Hkv),
                         POOL_THREADS, 0, c->stream>>>(pooled, votes, P, G, s->kernel,
                                                       s->pooling == SNAPKV_POOL_MAX);
    CUDA_LAUNCHED("snapkv_pool_kernel");
    return SNP_OK;
}
