// attention: the attention op of the CUDA backend: checks (cuda_host.c), the plan
// (kernel choice and key split), and the merge of split partials (flash-decoding's
// second kernel). The kernels are attention_mma.cu and attention_rows.cu; each has
// a Dual Chunk Attention variant (s->dca), which leaves the same partials.
#include "attention.h"

// attn_combine: out[t, h, :] = sum_s O_s e^(m_s - m) / sum_s l_s e^(m_s - m), m = max m_s
// part_ml: [n_split, T, H] float2 (m in base-2 units, l); part_o: [n_split, T, H, D]
// fp32; out: [T, H, D] bf16. Split 0 holds key 0, which every query sees, so m is
// finite; an empty split (m = -inf, l = 0) weighs exp2(-inf) = 0.
// grid (T * H), block 128, the threads striding over D.
__global__ void __launch_bounds__(128)
    attn_combine_kernel(bf16 *out, const float2 *part_ml, const float *part_o, int TH, int D,
                        int n_split) {
    const int row = blockIdx.x;
    float m = -INFINITY;
    for (int s = 0; s < n_split; s++)
        m = fmaxf(m, part_ml[(size_t)s * TH + row].x);
    float l = 0.0f;
    for (int s = 0; s < n_split; s++) {
        const float2 ml = part_ml[(size_t)s * TH + row];
        l += ml.y * exp2f(ml.x - m);
    }
    const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_split; s++) {
            const float w = exp2f(part_ml[(size_t)s * TH + row].x - m);
            o += part_o[((size_t)s * TH + row) * D + d] * w;
        }
        out[(size_t)row * D + d] = __float2bfloat16_rn(o * inv_l);
    }
}

snp_status cuda_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                          const attn_shape *s) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "cuda: attention: NULL ctx");
    TRY(cuda_attn_check(out, q, k, v, s));
    TRY(cuda_ctx_enter(c));
    cuda_attn_plan p;
    cuda_attn_plan_make(s, c->n_sm, c->attn_force_rows, &p);

    attn_args a = {};
    a.out = (bf16 *)out;
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)k;
    a.v = (const bf16 *)v;
    a.T = s->T;
    a.H = s->H;
    a.Hkv = s->Hkv;
    a.G = s->H / s->Hkv;
    a.D = s->D;
    a.S_cap = s->S_cap;
    a.n_keys = s->n_keys;
    a.q_offset = s->q_offset;
    a.scale_log2 = s->scale * CUDA_LOG2E;
    a.n_split = p.n_split;
    a.chunk = p.chunk;
    attn_dca_args d = {};
    if (s->dca) {
        d.q_succ = (const bf16 *)s->dca->q_succ;
        d.q_inter = (const bf16 *)s->dca->q_inter;
        d.pos = s->dca->pos;
        d.chunk_len = s->dca->chunk_len;
        d.pos_cap = s->dca->pos_cap;
        d.n_pos_rows = s->dca->n_pos_rows;
        d.pos_offset = s->dca->pos_offset;
    }
    if (p.n_split > 1) {
        void *ws = NULL;
        TRY(cuda_workspace(c, p.ws_bytes, &ws));
        const size_t n_rows = (size_t)p.n_split * s->T * s->H;
        a.part_ml = (float2 *)ws;
        a.part_o = (float *)ws + 2 * n_rows;
    }
    if (p.kernel == CUDA_ATTN_KERNEL_MMA)
        TRY(attn_launch_mma(c, &a, &d, &p));
    else
        TRY(attn_launch_rows(c, &a, &d, &p));
    if (p.n_split > 1) {
        attn_combine_kernel<<<s->T * s->H, 128, 0, c->stream>>>(a.out, a.part_ml, a.part_o,
                                                                s->T * s->H, s->D, p.n_split);
        CUDA_LAUNCHED("attn_combine_kernel");
    }
    return SNP_OK;
}
