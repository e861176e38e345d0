// attention: what the attention kernels share (C++ only): the argument block and
// the two kernels' launchers. The dispatcher and the split merge are attention.cu.
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

// attn_launch_mma / attn_launch_rows: enqueue the plan's kernel on c->stream.
// Partials go to a.part_* when p->n_split > 1 (the caller merges them).
snp_status attn_launch_mma(cuda_ctx *c, const attn_args *a, const cuda_attn_plan *p);
snp_status attn_launch_rows(cuda_ctx *c, const attn_args *a, const cuda_attn_plan *p);

#endif
