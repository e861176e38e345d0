// kv_rows: row copies into head-major K/V caches: kv_store (new tokens' K/V,
// token-major -> head-major) and kv_gather (SnapKV's kept rows, by device index),
// and kv_scale (rows times a factor, in place).
#include "cuda_device.h"
#include "cuda_internal.h"

enum { KV_THREADS = 256, KV_BLOCKS_PER_SM = 8 };

static int kv_grid(const cuda_ctx *c, size_t n_items) {
    size_t want = (n_items + KV_THREADS - 1) / KV_THREADS;
    size_t cap = (size_t)c->n_sm * KV_BLOCKS_PER_SM;
    return (int)(want < cap ? (want > 0 ? want : 1) : cap);
}

// kv_store: cache[h, row0 + t, :] = src[t, h, :]
// src: [T, Hkv, D] bf16; cache: [Hkv, S_cap, D] bf16; rows row0 .. row0 + T - 1 fit
// (checked). Grid-stride over Hkv * T * D / VEC vectors, h outermost so the
// writes of consecutive threads are contiguous; VEC = 8 needs D % 8 == 0 and
// 16-byte aligned pointers. grid (<= 8 per SM), block 256.
template <int VEC>
__global__ void __launch_bounds__(KV_THREADS)
    kv_store_kernel(bf16 *cache, const bf16 *src, int T, int Hkv, int D, int S_cap, int row0) {
    const int nv = D / VEC;
    const size_t n = (size_t)Hkv * T * nv;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(e % nv) * VEC;
        const size_t row = e / nv;
        const int t = (int)(row % T), h = (int)(row / T);
        bf16 *dst = cache + ((size_t)h * S_cap + row0 + t) * D + d;
        const bf16 *s = src + ((size_t)t * Hkv + h) * D + d;
        if (VEC == 8)
            *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(s);
        else
            *dst = *s;
    }
}

// kv_gather: dst[h, row0 + i, :] = src[h, idx[h, i], :] for i < n_idx
// src: [Hkv, src_cap, D] bf16; dst: [Hkv, dst_cap, D] bf16; idx: [Hkv, n_idx] int32,
// device memory, so its range is checked here: an index outside [0, src_cap)
// leaves its row unchanged and records (h, i, index) once in err, which sync
// reports. Geometry as kv_store.
template <int VEC>
__global__ void __launch_bounds__(KV_THREADS)
    kv_gather_kernel(bf16 *dst, const bf16 *src, const int32_t *idx, int Hkv, int D, int n_idx,
                     int src_cap, int dst_cap, int row0, int *err) {
    const int nv = D / VEC;
    const size_t n = (size_t)Hkv * n_idx * nv;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(e % nv) * VEC;
        const size_t row = e / nv;
        const int i = (int)(row % n_idx), h = (int)(row / n_idx);
        const int j = idx[row];
        if (j < 0 || j >= src_cap) {
            if (d == 0 && atomicCAS(err, 0, CUDA_ERR_KV_GATHER_INDEX) == 0) {
                err[1] = h;
                err[2] = i;
                err[3] = j;
            }
            continue;
        }
        bf16 *o = dst + ((size_t)h * dst_cap + row0 + i) * D + d;
        const bf16 *s = src + ((size_t)h * src_cap + j) * D + d;
        if (VEC == 8)
            *reinterpret_cast<uint4 *>(o) = *reinterpret_cast<const uint4 *>(s);
        else
            *o = *s;
    }
}

static int kv_vec(int D, const void *a, const void *b) {
    return D % 8 == 0 && (((uintptr_t)a | (uintptr_t)b) & 15u) == 0 ? 8 : 1;
}

snp_status cuda_kv_store(void *ctx, void *cache, const void *src, int T, int Hkv, int D, int S_cap,
                         int row0) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !cache || !src)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: kv_store: NULL %s",
                        !c       ? "ctx"
                        : !cache ? "cache"
                                 : "src");
    if (T <= 0 || Hkv <= 0 || D <= 0 || S_cap <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_store: T = %d, Hkv = %d, D = %d, S_cap = %d must be positive", T,
                        Hkv, D, S_cap);
    if (row0 < 0 || (int64_t)row0 + T > S_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_store: rows %d .. %lld do not fit a cache of %d rows per head",
                        row0, (long long)row0 + T - 1, S_cap);
    TRY(cuda_ctx_enter(c));
    const size_t n = (size_t)Hkv * T * D;
    if (kv_vec(D, cache, src) == 8) {
        kv_store_kernel<8><<<kv_grid(c, n / 8), KV_THREADS, 0, c->stream>>>(
            (bf16 *)cache, (const bf16 *)src, T, Hkv, D, S_cap, row0);
        CUDA_LAUNCHED("kv_store_kernel<8>");
    } else {
        kv_store_kernel<1><<<kv_grid(c, n), KV_THREADS, 0, c->stream>>>(
            (bf16 *)cache, (const bf16 *)src, T, Hkv, D, S_cap, row0);
        CUDA_LAUNCHED("kv_store_kernel<1>");
    }
    return SNP_OK;
}

snp_status cuda_kv_gather(void *ctx, void *dst, const void *src, const int32_t *idx, int Hkv, int D,
                          int n_idx, int src_cap, int dst_cap, int row0) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !dst || !src || !idx)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: kv_gather: NULL %s",
                        !c     ? "ctx"
                        : !dst ? "dst"
                        : !src ? "src"
                               : "idx");
    if (Hkv <= 0 || D <= 0 || n_idx <= 0 || src_cap <= 0 || dst_cap <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_gather: Hkv = %d, D = %d, n_idx = %d, src_cap = %d, dst_cap = %d "
                        "must be positive",
                        Hkv, D, n_idx, src_cap, dst_cap);
    if (row0 < 0 || (int64_t)row0 + n_idx > dst_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_gather: rows %d .. %lld do not fit a destination of %d rows per "
                        "head",
                        row0, (long long)row0 + n_idx - 1, dst_cap);
    if (dst == src)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: kv_gather: dst and src are the same buffer");
    TRY(cuda_ctx_enter(c));
    const size_t n = (size_t)Hkv * n_idx * D;
    if (kv_vec(D, dst, src) == 8) {
        kv_gather_kernel<8><<<kv_grid(c, n / 8), KV_THREADS, 0, c->stream>>>(
            (bf16 *)dst, (const bf16 *)src, idx, Hkv, D, n_idx, src_cap, dst_cap, row0, c->d_err);
        CUDA_LAUNCHED("kv_gather_kernel<8>");
    } else {
        kv_gather_kernel<1><<<kv_grid(c, n), KV_THREADS, 0, c->stream>>>(
            (bf16 *)dst, (const bf16 *)src, idx, Hkv, D, n_idx, src_cap, dst_cap, row0, c->d_err);
        CUDA_LAUNCHED("kv_gather_kernel<1>");
    }
    return SNP_OK;
}

// kv_scale: cache[h, row0 + t, :] *= factor, in fp32, rounded back to bf16.
// Geometry as kv_store; VEC = 8 moves 16 bytes per thread. Memory-bound: one read
// and one write of the rows.
template <int VEC>
__global__ void __launch_bounds__(KV_THREADS)
    kv_scale_kernel(bf16 *cache, int T, int Hkv, int D, int S_cap, int row0, float factor) {
    const int nv = D / VEC;
    const size_t n = (size_t)Hkv * T * nv;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(e % nv) * VEC;
        const size_t row = e / nv;
        const int t = (int)(row % T), h = (int)(row / T);
        bf16 *x = cache + ((size_t)h * S_cap + row0 + t) * D + d;
        if (VEC == 8) {
            uint4 u = *reinterpret_cast<uint4 *>(x);
            bf16 *v = reinterpret_cast<bf16 *>(&u);
#pragma unroll
            for (int i = 0; i < 8; i++) v[i] = __float2bfloat16(__bfloat162float(v[i]) * factor);
            *reinterpret_cast<uint4 *>(x) = u;
        } else {
            *x = __float2bfloat16(__bfloat162float(*x) * factor);
        }
    }
}

snp_status cuda_kv_scale(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                         float factor) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !cache)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: kv_scale: NULL %s", !c ? "ctx" : "cache");
    if (T <= 0 || Hkv <= 0 || D <= 0 || S_cap <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_scale: T = %d, Hkv = %d, D = %d, S_cap = %d must be positive", T,
                        Hkv, D, S_cap);
    if (row0 < 0 || (int64_t)row0 + T > S_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_scale: rows %d .. %lld do not fit a cache of %d rows per head",
                        row0, (long long)row0 + T - 1, S_cap);
    if (!isfinite(factor))
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: kv_scale: factor %g is not finite", (double)factor);
    TRY(cuda_ctx_enter(c));
    const size_t n = (size_t)Hkv * T * D;
    if (kv_vec(D, cache, cache) == 8) {
        kv_scale_kernel<8><<<kv_grid(c, n / 8), KV_THREADS, 0, c->stream>>>(
            (bf16 *)cache, T, Hkv, D, S_cap, row0, factor);
        CUDA_LAUNCHED("kv_scale_kernel<8>");
    } else {
        kv_scale_kernel<1><<<kv_grid(c, n), KV_THREADS, 0, c->stream>>>(
            (bf16 *)cache, T, Hkv, D, S_cap, row0, factor);
        CUDA_LAUNCHED("kv_scale_kernel<1>");
    }
    return SNP_OK;
}
