// snapkv_votes: SnapKV's scoring (../shared/SNAPKV.md steps 2-5) in fp32: the
// window queries' softmax over all L keys in two passes (row max and sum, split
// over keys and merged; then the probabilities of prefix keys summed over the
// window), and their Dual Chunk Attention variant (each window query meets each key
// with the rotation their chunks pick). Pooling and selection are snapkv_pool.cu
// and snapkv_select.cu.
#include <math.h>

#include "cuda_device.h"
#include "cuda_internal.h"

namespace {

constexpr int BK = CUDA_SNAPKV_BK; // keys per tile
constexpr int BR = CUDA_SNAPKV_BR; // window rows per chunk
constexpr int NTHREADS = 256;      // 16 rows x 16 lanes, each lane 4 keys
constexpr int KPL = BK / 16;       // keys per lane

struct votes_args {
    const bf16 *q_win;              // [w, H, D]
    const bf16 *k;                  // [Hkv, S_cap, D]
    int H, G, D, S_cap, L, w, P, R; // R = G * w rows per KV head, row = g * w + i
    float scale;
    // Dual Chunk Attention (snapkv_shape.dca): the window's other two rotations, laid
    // out as q_win, and the chunk length; key row j is position j. Read only by the
    // DCA instantiations.
    const bf16 *q_succ, *q_inter;
    int chunk_len;
};

// Shared memory of both passes: K tile [BK][D+1] fp32 (odd row stride: the 16
// lanes of a row read 16 keys in 16 banks), Q chunk [NQ][BR][D] fp32 (NQ = 3 under
// DCA: a chunk of each rotation), then `extra`.
size_t smem_bytes(int D, size_t extra, bool dca) {
    return sizeof(float) * ((size_t)BK * (D + 1) + (size_t)(dca ? 3 : 1) * BR * D) + extra;
}

// Keys [k0, k0 + BK) of KV head hk as fp32; keys at or past kend are zero.
__device__ void load_k_tile(float *Ks, const votes_args &a, int hk, int64_t k0, int64_t kend) {
    const bf16 *kh = a.k + (size_t)hk * a.S_cap * a.D;
    for (int e = threadIdx.x; e < BK * a.D; e += NTHREADS) {
        const int j = e / a.D, d = e % a.D;
        const int64_t key = k0 + j;
        Ks[j * (a.D + 1) + d] = key < kend ? __bfloat162float(kh[(size_t)key * a.D + d]) : 0.0f;
    }
}

// Rows [r0, r0 + BR) of KV head hk's window rows (row g * w + i is query head
// hk * G + g at window position i) of q (q_win, or under DCA one of its rotations)
// as fp32; rows at or past r_end are zero.
__device__ void load_q_chunk(float *Qs, const votes_args &a, const bf16 *q, int hk, int r0,
                             int r_end) {
    for (int e = threadIdx.x; e < BR * a.D; e += NTHREADS) {
        const int rr = e / a.D, d = e % a.D, row = r0 + rr;
        float v = 0.0f;
        if (row < r_end) {
            const int g = row / a.w, i = row % a.w;
            v = __bfloat162float(q[((size_t)i * a.H + hk * a.G + g) * a.D + d]);
        }
        Qs[rr * a.D + d] = v;
    }
}

// acc[u] = q[row] . k[lane16 + 16 u] for the thread's row (threadIdx / 16) of the
// chunk and its 4 keys of the tile, fp32.
__device__ __forceinline__ void score_tile(const float *Qs, const float *Ks, int D,
                                           float acc[KPL]) {
    const int rr = threadIdx.x >> 4, c = threadIdx.x & 15;
#pragma unroll
    for (int u = 0; u < KPL; u++)
        acc[u] = 0.0f;
    const float *qr = Qs + rr * D;
    for (int d = 0; d < D; d++) {
        const float qv = qr[d];
#pragma unroll
        for (int u = 0; u < KPL; u++)
            acc[u] += qv * Ks[(c + 16 * u) * (D + 1) + d];
    }
}

// DCA: the rotations keys [k0, k_end) meet across the whole window, [p_lo, p_hi].
// Window rows are positions P .. L-1 and key j is position j; dca_part is monotone,
// so the corners bound the range: the first window row against the last key gives
// the lowest part, the last row against the first key the highest. Block-uniform.
// One part for every tile but those at the two chunk boundaries below the window,
// and, if the window itself straddles a boundary, those of the two chunks below it.
__device__ __forceinline__ void dca_tile_parts(const votes_args &a, int64_t k0, int64_t k_end,
                                               int &p_lo, int &p_hi) {
    const int C = a.chunk_len;
    p_lo = dca_part(a.P / C, (int)(min(k0 + BK, k_end) - 1) / C);
    p_hi = dca_part((a.L - 1) / C, (int)k0 / C);
}

// DCA: the Q chunk of rows [r0, r0 + BR) for each rotation p in [p_lo, p_hi], at
// Qs + p * BR * D (rotation 0 is q_win).
__device__ __forceinline__ void dca_load_q_chunks(float *Qs, const votes_args &a, int p_lo,
                                                  int p_hi, int hk, int r0, int r_end) {
    for (int p = p_lo; p <= p_hi; p++)
        load_q_chunk(Qs + p * BR * a.D, a,
                     p == 0   ? a.q_win
                     : p == 1 ? a.q_succ
                              : a.q_inter,
                     hk, r0, r_end);
}

// DCA: score_tile with each (row, key) pair met by its own rotation: the thread's row
// is window position i, its keys k0 + lane16 + 16 u. One part: score_tile on that
// rotation's chunk. Several: score_tile per part, each score kept from its own
// part's product (keys at or past k_end, masked by the caller, score 0).
__device__ __forceinline__ void dca_score_tile(const float *Qs, const float *Ks,
                                               const votes_args &a, int p_lo, int p_hi, int i,
                                               int64_t k0, int64_t k_end, float acc[KPL]) {
    if (p_lo == p_hi) {
        score_tile(Qs + p_lo * BR * a.D, Ks, a.D, acc);
        return;
    }
    const int C = a.chunk_len, qc = (a.P + i) / C, c = threadIdx.x & 15;
#pragma unroll
    for (int u = 0; u < KPL; u++)
        acc[u] = 0.0f;
    for (int p = p_lo; p <= p_hi; p++) {
        float t[KPL];
        score_tile(Qs + p * BR * a.D, Ks, a.D, t);
#pragma unroll
        for (int u = 0; u < KPL; u++) {
            const int64_t key = k0 + c + 16 * u;
            if (key < k_end && dca_part(qc, (int)key / C) == p) acc[u] = t[u];
        }
    }
}

// snapkv_stats_kernel: pass 1, per window row (h, i): m = max_j s_ij and
// l = sum_j exp(s_ij - m) over the keys j in [z * chunk, (z + 1) * chunk) ∩ [0, L)
// that row i sees (prefix keys, and window key P + j' for j' <= i), with
// s = q . k * scale in fp32 (natural units, as the CPU reference).
// part: [n_split][H * w] float2 (m, l); m = -inf, l = 0 when the row saw nothing.
// grid (n_split, Hkv), block 256. Rows are owned by 16-lane groups; their running
// (m, l) live in shared memory across key tiles.
// DCA: the Q chunk of every rotation a tile needs (dca_tile_parts), and each score
// from its own rotation (dca_score_tile); one rotation per tile but at most a few,
// so the cost is the plain pass's.
template <bool DCA>
__global__ void __launch_bounds__(NTHREADS)
    snapkv_stats_kernel(const votes_args a, int64_t chunk, float2 *part) {
    extern __shared__ __align__(16) float sk_smem[];
    float *Ks = sk_smem, *Qs = Ks + BK * (a.D + 1);
    float *sm = Qs + (DCA ? 3 : 1) * BR * a.D, *sl = sm + a.R; // [R] running m and l
    const int hk = blockIdx.y, split = blockIdx.x;
    const int64_t ka = (int64_t)split * chunk, kb = min(ka + chunk, (int64_t)a.L);
    const int c = threadIdx.x & 15;
    for (int r = threadIdx.x; r < a.R; r += NTHREADS) {
        sm[r] = -INFINITY;
        sl[r] = 0.0f;
    }
    for (int64_t k0 = ka; k0 < kb; k0 += BK) {
        __syncthreads(); // the previous tile's readers of Ks (and Qs) are done
        load_k_tile(Ks, a, hk, k0, kb);
        int p_lo = 0, p_hi = 0;
        if constexpr (DCA) dca_tile_parts(a, k0, kb, p_lo, p_hi);
        for (int r0 = 0; r0 < a.R; r0 += BR) {
            __syncthreads(); // the previous chunk's readers of Qs are done; Ks is complete
            if constexpr (DCA)
                dca_load_q_chunks(Qs, a, p_lo, p_hi, hk, r0, a.R);
            else
                load_q_chunk(Qs, a, a.q_win, hk, r0, a.R);
            __syncthreads(); // Qs is complete
            float acc[KPL];
            if constexpr (DCA)
                dca_score_tile(Qs, Ks, a, p_lo, p_hi, (r0 + (threadIdx.x >> 4)) % a.w, k0, kb, acc);
            else
                score_tile(Qs, Ks, a.D, acc);
            const int row = r0 + (threadIdx.x >> 4);
            const int i = row % a.w; // window position (row < R; checked below)
            float mx = -INFINITY;
#pragma unroll
            for (int u = 0; u < KPL; u++) {
                const int64_t key = k0 + c + 16 * u;
                const bool seen = row < a.R && key < kb && key <= (int64_t)a.P + i;
                acc[u] = seen ? acc[u] * a.scale : -INFINITY;
                mx = fmaxf(mx, acc[u]);
            }
            // The 16 lanes of a row are one half-warp: xor offsets below 16 stay in it.
#pragma unroll
            for (int off = 8; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(CUDA_FULL_MASK, mx, off));
            const float m_old = row < a.R ? sm[row] : -INFINITY;
            const float m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            if (m_new != -INFINITY) { // -inf guard: nothing seen yet, nothing to add
#pragma unroll
                for (int u = 0; u < KPL; u++)
                    sum += expf(acc[u] - m_new);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1)
                sum += __shfl_xor_sync(CUDA_FULL_MASK, sum, off);
            __syncwarp(); // every lane of the row has read sm[row] before lane 0 rewrites it
            if (c == 0 && row < a.R && m_new != -INFINITY) {
                sl[row] = sl[row] * expf(m_old - m_new) + sum;
                sm[row] = m_new;
            }
        }
    }
    __syncthreads(); // the last chunk's updates of sm, sl are visible
    for (int r = threadIdx.x; r < a.R; r += NTHREADS) {
        const int g = r / a.w, i = r % a.w;
        part[(size_t)split * a.H * a.w + (size_t)(hk * a.G + g) * a.w + i] =
            make_float2(sm[r], sl[r]);
    }
}

// snapkv_stats_merge_kernel: stats[r] = (m, 1 / l) of row r from its n_split
// partials: m = max m_z, l = sum l_z exp(m_z - m). Every row sees key 0, so m is
// finite and l >= 1. grid (ceil(H w / 256)), block 256.
__global__ void __launch_bounds__(256)
    snapkv_stats_merge_kernel(float2 *stats, const float2 *part, int n_rows, int n_split) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n_rows) return;
    float m = -INFINITY;
    for (int z = 0; z < n_split; z++)
        m = fmaxf(m, part[(size_t)z * n_rows + r].x);
    float l = 0.0f;
    for (int z = 0; z < n_split; z++) {
        const float2 ml = part[(size_t)z * n_rows + r];
        if (ml.y > 0.0f) l += ml.y * expf(ml.x - m);
    }
    stats[r] = make_float2(m, 1.0f / l);
}

// snapkv_vote_kernel: pass 2, votes[h, p] = sum_i exp(s_ip - m_hi) / l_hi over the
// window rows i, for the prefix keys p of one tile (every window row sees every
// prefix key: no mask). The sum over i runs in a fixed order (chunks of 16 rows,
// then rows in order), so votes are bitwise reproducible: ties in selection
// depend on it.
// votes: [H, P] fp32; stats: [H * w] (m, 1 / l). grid (ceil(P / 64), Hkv), block 256.
// Shared memory: K tile, Q chunk, probability tile [16][65] fp32.
// DCA: as snapkv_stats_kernel, so the scores are pass 1's to the bit.
template <bool DCA>
__global__ void __launch_bounds__(NTHREADS)
    snapkv_vote_kernel(const votes_args a, const float2 *stats, float *votes) {
    extern __shared__ __align__(16) float sv_smem[];
    float *Ks = sv_smem, *Qs = Ks + BK * (a.D + 1);
    float *Pt = Qs + (DCA ? 3 : 1) * BR * a.D; // [BR][BK + 1]
    const int hk = blockIdx.y;
    const int64_t k0 = (int64_t)blockIdx.x * BK;
    const int c = threadIdx.x & 15, rr = threadIdx.x >> 4;
    load_k_tile(Ks, a, hk, k0, a.P);
    int p_lo = 0, p_hi = 0;
    if constexpr (DCA) dca_tile_parts(a, k0, a.P, p_lo, p_hi);
    for (int g = 0; g < a.G; g++) {
        const int h = hk * a.G + g;
        float vote = 0.0f; // threads < BK: key k0 + threadIdx.x
        for (int i0 = 0; i0 < a.w; i0 += BR) {
            __syncthreads(); // Ks is complete; the previous readers of Qs and Pt are done
            if constexpr (DCA)
                dca_load_q_chunks(Qs, a, p_lo, p_hi, hk, g * a.w + i0, g * a.w + a.w);
            else
                load_q_chunk(Qs, a, a.q_win, hk, g * a.w + i0, g * a.w + a.w);
            __syncthreads(); // Qs is complete
            float acc[KPL];
            if constexpr (DCA)
                dca_score_tile(Qs, Ks, a, p_lo, p_hi, i0 + rr, k0, a.P, acc);
            else
                score_tile(Qs, Ks, a.D, acc);
            const int i = i0 + rr;
            float2 st = make_float2(0.0f, 0.0f);
            if (i < a.w) st = stats[(size_t)h * a.w + i];
#pragma unroll
            for (int u = 0; u < KPL; u++)
                Pt[rr * (BK + 1) + c + 16 * u] =
                    i < a.w ? expf(acc[u] * a.scale - st.x) * st.y : 0.0f;
            __syncthreads(); // the probability tile is complete
            if (threadIdx.x < BK)
                for (int r = 0; r < BR; r++)
                    vote += Pt[r * (BK + 1) + threadIdx.x];
        }
        if (threadIdx.x < BK && k0 + threadIdx.x < a.P)
            votes[(size_t)h * a.P + k0 + threadIdx.x] = vote;
    }
}

} // namespace

snp_status cuda_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                             const snapkv_shape *s) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !votes || !q_win || !k)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: snapkv_votes: NULL %s",
                        !c       ? "ctx"
                        : !votes ? "votes"
                        : !q_win ? "q_win"
                                 : "k");
    TRY(cuda_snapkv_check(s, "snapkv_votes", 0));
    TRY(cuda_ctx_enter(c));
    cuda_snapkv_plan p;
    cuda_snapkv_plan_make(s, c->n_sm, &p);
    votes_args a;
    a.q_win = (const bf16 *)q_win;
    a.k = (const bf16 *)k;
    a.H = s->H;
    a.G = p.G;
    a.D = s->D;
    a.S_cap = s->S_cap;
    a.L = s->L;
    a.w = s->w;
    a.P = p.P;
    a.R = p.R;
    a.scale = s->scale;
    a.q_succ = s->dca ? (const bf16 *)s->dca->q_succ : nullptr;
    a.q_inter = s->dca ? (const bf16 *)s->dca->q_inter : nullptr;
    a.chunk_len = s->dca ? s->dca->chunk_len : 0;
    const bool dca = s->dca != nullptr;

    void *ws = NULL;
    TRY(cuda_workspace(c, p.ws_bytes, &ws));
    const int n_rows = s->H * s->w;
    float2 *part = (float2 *)ws, *stats = part + (size_t)p.n_split * n_rows;

    const size_t smem1 = smem_bytes(s->D, sizeof(float) * 2 * (size_t)p.R, dca);
    const void *k1 =
        dca ? (const void *)snapkv_stats_kernel<true> : (const void *)snapkv_stats_kernel<false>;
    TRY(cuda_shared_optin(c, k1, smem1, "snapkv_votes (pass 1)"));
    const dim3 grid1((unsigned)p.n_split, (unsigned)s->Hkv);
    if (dca)
        snapkv_stats_kernel<true><<<grid1, NTHREADS, smem1, c->stream>>>(a, p.chunk, part);
    else
        snapkv_stats_kernel<false><<<grid1, NTHREADS, smem1, c->stream>>>(a, p.chunk, part);
    CUDA_LAUNCHED(dca ? "snapkv_stats_kernel (DCA)" : "snapkv_stats_kernel");

    snapkv_stats_merge_kernel<<<(n_rows + 255) / 256, 256, 0, c->stream>>>(stats, part, n_rows,
                                                                           p.n_split);
    CUDA_LAUNCHED("snapkv_stats_merge_kernel");

    const size_t smem2 = smem_bytes(s->D, sizeof(float) * BR * (BK + 1), dca);
    const void *k2 =
        dca ? (const void *)snapkv_vote_kernel<true> : (const void *)snapkv_vote_kernel<false>;
    TRY(cuda_shared_optin(c, k2, smem2, "snapkv_votes (pass 2)"));
    const dim3 grid2((unsigned)((p.P + BK - 1) / BK), (unsigned)s->Hkv);
    if (dca)
        snapkv_vote_kernel<true><<<grid2, NTHREADS, smem2, c->stream>>>(a, stats, votes);
    else
        snapkv_vote_kernel<false><<<grid2, NTHREADS, smem2, c->stream>>>(a, stats, votes);
    CUDA_LAUNCHED(dca ? "snapkv_vote_kernel (DCA)" : "snapkv_vote_kernel");
    return SNP_OK;
}
