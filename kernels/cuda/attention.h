// attention: what the attention kernels share (C++ only): the argument block, the
// two kernels' launchers, and Dual Chunk Attention's key-position helpers. The
// dispatcher and the split merge are attention.cu.
#ifndef SNAPTP_CUDA_ATTENTION_H
#define SNAPTP_CUDA_ATTENTION_H

#include "cuda_device.h"
#include "cuda_internal.h"

// One attention call as the kernels see it. Scores are kept in base-2 units,
// s2 = (q . k) * scale * log2(e), so the softmax uses exp2f; every m written to
// part_ml is in those units.
struct attn_args {
    bf16 *out;           // [T, H, D]
    const bf16 *q;       // [T, H, D]
    const bf16 *k, *v;   // [Hkv, S_cap, D]
    float2 *part_ml;     // [n_split, T, H] (m, l), when n_split > 1
    float *part_o;       // [n_split, T, H, D] unnormalized O, when n_split > 1
    int T, H, Hkv, G, D; // G = H / Hkv
    int S_cap, n_keys, q_offset;
    float scale_log2;
    int n_split;
    int64_t chunk; // keys per split
};

// Dual Chunk Attention's part of a call (backend.h, attn_dca): a second kernel
// parameter rather than more fields of attn_args, because nvcc (13.0, seen in the
// PTX) addresses a parameter over 128 bytes through memory instead of loading its
// fields, which changed the code of every plain kernel (attn_args is 96 bytes).
// The plain instantiations never read it.
struct attn_dca_args {
    const bf16 *q_succ, *q_inter; // [T, H, D], as q
    const int32_t *pos;           // [Hkv, pos_cap]: positions of rows < n_pos_rows
    int chunk_len;                // 0: plain attention
    int pos_cap, n_pos_rows, pos_offset;
};

// dca_load_pos: the stored positions of key rows [k0, k0 + n) that have one (row <
// n_pos_rows; pos_h is the KV head's row of the pos array) into Pt[0, n), by
// cp.async in the caller's commit group, so they land with the K/V tile they
// describe; later rows follow the affine rule and are not loaded. n <= blockDim.x.
// Every row < n_pos_rows is inside the pos array (n_pos_rows <= pos_cap, checked).
static __device__ __forceinline__ void dca_load_pos(int *Pt, const int32_t *pos_h, int n_pos_rows,
                                                    int64_t k0, int n) {
    const int i = threadIdx.x;
    if (i < n && k0 + i < n_pos_rows) cp_async4(Pt + i, pos_h + k0 + i);
}

// dca_pos: the position of key row `key` of the tile that starts at row k0 (Pt as
// dca_load_pos left it). For key < n_keys it fits in an int (cuda_attn_check).
static __device__ __forceinline__ int dca_pos(const int *Pt, int n_pos_rows, int pos_offset,
                                              int64_t k0, int64_t key) {
    return key < n_pos_rows ? Pt[key - k0] : (int)key + pos_offset;
}

// attn_launch_mma / attn_launch_rows: enqueue the plan's kernel on c->stream, its
// Dual Chunk Attention variant when d->chunk_len > 0. Partials go to a.part_* when
// p->n_split > 1 (the caller merges them).
snp_status attn_launch_mma(cuda_ctx *c, const attn_args *a, const attn_dca_args *d,
                           const cuda_attn_plan *p);
snp_status attn_launch_rows(cuda_ctx *c, const attn_args *a, const attn_dca_args *d,
                            const cuda_attn_plan *p);

#endif
