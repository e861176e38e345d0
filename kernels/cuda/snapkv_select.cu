// snapkv_select: SnapKV step 8 (../shared/SNAPKV.md): per KV head, the C - w prefix
// positions of highest pooled vote (ties to the lower position) in ascending
// order, then the window. A radix select plus an order-keeping compaction: no sort.
//
// Why not CUB's segmented radix sort over (vote desc, position asc): P reaches 10^6
// per head and only C - w (~2000) survive; a full sort moves every key 4-8 times
// and needs a second sort to restore position order. The select reads the votes
// 5 times, writes only the survivors, and gives position order for free.
#include <cub/block/block_scan.cuh>

#include "cuda_device.h"
#include "cuda_internal.h"

namespace {

constexpr int NTHREADS = 512; // 1024 would cap registers at 64 and spill (ptxas, sm_90)
constexpr int ITEMS = 4;      // consecutive positions per thread in the compaction

// An order-preserving map of fp32 onto uint32: a > b iff key(a) > key(b). -0 is
// folded onto +0 (so they tie, as equal votes must); NaN maps to 0, below every
// number (a NaN vote is never preferred).
__device__ __forceinline__ uint32_t vote_key(float f) {
    if (f != f) return 0u;
    if (f == 0.0f) f = 0.0f;
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// snapkv_select_kernel: idx[hk, 0 .. K-1] = the K = C - w positions p < P with the
// largest (key(pooled[hk, p]), -p), ascending; idx[hk, K + i] = P + i for i < w.
// pooled: [Hkv, P] fp32; idx: [Hkv, C] int32. grid (Hkv), block 512: one head
// per block (a single pass of 10^6 floats is ~4 MB; Hkv per rank is small).
// 1. Radix select, most significant byte first: 4 histogram passes narrow the
//    threshold key thr and n_eq, how many positions with key == thr are kept
//    (the lowest ones, the tie rule); every key > thr is kept.
// 2. Compaction in position order with a block-wide exclusive scan of the
//    (kept-greater, equal) counts: a kept position's slot is the number of kept
//    positions before it, so the output is ascending without sorting.
__global__ void __launch_bounds__(NTHREADS)
    snapkv_select_kernel(int32_t *idx, const float *pooled, int P, int K, int w, int C) {
    typedef cub::BlockScan<unsigned long long, NTHREADS> scan_t;
    __shared__ typename scan_t::TempStorage scan_tmp;
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need;
    const float *v = pooled + (size_t)blockIdx.x * P;
    int32_t *out = idx + (size_t)blockIdx.x * C;

    uint32_t prefix = 0, mask = 0;
    int need = K; // how many of the keys matching prefix under mask are still to keep
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += NTHREADS)
            hist[b] = 0;
        __syncthreads(); // hist is zero (and s_prefix, s_need read) before counting
        for (int p = threadIdx.x; p < P; p += NTHREADS) {
            const uint32_t key = vote_key(v[p]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads(); // hist is complete before thread 0 scans it
        if (threadIdx.x == 0) {
            // The digit where the count from the top reaches `need`.
            int above = 0, d = 255;
            for (; d > 0; d--) {
                if (above + (int)hist[d] >= need) break;
                above += (int)hist[d];
            }
            s_prefix = prefix | ((uint32_t)d << shift);
            s_need = need - above;
        }
        __syncthreads(); // s_prefix, s_need are written before every thread reads them
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
    }
    const uint32_t thr = prefix;
    const int n_eq = need; // keys == thr to keep; K - n_eq keys are > thr

    unsigned long long base = 0; // kept-greater count (low 32 bits), equal count (high)
    for (int p0 = 0; p0 < P; p0 += NTHREADS * ITEMS) {
        uint32_t key[ITEMS];
        unsigned n_gt = 0, n_e = 0;
#pragma unroll
        for (int u = 0; u < ITEMS; u++) {
            const int p = p0 + threadIdx.x * ITEMS + u;
            key[u] = p < P ? vote_key(v[p]) : 0u;
            const bool in = p < P;
            n_gt += in && key[u] > thr;
            n_e += in && key[u] == thr;
        }
        unsigned long long before, total;
        // Both counts are below 2^31, so the packed sum never carries across halves.
        scan_t(scan_tmp).ExclusiveSum(((unsigned long long)n_e << 32) | n_gt, before, total);
        before += base;
        unsigned gt = (unsigned)(before & 0xffffffffu), eq = (unsigned)(before >> 32);
#pragma unroll
        for (int u = 0; u < ITEMS; u++) {
            const int p = p0 + threadIdx.x * ITEMS + u;
            if (p >= P) break;
            if (key[u] > thr) {
                out[gt + min(eq, (unsigned)n_eq)] = p;
                gt++;
            } else if (key[u] == thr) {
                if (eq < (unsigned)n_eq) out[gt + eq] = p;
                eq++;
            }
        }
        base += total;
        __syncthreads(); // scan_tmp is free before the next tile's scan reuses it
    }
    for (int i = threadIdx.x; i < w; i += NTHREADS)
        out[K + i] = P + i;
}

} // namespace

snp_status cuda_snapkv_select(void *ctx, int32_t *idx, const float *pooled, const snapkv_shape *s) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !idx || !pooled)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: snapkv_select: NULL %s",
                        !c     ? "ctx"
                        : !idx ? "idx"
                               : "pooled");
    TRY(cuda_snapkv_check(s, "snapkv_select", 2));
    TRY(cuda_ctx_enter(c));
    const int P = s->L - s->w, K = s->budget - s->w;
    snapkv_select_kernel<<<s->Hkv, NTHREADS, 0, c->stream>>>(idx, pooled, P, K, s->w, s->budget);
    CUDA_LAUNCHED("snapkv_select_kernel");
    return SNP_OK;
}
