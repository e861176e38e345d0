// cpu_elementwise: the memory-bound ops of the CPU backend: SwiGLU, residual add
// and the copy of new K/V rows into a head-major cache.
#include "cpu_backend.h"

#include <string.h>

// Below this many elements, waking an OpenMP team costs more than the loop.
enum { ELEMENTWISE_PARALLEL_MIN = 1 << 15, ELEMENTWISE_CHUNK = 1 << 13 };

// swiglu: y = silu(gate) * up with silu(g) = g / (1 + exp(-g)) as torch computes it;
// y may alias gate or up (each element is read before it is written).
snp_status cpu_swiglu(void *ctx, void *y, const void *gate, const void *up, size_t n) {
    cpu_ctx *c = ctx;
    if (!c || !y || !gate || !up)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: swiglu: NULL %s",
                        !c      ? "ctx"
                        : !y    ? "y"
                        : !gate ? "gate"
                                : "up");
    if (n == 0) return snp_fail(SNP_ERR_ARGUMENT, "cpu: swiglu: n = 0 elements");
    size_t n_chunks = (n + ELEMENTWISE_CHUNK - 1) / ELEMENTWISE_CHUNK;
#pragma omp parallel for num_threads(c->n_threads) if (n >= ELEMENTWISE_PARALLEL_MIN)
    for (size_t k = 0; k < n_chunks; k++) {
        size_t i0 = k * ELEMENTWISE_CHUNK,
               len = n - i0 < ELEMENTWISE_CHUNK ? n - i0 : ELEMENTWISE_CHUNK;
        cpu_vec_silu_mul((float *)y + i0, (const float *)gate + i0, (const float *)up + i0, len);
    }
    return SNP_OK;
}

// add: y += x over n elements; x may alias y.
snp_status cpu_add(void *ctx, void *y, const void *x, size_t n) {
    cpu_ctx *c = ctx;
    if (!c || !y || !x)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: add: NULL %s", !c ? "ctx" : !y ? "y" : "x");
    if (n == 0) return snp_fail(SNP_ERR_ARGUMENT, "cpu: add: n = 0 elements");
    float *yv = y;
    const float *xv = x;
#pragma omp parallel for simd num_threads(c->n_threads) if (n >= ELEMENTWISE_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++)
        yv[i] += xv[i];
    return SNP_OK;
}

// kv_store: cache[h, row0 + t, :] = src[t, h, :]
// src: [T, Hkv, D] fp32; cache: [Hkv, S_cap, D] fp32; rows row0 .. row0 + T - 1 must fit.
snp_status cpu_kv_store(void *ctx, void *cache, const void *src, int T, int Hkv, int D, int S_cap,
                        int row0) {
    cpu_ctx *c = ctx;
    if (!c || !cache || !src)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: kv_store: NULL %s",
                        !c       ? "ctx"
                        : !cache ? "cache"
                                 : "src");
    if (T <= 0 || Hkv <= 0 || D <= 0 || S_cap <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: kv_store: T = %d, Hkv = %d, D = %d, S_cap = %d must be positive", T,
                        Hkv, D, S_cap);
    if (row0 < 0 || (int64_t)row0 + T > S_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: kv_store: rows %d .. %lld do not fit a cache of %d rows per head",
                        row0, (long long)row0 + T - 1, S_cap);
    float *dst = cache;
    const float *s = src;
#pragma omp parallel for collapse(2)                                                               \
    num_threads(c->n_threads) if ((int64_t)T * Hkv * D >= ELEMENTWISE_PARALLEL_MIN)
    for (int h = 0; h < Hkv; h++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)h * S_cap + row0 + t) * D, s + ((size_t)t * Hkv + h) * D,
                   sizeof(float) * (size_t)D);
    return SNP_OK;
}
