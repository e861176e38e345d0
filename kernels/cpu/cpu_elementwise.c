// cpu_elementwise: the memory-bound ops of the CPU backend: SwiGLU, residual add
// and the copy of new K/V rows into a head-major cache.
#include "cpu_backend.h"

#include <math.h>
#include <string.h>

// Below this many elements, waking the pool costs more than the loop.
enum { ELEMENTWISE_PARALLEL_MIN = 1 << 15, ELEMENTWISE_CHUNK = 1 << 13 };

static int threads_for(const cpu_ctx *c, size_t n) {
    return n >= ELEMENTWISE_PARALLEL_MIN ? c->n_threads : 1;
}

// Chunked y = f(y, a, b) over n elements: the job of swiglu and add.
typedef struct chunk_job {
    float *y;
    const float *a, *b;
    size_t n;
} chunk_job;

static size_t chunk_len(const chunk_job *j, int64_t k, size_t *i0) {
    *i0 = (size_t)k * ELEMENTWISE_CHUNK;
    return j->n - *i0 < ELEMENTWISE_CHUNK ? j->n - *i0 : ELEMENTWISE_CHUNK;
}

static void swiglu_chunk(void *arg, int64_t k, int tid) {
    const chunk_job *j = arg;
    size_t i0, len = chunk_len(j, k, &i0);
    cpu_vec_silu_mul(j->y + i0, j->a + i0, j->b + i0, len);
}

static void add_chunk(void *arg, int64_t k, int tid) {
    const chunk_job *j = arg;
    size_t i0, len = chunk_len(j, k, &i0);
    float *y = j->y + i0;
    const float *x = j->a + i0;
#pragma omp simd
    for (size_t i = 0; i < len; i++)
        y[i] += x[i];
}

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
    chunk_job job = {y, gate, up, n};
    cpu_pool_for(c->pool, threads_for(c, n), (int64_t)n_chunks, swiglu_chunk, &job);
    return SNP_OK;
}

// add: y += x over n elements; x may alias y.
snp_status cpu_add(void *ctx, void *y, const void *x, size_t n) {
    cpu_ctx *c = ctx;
    if (!c || !y || !x)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: add: NULL %s", !c ? "ctx" : !y ? "y" : "x");
    if (n == 0) return snp_fail(SNP_ERR_ARGUMENT, "cpu: add: n = 0 elements");
    size_t n_chunks = (n + ELEMENTWISE_CHUNK - 1) / ELEMENTWISE_CHUNK;
    chunk_job job = {y, x, NULL, n};
    cpu_pool_for(c->pool, threads_for(c, n), (int64_t)n_chunks, add_chunk, &job);
    return SNP_OK;
}

typedef struct kv_store_job {
    void *cache;
    const float *src;
    int T, Hkv, D, S_cap, row0;
    dtype type; // the cache's element
} kv_store_job;

static void kv_store_head(void *arg, int64_t h, int tid) {
    const kv_store_job *j = arg;
    for (int t = 0; t < j->T; t++) {
        const size_t row = (size_t)h * j->S_cap + j->row0 + t;
        const float *src = j->src + ((size_t)t * j->Hkv + h) * j->D;
        if (j->type == DTYPE_F16)
            cpu_vec_to_f16((uint16_t *)j->cache + row * j->D, src, (size_t)j->D);
        else
            memcpy((float *)j->cache + row * j->D, src, sizeof(float) * (size_t)j->D);
    }
}

// kv_store: cache[h, row0 + t, :] = src[t, h, :]
// src: [T, Hkv, D] fp32; cache: [Hkv, S_cap, D] of the context's KV type (fp32, or
// f16 rounded to nearest even); rows row0 .. row0 + T - 1 must fit.
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
    kv_store_job job = {cache, src, T, Hkv, D, S_cap, row0, c->kv_type};
    cpu_pool_for(c->pool, threads_for(c, (size_t)T * Hkv * D), Hkv, kv_store_head, &job);
    return SNP_OK;
}

typedef struct kv_scale_job {
    void *cache;
    int T, D, S_cap, row0;
    float factor;
    dtype type;
} kv_scale_job;

static void kv_scale_head(void *arg, int64_t h, int tid) {
    const kv_scale_job *j = arg;
    float row[512]; // head_dim is at most 512 (model_config_validate)
    for (int t = 0; t < j->T; t++) {
        const size_t at = ((size_t)h * j->S_cap + j->row0 + t) * j->D;
        if (j->type == DTYPE_F16) {
            uint16_t *r16 = (uint16_t *)j->cache + at;
            cpu_vec_from_f16(row, r16, (size_t)j->D);
            cpu_vec_scale(row, j->factor, j->D);
            cpu_vec_to_f16(r16, row, (size_t)j->D);
        } else {
            cpu_vec_scale((float *)j->cache + at, j->factor, j->D);
        }
    }
}

// kv_scale: cache[h, row0 + t, :] *= factor (backend.h), per head on the pool.
snp_status cpu_kv_scale(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                        float factor) {
    cpu_ctx *c = ctx;
    if (!c || !cache)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: kv_scale: NULL %s", !c ? "ctx" : "cache");
    if (T <= 0 || Hkv <= 0 || D <= 0 || D > 512 || S_cap <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: kv_scale: T = %d, Hkv = %d, D = %d (<= 512), S_cap = %d must be "
                        "positive",
                        T, Hkv, D, S_cap);
    if (row0 < 0 || (int64_t)row0 + T > S_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: kv_scale: rows %d .. %lld do not fit a cache of %d rows per head",
                        row0, (long long)row0 + T - 1, S_cap);
    if (!isfinite(factor))
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: kv_scale: factor %g is not finite", (double)factor);
    kv_scale_job job = {cache, T, D, S_cap, row0, factor, c->kv_type};
    cpu_pool_for(c->pool, threads_for(c, (size_t)T * Hkv * D), Hkv, kv_scale_head, &job);
    return SNP_OK;
}
