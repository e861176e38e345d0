// cpu_snapkv: the CPU backend's SnapKV ops (scoring, pooling, selection, gather);
// the reference the CUDA kernels are checked against. Contracts: kernels/backend.h.
#ifndef SNAPTP_CPU_SNAPKV_H
#define SNAPTP_CPU_SNAPKV_H

#include "../backend.h"

snp_status cpu_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                            const snapkv_shape *s);
snp_status cpu_snapkv_pool(void *ctx, float *pooled, const float *votes, const snapkv_shape *s);
snp_status cpu_snapkv_select(void *ctx, int32_t *idx, const float *pooled, const snapkv_shape *s);
snp_status cpu_kv_gather(void *ctx, void *dst, const void *src, const int32_t *idx, int Hkv, int D,
                         int n_idx, int src_cap, int dst_cap, int row0);
snp_status cpu_download(void *ctx, void *dst_host, const void *src, size_t n_bytes);
snp_status cpu_copy(void *ctx, void *dst, const void *src, size_t n_bytes);
snp_status cpu_upload(void *ctx, void *dst, const void *src_host, size_t n_bytes);

#endif
