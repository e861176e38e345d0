// cuda_checked: the op table's arithmetic ops as cuda_backend.c lists them: each
// calls its op, and under SNAPTP_CUDA_SYNC=1 then waits for the stream and reports
// a device fault against that op, with its shapes. Contracts are backend.h's.
#ifndef SNAPTP_CUDA_CHECKED_H
#define SNAPTP_CUDA_CHECKED_H

#include "cuda_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

snp_status cuda_checked_embed(void *ctx, void *x, const bk_weight *table, const int32_t *ids,
                              int T);
snp_status cuda_checked_rms_norm(void *ctx, void *y, const void *x, const bk_weight *w, float eps,
                                 int T, int C);
snp_status cuda_checked_matmul(void *ctx, void *y, const void *x, const bk_weight *W,
                               const bk_weight *bias, int T);
snp_status cuda_checked_rope(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                             const rope_params *rp);
snp_status cuda_checked_kv_store(void *ctx, void *cache, const void *src, int T, int Hkv, int D,
                                 int S_cap, int row0);
snp_status cuda_checked_kv_scale(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                                 float factor);
snp_status cuda_checked_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                                  const attn_shape *s);
snp_status cuda_checked_swiglu(void *ctx, void *y, const void *gate, const void *up, size_t n);
snp_status cuda_checked_add(void *ctx, void *y, const void *x, size_t n);
snp_status cuda_checked_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                                     const snapkv_shape *s);
snp_status cuda_checked_snapkv_pool(void *ctx, float *pooled, const float *votes,
                                    const snapkv_shape *s);
snp_status cuda_checked_snapkv_select(void *ctx, int32_t *idx, const float *pooled,
                                      const snapkv_shape *s);
snp_status cuda_checked_kv_gather(void *ctx, void *dst, const void *src, const int32_t *idx,
                                  int Hkv, int D, int n_idx, int src_cap, int dst_cap, int row0);

#ifdef __cplusplus
}
#endif

#endif
