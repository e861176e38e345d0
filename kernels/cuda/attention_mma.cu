// attention_mma: causal GQA prefill attention on tensor cores, FlashAttention-2
// style (Dao, arXiv 2307.08691): bf16 mma.sync m16n8k16 with fp32 accumulators, an
// online softmax per query row held in registers, K/V tiles double-buffered through
// cp.async. Plain sm_80 instructions: it runs on sm_90 too, without wgmma/TMA.
// For D <= 128 the Q fragments live in registers for the whole kernel, so shared
// memory holds only the K/V stages (68 KiB at D = 128): two blocks fit an A100's
// 164 KiB per SM, where Q in shared memory (85 KiB, 87 KB) allowed one.
// Dual Chunk Attention (D 64 and 128) is the same kernel with the Q fragments of one
// rotation in registers, swapped when the keys' chunks ask for another (dca_qk).
#include "attention.h"

namespace {

constexpr int BR = CUDA_ATTN_MMA_BR; // query tokens per block, 16 per warp
constexpr int BC = CUDA_ATTN_MMA_BC; // keys per tile
constexpr int NWARPS = BR / 16;
constexpr int NTHREADS = NWARPS * 32;

// Shared memory rows are D + 8 bf16 apart: the 16-byte pad moves each row 4 banks
// over, so the 8 row addresses of an ldmatrix phase fall in 8 distinct bank quads.
// QREG: Q is staged once through the K/V stages' memory and then kept in registers
// (D/16 x 4 words per thread: 32 at D = 128; at D = 256 the 64 more would spill).
template <int D, int STAGES, bool QREG, bool DCA> size_t smem_bytes() {
    return sizeof(bf16) * (size_t)((QREG ? 0 : BR) + 2 * STAGES * BC) * (D + 8) +
           (DCA ? sizeof(int) * STAGES * BC : 0); // DCA: the stages' key positions
}

// Loads keys [k0, k0 + BC) of one KV head into a K and a V tile; keys at or past kb
// are zero-filled (their scores are masked; zero V keeps 0 * V finite).
template <int D>
__device__ __forceinline__ void load_kv_tile(bf16 *Kt, bf16 *Vt, const bf16 *kh, const bf16 *vh,
                                             int64_t k0, int64_t kb) {
    constexpr int CH = D / 8; // 16-byte chunks per row
    for (int e = threadIdx.x; e < BC * CH; e += NTHREADS) {
        const int r = e / CH, cc = e % CH;
        const int64_t j = k0 + r;
        const bool ok = j < kb;
        const size_t off = ok ? (size_t)j * D + cc * 8 : 0;
        cp_async16(Kt + r * (D + 8) + cc * 8, kh + off, ok ? 16 : 0);
        cp_async16(Vt + r * (D + 8) + cc * 8, vh + off, ok ? 16 : 0);
    }
}

// S += Q K^T for one 16-wide k-step kk: the warp's 16 rows (A fragments qa) against
// the tile's 64 keys, 8 n-tiles of 8 keys.
template <int D>
__device__ __forceinline__ void qk_step(float (&s)[BC / 8][4], const uint32_t (&qa)[4],
                                        const bf16 *Kt, int kk, int lane) {
#pragma unroll
    for (int np = 0; np < BC / 16; np++) {
        uint32_t kb4[4]; // keys 0-7 / 8-15 (lane bit 4) x d 0-7 / 8-15 (bit 3)
        ldmatrix_x4(kb4, Kt + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * (D + 8) + kk * 16 +
                             ((lane >> 3) & 1) * 8);
        mma_bf16_16816(s[2 * np], qa, kb4[0], kb4[1]);
        mma_bf16_16816(s[2 * np + 1], qa, kb4[2], kb4[3]);
    }
}

// dca_q_frag: the A fragment of k-step kk (ldmatrix_x4's layout: rows g, g + 8 x
// columns 2qd, 2qd + 8) read straight from global memory: qA, qB point at column
// 2qd of this thread's two rows of one rotation, NULL for a row past T (zeros).
// 4-byte loads, 16 contiguous bytes per row and k-step; only when a tile needs a
// rotation the registers do not hold, a handful of times per warp.
__device__ __forceinline__ void dca_q_frag(uint32_t (&qa)[4], const bf16 *qA, const bf16 *qB,
                                           int kk) {
    qa[0] = qA ? *reinterpret_cast<const uint32_t *>(qA + kk * 16) : 0u;
    qa[1] = qB ? *reinterpret_cast<const uint32_t *>(qB + kk * 16) : 0u;
    qa[2] = qA ? *reinterpret_cast<const uint32_t *>(qA + kk * 16 + 8) : 0u;
    qa[3] = qB ? *reinterpret_cast<const uint32_t *>(qB + kk * 16 + 8) : 0u;
}

// What dca_qk needs, copied out of the parameter block (dca_load_pos says why): the
// rotations and the position rule, the chunks of the warp's first and last row and
// of this thread's rows A and B (rows past T take row T - 1's), and where the
// thread's two rows start in each rotation.
struct dca_warp {
    const bf16 *q, *q_succ, *q_inter; // [T, H, D]
    int chunk_len, n_pos_rows, pos_offset;
    int qc_lo, qc_hi, qcA, qcB;
    int64_t offA, offB; // element offsets of (row, h, 2qd) in a [T, H, D] tensor; -1 past T
};

// The query tensor of rotation (part) p.
__device__ __forceinline__ const bf16 *dca_rotation(const dca_warp &w, int p) {
    return p == 0 ? w.q : p == 1 ? w.q_succ : w.q_inter;
}

// dca_qk: S = Q K^T for the warp's 16 rows and the tile's keys [k0, k0 + 64), each
// (row, key) pair scored with the rotation its chunks pick (dca_part). Positions
// ascend with the rows and dca_part is monotone, so the tile's corners bound the
// parts it needs: the warp's first row against the tile's last valid key (lowest
// part) and its last row against the first key (highest). One part: the plain
// product with the fragments in qf, reloaded first when they hold another
// rotation (q_part; parts only fall as keys advance, so a warp reloads at most
// three times). Several: one product per part, fragments from global memory, each
// element kept from the product of its own part. Several happen for the tiles
// that straddle the two chunk boundaries a warp's queries care about, and, for
// the one warp in chunk_len / 16 whose rows straddle a chunk boundary, for every
// tile of the two chunks below it.
template <int D>
__device__ __forceinline__ void dca_qk(float (&s)[BC / 8][4], uint32_t (&qf)[D / 16][4],
                                       int &q_part, const dca_warp &w, const bf16 *Kt,
                                       const int *Pt, int64_t k0, int64_t kb, int lane) {
    const int C = w.chunk_len, NP = w.n_pos_rows, PO = w.pos_offset;
    const int p_lo = dca_part(w.qc_lo, dca_pos(Pt, NP, PO, k0, min(k0 + BC, kb) - 1) / C);
    const int p_hi = dca_part(w.qc_hi, dca_pos(Pt, NP, PO, k0, k0) / C);
    if (p_lo == p_hi) {
        if (q_part != p_lo) {
            const bf16 *rot = dca_rotation(w, p_lo);
            const bf16 *qA = w.offA >= 0 ? rot + w.offA : nullptr;
            const bf16 *qB = w.offB >= 0 ? rot + w.offB : nullptr;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                dca_q_frag(qf[kk], qA, qB, kk);
            q_part = p_lo;
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            qk_step<D>(s, qf[kk], Kt, kk, lane);
        return;
    }
    const int qd = lane & 3;
    int kc[BC / 8][2]; // chunks of this thread's 16 key columns (past kb: masked later)
#pragma unroll
    for (int j = 0; j < BC / 8; j++)
#pragma unroll
        for (int b = 0; b < 2; b++) {
            const int64_t key = k0 + j * 8 + qd * 2 + b;
            kc[j][b] = key < kb ? dca_pos(Pt, NP, PO, k0, key) / C : w.qc_hi;
        }
    for (int p = p_lo; p <= p_hi; p++) {
        const bf16 *rot = dca_rotation(w, p);
        const bf16 *qA = w.offA >= 0 ? rot + w.offA : nullptr;
        const bf16 *qB = w.offB >= 0 ? rot + w.offB : nullptr;
        float sp[BC / 8][4];
#pragma unroll
        for (int j = 0; j < BC / 8; j++)
            sp[j][0] = sp[j][1] = sp[j][2] = sp[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t qa[4];
            dca_q_frag(qa, qA, qB, kk);
            qk_step<D>(sp, qa, Kt, kk, lane);
        }
#pragma unroll
        for (int j = 0; j < BC / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (dca_part(e < 2 ? w.qcA : w.qcB, kc[j][e & 1]) == p) s[j][e] = sp[j][e];
    }
}

// attn_mma_kernel: out[t, h, :] = softmax_j(q[t,h] . k[hk, j] * scale) v[hk, j, :]
// over keys j <= q_offset + t, j < n_keys, hk = h / G.
// q, out: [T, H, D] bf16; k, v: [Hkv, S_cap, D] bf16, 16-byte aligned (checked).
// grid (ceil(T / 64), H, n_split), block 128 (4 warps x 16 query rows); blockIdx.x
// is reversed so the tiles with the most keys start first. Block (x, h, z) covers
// keys [z * chunk, min((z + 1) * chunk, kend of its tile)); with n_split > 1 it
// writes (m, l, O) partials instead of out.
// Dynamic shared memory: K and V [STAGES][64][D+8] bf16, plus Q [64][D+8] unless
// QREG (68 KiB at D = 128, STAGES = 2 with QREG; 85 KiB without; opted in by the
// launcher). With QREG, Q passes through the first K stage before the first tile.
// Numerics: S = Q K^T accumulates in fp32; P = exp2(S' - m) is rounded to bf16 for
// P V (as FlashAttention); l sums the unrounded fp32 P. Rows that have seen no
// visible key keep m = -inf and use 0 as the exponent base (no -inf - -inf NaN).
// DCA (Dual Chunk Attention, backend.h's attn_dca; QREG only): Q never passes
// through shared memory; qf holds one rotation's fragments, loaded from global
// memory by dca_qk when a tile first needs it, and the tiles at a chunk boundary
// take one product per rotation (dca_qk). The tile's stored key positions ride
// with K/V ([STAGES][64] int32, +512 bytes). Cost: the plain kernel's, plus per
// warp up to three Q reloads and a few tiles with 2-3 Q K^T products (dca_qk).
template <int D, int STAGES, bool QREG, bool DCA>
__global__ void __launch_bounds__(NTHREADS)
    attn_mma_kernel(const attn_args a, const attn_dca_args dca) {
    constexpr int LDS = D + 8;
    constexpr int ND = D / 8; // 8-column output tiles per warp row block
    static_assert(!QREG || BR <= 2 * STAGES * BC, "Q's staging must fit in the K/V stages");
    static_assert(!DCA || QREG, "DCA keeps its Q fragments in registers");
    extern __shared__ __align__(16) unsigned char attn_mma_smem[];
    bf16 *Qs = reinterpret_cast<bf16 *>(attn_mma_smem);        // [BR][LDS]; QREG: aliases Ks
    bf16 *Ks = Qs + (QREG ? 0 : BR * LDS);                     // [STAGES][BC][LDS]
    bf16 *Vs = Ks + STAGES * BC * LDS;                         // [STAGES][BC][LDS]
    int *Ps = reinterpret_cast<int *>(Vs + STAGES * BC * LDS); // DCA: [STAGES][BC] positions

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, qd = lane & 3; // fragment row group and column pair
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, split = blockIdx.z;
    const int hk = h / a.G;
    const int t0 = qt * BR, nt = min(BR, a.T - t0);
    const int64_t kend = min((int64_t)a.n_keys, (int64_t)a.q_offset + t0 + nt);
    const int64_t ka = (int64_t)split * a.chunk, kb = min(ka + a.chunk, kend);
    const bf16 *kh = a.k + (size_t)hk * a.S_cap * D;
    const bf16 *vh = a.v + (size_t)hk * a.S_cap * D;

    // This thread's two rows: tokens rowA and rowA + 8, and the last key each sees.
    const int rowA = t0 + warp * 16 + g, rowB = rowA + 8;
    const int64_t limA = (int64_t)a.q_offset + rowA, limB = limA + 8;
    const int64_t lim_warp = (int64_t)a.q_offset + t0 + warp * 16; // the warp's first row

    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float mA = -INFINITY, mB = -INFINITY, lA = 0.0f, lB = 0.0f; // l: this thread's share

    // QREG: the warp's Q fragments for each 16-wide k-step kk (indexed only by
    // unrolled constants, so they stay in registers); unused otherwise.
    uint32_t qf[QREG ? D / 16 : 1][4];
#pragma unroll
    for (int kk = 0; kk < (QREG ? D / 16 : 1); kk++)
        qf[kk][0] = qf[kk][1] = qf[kk][2] = qf[kk][3] = 0u;

    // DCA: the rotation qf holds (-1: none yet), the warp's rows (dca_qk) and the KV
    // head's row of stored key positions.
    int q_part = -1;
    dca_warp dw = {};
    const int32_t *pos_h = nullptr;
    if constexpr (DCA) {
        dw.q = a.q;
        dw.q_succ = dca.q_succ;
        dw.q_inter = dca.q_inter;
        dw.chunk_len = dca.chunk_len;
        dw.n_pos_rows = dca.n_pos_rows;
        dw.pos_offset = dca.pos_offset;
        pos_h = dca.pos + (size_t)hk * dca.pos_cap;
        auto chunk_of = [&](int row) { // rows past T take row T - 1's chunk
            return (a.q_offset + min(row, a.T - 1) + dca.pos_offset) / dca.chunk_len;
        };
        dw.qc_lo = chunk_of(t0 + warp * 16);
        dw.qc_hi = chunk_of(t0 + warp * 16 + 15);
        dw.qcA = chunk_of(rowA);
        dw.qcB = chunk_of(rowB);
        dw.offA = rowA < a.T ? ((int64_t)rowA * a.H + h) * D + qd * 2 : -1;
        dw.offB = rowB < a.T ? ((int64_t)rowB * a.H + h) * D + qd * 2 : -1;
    }

    const int nblk = ka < kb ? (int)((kb - ka + BC - 1) / BC) : 0;
    if (DCA && nblk > 0) {
        load_kv_tile<D>(Ks, Vs, kh, vh, ka, kb);
        dca_load_pos(Ps, pos_h, dca.n_pos_rows, ka, BC);
        cp_async_commit(); // the first K/V tile and its positions
    } else if (nblk > 0) {
        for (int e = threadIdx.x; e < BR * (D / 8); e += NTHREADS) {
            const int r = e / (D / 8), cc = e % (D / 8);
            const bool ok = t0 + r < a.T;
            const size_t off = ok ? ((size_t)(t0 + r) * a.H + h) * D + cc * 8 : 0;
            cp_async16(Qs + r * LDS + cc * 8, a.q + off, ok ? 16 : 0);
        }
        if constexpr (QREG) {
            cp_async_commit(); // Q alone: it must leave the K stage before tile 0 lands
            cp_async_wait<0>();
            __syncthreads(); // every thread's cp.async writes of Q are visible
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                ldmatrix_x4(qf[kk], Qs + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS +
                                        kk * 16 + (lane >> 4) * 8);
            __syncthreads(); // every warp holds its Q before tile 0 overwrites Q's staging
            load_kv_tile<D>(Ks, Vs, kh, vh, ka, kb);
            cp_async_commit(); // the first K/V tile
        } else {
            load_kv_tile<D>(Ks, Vs, kh, vh, ka, kb);
            cp_async_commit(); // group 0: Q and the first K/V tile
        }
    }

    for (int blk = 0; blk < nblk; blk++) {
        const int64_t k0 = ka + (int64_t)blk * BC;
        const int st = STAGES == 2 ? (blk & 1) : 0;
        if (STAGES == 2) {
            if (blk + 1 < nblk) {
                load_kv_tile<D>(Ks + (st ^ 1) * BC * LDS, Vs + (st ^ 1) * BC * LDS, kh, vh, k0 + BC,
                                kb);
                if constexpr (DCA)
                    dca_load_pos(Ps + (st ^ 1) * BC, pos_h, dca.n_pos_rows, k0 + BC, BC);
            }
            cp_async_commit(); // possibly empty: keeps "all but the newest group" meaning tile blk
            cp_async_wait<1>();
        } else {
            if (blk > 0) {
                load_kv_tile<D>(Ks, Vs, kh, vh, k0, kb);
                if constexpr (DCA) dca_load_pos(Ps, pos_h, dca.n_pos_rows, k0, BC);
                cp_async_commit();
            }
            cp_async_wait<0>();
        }
        __syncthreads(); // every thread's cp.async writes of this tile (and Q) are visible
        const bf16 *Kt = Ks + st * BC * LDS, *Vt = Vs + st * BC * LDS;

        // S = Q K^T for the warp's 16 rows x 64 keys: 8 n-tiles of 8 keys.
        float s[BC / 8][4];
#pragma unroll
        for (int j = 0; j < BC / 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        if constexpr (DCA) {
            dca_qk<D>(s, qf, q_part, dw, Kt, Ps + st * BC, k0, kb, lane);
        } else {
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t qa[4]; // matrices: rows 0-7 / 8-15 (lane bit 3) x cols 0-7 / 8-15 (bit 4)
                if constexpr (QREG) {
                    qa[0] = qf[kk][0], qa[1] = qf[kk][1], qa[2] = qf[kk][2], qa[3] = qf[kk][3];
                } else {
                    ldmatrix_x4(qa, Qs + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS +
                                        kk * 16 + (lane >> 4) * 8);
                }
                qk_step<D>(s, qa, Kt, kk, lane);
            }
        }

        // Scale to base-2 units; mask only tiles that reach past the split's end or
        // past the warp's first row's causal limit.
        const bool masked = k0 + BC > kb || k0 + BC - 1 > lim_warp;
#pragma unroll
        for (int j = 0; j < BC / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[j][e] * a.scale_log2;
                if (masked) {
                    const int64_t key = k0 + j * 8 + qd * 2 + (e & 1);
                    if (key >= kb || key > (e < 2 ? limA : limB)) x = -INFINITY;
                }
                s[j][e] = x;
            }
        }

        // Online softmax: the 4 lanes of a quad share a row.
        float mxA = -INFINITY, mxB = -INFINITY;
#pragma unroll
        for (int j = 0; j < BC / 8; j++) {
            mxA = fmaxf(mxA, fmaxf(s[j][0], s[j][1]));
            mxB = fmaxf(mxB, fmaxf(s[j][2], s[j][3]));
        }
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
            mxA = fmaxf(mxA, __shfl_xor_sync(CUDA_FULL_MASK, mxA, off));
            mxB = fmaxf(mxB, __shfl_xor_sync(CUDA_FULL_MASK, mxB, off));
        }
        const float mnA = fmaxf(mA, mxA), mnB = fmaxf(mB, mxB);
        // -inf guard: a row with no visible key so far uses base 0; its p are 0.
        const float baseA = mnA == -INFINITY ? 0.0f : mnA;
        const float baseB = mnB == -INFINITY ? 0.0f : mnB;
        const float alphaA = exp2f(mA - baseA), alphaB = exp2f(mB - baseB); // 0 at first
        mA = mnA;
        mB = mnB;
        float sumA = 0.0f, sumB = 0.0f;
#pragma unroll
        for (int j = 0; j < BC / 8; j++) {
            s[j][0] = exp2f(s[j][0] - baseA);
            s[j][1] = exp2f(s[j][1] - baseA);
            s[j][2] = exp2f(s[j][2] - baseB);
            s[j][3] = exp2f(s[j][3] - baseB);
            sumA += s[j][0] + s[j][1];
            sumB += s[j][2] + s[j][3];
        }
        lA = lA * alphaA + sumA;
        lB = lB * alphaB + sumB;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            o[i][0] *= alphaA;
            o[i][1] *= alphaA;
            o[i][2] *= alphaB;
            o[i][3] *= alphaB;
        }

        // O += P V. The accumulator layout of S (rows g, g+8; key pairs 2q) is the A
        // operand layout of the next mma, so P goes from registers to the tensor
        // cores without shared memory: k-step ks covers keys 16 ks .. 16 ks + 15.
#pragma unroll
        for (int ks = 0; ks < BC / 16; ks++) {
            uint32_t pa[4];
            pa[0] = pack_bf16x2(s[2 * ks][0], s[2 * ks][1]);
            pa[1] = pack_bf16x2(s[2 * ks][2], s[2 * ks][3]);
            pa[2] = pack_bf16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
            pa[3] = pack_bf16x2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t vb[4]; // keys 0-7 / 8-15 (lane bit 3) x d 0-7 / 8-15 (bit 4), transposed
                ldmatrix_x4_trans(vb, Vt + (ks * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS +
                                          dp * 16 + (lane >> 4) * 8);
                mma_bf16_16816(o[2 * dp], pa, vb[0], vb[1]);
                mma_bf16_16816(o[2 * dp + 1], pa, vb[2], vb[3]);
            }
        }
        __syncthreads(); // all warps are done with this tile before it is refilled
    }

    // The quad's shares of l make the row's l (alpha was uniform across the quad).
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
        lA += __shfl_xor_sync(CUDA_FULL_MASK, lA, off);
        lB += __shfl_xor_sync(CUDA_FULL_MASK, lB, off);
    }
    if (a.n_split == 1) {
        const float invA = lA > 0.0f ? 1.0f / lA : 0.0f, invB = lB > 0.0f ? 1.0f / lB : 0.0f;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            const int d = i * 8 + qd * 2;
            if (rowA < a.T)
                *reinterpret_cast<uint32_t *>(a.out + ((size_t)rowA * a.H + h) * D + d) =
                    pack_bf16x2(o[i][0] * invA, o[i][1] * invA);
            if (rowB < a.T)
                *reinterpret_cast<uint32_t *>(a.out + ((size_t)rowB * a.H + h) * D + d) =
                    pack_bf16x2(o[i][2] * invB, o[i][3] * invB);
        }
    } else {
        const size_t prA = ((size_t)split * a.T + rowA) * a.H + h;
        const size_t prB = ((size_t)split * a.T + rowB) * a.H + h;
        if (qd == 0 && rowA < a.T) a.part_ml[prA] = make_float2(mA, lA);
        if (qd == 0 && rowB < a.T) a.part_ml[prB] = make_float2(mB, lB);
#pragma unroll
        for (int i = 0; i < ND; i++) {
            const int d = i * 8 + qd * 2;
            if (rowA < a.T)
                *reinterpret_cast<float2 *>(a.part_o + prA * D + d) = make_float2(o[i][0], o[i][1]);
            if (rowB < a.T)
                *reinterpret_cast<float2 *>(a.part_o + prB * D + d) = make_float2(o[i][2], o[i][3]);
        }
    }
}

template <int D, int STAGES, bool QREG, bool DCA = false>
snp_status launch(cuda_ctx *c, const attn_args *a, const attn_dca_args *d,
                  const cuda_attn_plan *p) {
    const size_t smem = smem_bytes<D, STAGES, QREG, DCA>();
    TRY(cuda_shared_optin(c, (const void *)attn_mma_kernel<D, STAGES, QREG, DCA>, smem,
                          DCA ? "attention (mma, DCA)" : "attention (mma)"));
    const dim3 grid((unsigned)p->grid_x, (unsigned)p->grid_y, (unsigned)p->n_split);
    attn_mma_kernel<D, STAGES, QREG, DCA><<<grid, NTHREADS, smem, c->stream>>>(*a, *d);
    CUDA_LAUNCHED(DCA    ? "attn_mma_kernel (DCA)"
                  : QREG ? "attn_mma_kernel (Q in registers)"
                         : "attn_mma_kernel (Q in shared)");
    return SNP_OK;
}

} // namespace

snp_status attn_launch_mma(cuda_ctx *c, const attn_args *a, const attn_dca_args *d,
                           const cuda_attn_plan *p) {
    if (d->chunk_len > 0) { // DCA: Q in registers only (SNAPTP_CUDA_ATTENTION=qsmem ignored)
        switch (a->D) {
        case 64:
            return launch<64, 2, true, true>(c, a, d, p);
        case 128:
            return launch<128, 2, true, true>(c, a, d, p);
        default: // the plan gives D = 256 to the row kernel
            return snp_fail(SNP_ERR_INTERNAL, "cuda: attention (mma, DCA): no kernel for D = %d",
                            a->D);
        }
    }
    // SNAPTP_CUDA_ATTENTION=qsmem keeps Q in shared memory (the layout before Q moved
    // to registers): a fallback, and a second variant for test_cuda_ops to compare.
    const bool qreg = !c->attn_q_smem;
    switch (a->D) {
    case 64:
        return qreg ? launch<64, 2, true>(c, a, d, p) : launch<64, 2, false>(c, a, d, p);
    case 128:
        return qreg ? launch<128, 2, true>(c, a, d, p) : launch<128, 2, false>(c, a, d, p);
    case 256: // 2 stages would need 165 KiB, over sm_80's 163 KiB per block
        return launch<256, 1, false>(c, a, d, p);
    default:
        return snp_fail(SNP_ERR_INTERNAL, "cuda: attention (mma): no kernel for D = %d", a->D);
    }
}
