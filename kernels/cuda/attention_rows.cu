// attention_rows: causal GQA attention in fp32 SIMT, one warp per query row, the
// block's rows sharing each K/V tile: the decode kernel (few rows, many keys,
// split across blocks: flash-decoding) and the fallback for head dims the
// tensor-core kernel lacks (any D % 8 == 0 up to 256). Its DCA instantiation is
// Dual Chunk Attention's decode kernel and its fallback for every T and D.
#include "attention.h"

namespace {

constexpr int NW = CUDA_ATTN_ROWS_NW; // warps = query rows per block
constexpr int BC = CUDA_ATTN_ROWS_BC; // keys per tile, one per lane
constexpr int NTHREADS = NW * 32;
constexpr int MAX_DL = CUDA_ATTN_MAX_D / 32; // output dims per lane

// Per warp, NQ query vectors QLD floats apart: plain attention has one (QLD = D);
// DCA has the row's three rotations, padded by 4 floats so that lanes reading
// different rotations at the same d hit distinct banks (D + 4 and 2 (D + 4) are
// 4 to 28 banks apart for any D % 8 == 0).
size_t smem_bytes(int D, bool dca) {
    const size_t q_floats = dca ? (size_t)NW * 3 * (D + 4) : (size_t)NW * D;
    const size_t pos_ints = dca ? 2 * (size_t)BC : 0; // the two stages' key positions
    return sizeof(float) * q_floats + sizeof(bf16) * 2 * 2 * (size_t)BC * (D + 8) +
           sizeof(int) * pos_ints;
}

// Keys [k0, k0 + BC) of one KV head into K and V tiles (rows D + 8 apart); keys at
// or past kb are zero-filled.
__device__ __forceinline__ void load_kv_tile(bf16 *Kt, bf16 *Vt, const bf16 *kh, const bf16 *vh,
                                             int D, int64_t k0, int64_t kb) {
    const int ch = D / 8;
    for (int e = threadIdx.x; e < BC * ch; e += NTHREADS) {
        const int r = e / ch, cc = e % ch;
        const int64_t j = k0 + r;
        const bool ok = j < kb;
        const size_t off = ok ? (size_t)j * D + cc * 8 : 0;
        cp_async16(Kt + r * (D + 8) + cc * 8, kh + off, ok ? 16 : 0);
        cp_async16(Vt + r * (D + 8) + cc * 8, vh + off, ok ? 16 : 0);
    }
}

// attn_rows_kernel: as attn_mma_kernel (attention.h's arguments, the same causal
// rule and split semantics), organized by KV group: row r of KV head hk is token
// r / G, query head hk * G + r % G, so the G heads that share K/V share its tiles.
// grid (ceil(T * G / 4), Hkv, n_split), block 128; warp w takes row 4 x + w.
// Per 32-key tile, lane j scores key j (a full D-long dot against the row's query
// in shared memory), the warp runs the online softmax, then each lane accumulates
// output dims lane, lane + 32, ... over the tile's keys.
// Dynamic shared memory: q [4][D] fp32 (pre-scaled), K and V [2][32][D+8] bf16
// (70 KiB at D = 256, opted in).
// DCA (Dual Chunk Attention, backend.h's attn_dca): each warp holds its row's three
// rotations (q, q_succ, q_inter: [4][3][D+4] fp32), and the tile's stored key
// positions ride with K/V ([2][32] int32, cp.async); lane j scores key j with the
// rotation that the chunks of the row's and the key's positions pick (dca_part).
// The same loads, the same FMAs per key, one integer division per key: about the
// plain kernel's cost (78 KiB at D = 256).
// Numerics: all fp32 (bf16 inputs); base-2 scores; -inf guard as attn_mma_kernel.
template <bool DCA>
__global__ void __launch_bounds__(NTHREADS)
    attn_rows_kernel(const attn_args a, const attn_dca_args dca) {
    extern __shared__ __align__(16) unsigned char attn_rows_smem[];
    constexpr int NQ = DCA ? 3 : 1;
    const int D = a.D, LDS = D + 8, QLD = DCA ? D + 4 : D;
    float *qs = reinterpret_cast<float *>(attn_rows_smem);   // [NW][NQ][QLD]
    bf16 *Ks = reinterpret_cast<bf16 *>(qs + NW * NQ * QLD); // [2][BC][LDS]
    bf16 *Vs = Ks + 2 * BC * LDS;                            // [2][BC][LDS]
    int *Ps = reinterpret_cast<int *>(Vs + 2 * BC * LDS);    // DCA: [2][BC] key positions
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int hk = blockIdx.y, split = blockIdx.z;
    const int R = a.T * a.G;
    const int r = blockIdx.x * NW + warp;
    const bool row_ok = r < R;
    const int t = r / a.G, h = hk * a.G + r % a.G;
    const int r_last = min(R, (int)(blockIdx.x + 1) * NW) - 1;
    const int64_t kend = min((int64_t)a.n_keys, (int64_t)a.q_offset + r_last / a.G + 1);
    const int64_t ka = (int64_t)split * a.chunk, kb = min(ka + a.chunk, kend);
    const int64_t lim = (int64_t)a.q_offset + t; // this row's last visible key
    const bf16 *kh = a.k + (size_t)hk * a.S_cap * D;
    const bf16 *vh = a.v + (size_t)hk * a.S_cap * D;

    float *q = qs + warp * NQ * QLD;
    // DCA: the chunk of this row's position (q_offset + t + pos_offset fits in an int),
    // and the KV head's row of stored key positions.
    int qc = 0;
    const int32_t *pos_h = nullptr;
    if constexpr (DCA) {
        for (int qp = 0; qp < 3; qp++) {
            const bf16 *src = qp == 0 ? a.q : qp == 1 ? dca.q_succ : dca.q_inter;
            for (int d = lane; d < D; d += 32)
                q[qp * QLD + d] =
                    row_ok ? __bfloat162float(src[((size_t)t * a.H + h) * D + d]) * a.scale_log2
                           : 0.0f;
        }
        qc = (a.q_offset + t + dca.pos_offset) / dca.chunk_len;
        pos_h = dca.pos + (size_t)hk * dca.pos_cap;
    } else {
        for (int d = lane; d < D; d += 32)
            q[d] =
                row_ok ? __bfloat162float(a.q[((size_t)t * a.H + h) * D + d]) * a.scale_log2 : 0.0f;
    }

    float o[MAX_DL];
#pragma unroll
    for (int i = 0; i < MAX_DL; i++)
        o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    const int nblk = ka < kb ? (int)((kb - ka + BC - 1) / BC) : 0;
    if (nblk > 0) {
        load_kv_tile(Ks, Vs, kh, vh, D, ka, kb);
        if constexpr (DCA) dca_load_pos(Ps, pos_h, dca.n_pos_rows, ka, BC);
        cp_async_commit();
    }
    for (int blk = 0; blk < nblk; blk++) {
        const int64_t k0 = ka + (int64_t)blk * BC;
        const int st = blk & 1;
        if (blk + 1 < nblk) {
            load_kv_tile(Ks + (st ^ 1) * BC * LDS, Vs + (st ^ 1) * BC * LDS, kh, vh, D, k0 + BC,
                         kb);
            if constexpr (DCA) dca_load_pos(Ps + (st ^ 1) * BC, pos_h, dca.n_pos_rows, k0 + BC, BC);
        }
        cp_async_commit(); // possibly empty: "all but the newest group" is then tile blk
        cp_async_wait<1>();
        __syncthreads(); // tile blk's cp.async writes (DCA: its positions too) and q are visible
        const bf16 *Kt = Ks + st * BC * LDS, *Vt = Vs + st * BC * LDS;

        const float *qk = q; // the rotation that meets this lane's key
        if constexpr (DCA) {
            const int64_t kl = k0 + lane;
            if (kl < kb) { // keys past kb are masked below, whatever they met
                const int kpos = dca_pos(Ps + st * BC, dca.n_pos_rows, dca.pos_offset, k0, kl);
                qk = q + dca_part(qc, kpos / dca.chunk_len) * QLD;
            }
        }
        float s = 0.0f;
        const bf16 *kr = Kt + lane * LDS;
        for (int d = 0; d < D; d += 8) {
            float kf[8];
            bf16x8_to_f32(*reinterpret_cast<const uint4 *>(kr + d), kf);
            const float4 q0 = *reinterpret_cast<const float4 *>(qk + d);
            const float4 q1 = *reinterpret_cast<const float4 *>(qk + d + 4);
            s += q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] +
                 q1.y * kf[5] + q1.z * kf[6] + q1.w * kf[7];
        }
        const int64_t key = k0 + lane;
        if (key >= kb || key > lim) s = -INFINITY;

        const float mn = fmaxf(m, warp_max(s));
        const float base = mn == -INFINITY ? 0.0f : mn; // -inf guard: no visible key yet
        const float alpha = exp2f(m - base);
        const float p = exp2f(s - base);
        l = l * alpha + warp_sum(p);
        m = mn;
#pragma unroll
        for (int i = 0; i < MAX_DL; i++)
            o[i] *= alpha;
        for (int jj = 0; jj < BC; jj++) {
            const float pj = __shfl_sync(CUDA_FULL_MASK, p, jj);
            if (pj == 0.0f) continue; // warp-uniform: masked keys and the zero-filled tail
            const bf16 *vr = Vt + jj * LDS;
#pragma unroll
            for (int i = 0; i < MAX_DL; i++) {
                const int d = lane + 32 * i;
                if (d < D) o[i] += pj * __bfloat162float(vr[d]);
            }
        }
        __syncthreads(); // all warps are done with this tile before it is refilled
    }

    if (!row_ok) return;
    const size_t orow = (size_t)t * a.H + h;
    if (a.n_split == 1) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int i = 0; i < MAX_DL; i++) {
            const int d = lane + 32 * i;
            if (d < D) a.out[orow * D + d] = __float2bfloat16_rn(o[i] * inv);
        }
    } else {
        const size_t pr = (size_t)split * a.T * a.H + orow;
        if (lane == 0) a.part_ml[pr] = make_float2(m, l);
#pragma unroll
        for (int i = 0; i < MAX_DL; i++) {
            const int d = lane + 32 * i;
            if (d < D) a.part_o[pr * D + d] = o[i];
        }
    }
}

} // namespace

snp_status attn_launch_rows(cuda_ctx *c, const attn_args *a, const attn_dca_args *d,
                            const cuda_attn_plan *p) {
    const bool dca = d->chunk_len > 0;
    const size_t smem = smem_bytes(a->D, dca);
    const void *kernel =
        dca ? (const void *)attn_rows_kernel<true> : (const void *)attn_rows_kernel<false>;
    TRY(cuda_shared_optin(c, kernel, smem, dca ? "attention (rows, DCA)" : "attention (rows)"));
    const dim3 grid((unsigned)p->grid_x, (unsigned)p->grid_y, (unsigned)p->n_split);
    if (dca)
        attn_rows_kernel<true><<<grid, NTHREADS, smem, c->stream>>>(*a, *d);
    else
        attn_rows_kernel<false><<<grid, NTHREADS, smem, c->stream>>>(*a, *d);
    CUDA_LAUNCHED(dca ? "attn_rows_kernel (DCA)" : "attn_rows_kernel");
    return SNP_OK;
}
