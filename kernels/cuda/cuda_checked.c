// cuda_checked: SNAPTP_CUDA_SYNC=1, the checked mode. A kernel's asynchronous fault
// (an illegal address, a trap) otherwise surfaces at whatever synchronizes next, and
// CUDA_LAUNCHED then blames the next launch; here every op is followed by a stream
// sync, so the message names the op that faulted and its shapes. Off (the default),
// a wrapper costs one branch. What each op computes is its own file's business.
#include "cuda_checked.h"

#include <stdarg.h>
#include <stdio.h>

// after_op: st when the op itself failed or the mode is off; else the stream's
// verdict on the op just enqueued, naming it (op) and its shapes (printf-style).
static snp_status after_op(void *ctx, snp_status st, const char *op, const char *fmt, ...) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (st != SNP_OK || !c || !c->sync_each_op) return st;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e == cudaSuccess) return SNP_OK;
    cudaGetLastError(); // clear a non-sticky error; a sticky one stays with the context
    char shapes[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(shapes, sizeof shapes, fmt, ap);
    va_end(ap);
    return snp_fail(SNP_ERR_DEVICE,
                    "cuda: %s (%s) faulted on device %d: %s (SNAPTP_CUDA_SYNC=1: found by the "
                    "stream sync right after this op, so no earlier op is at fault)",
                    op, shapes, c->device, cudaGetErrorString(e));
}

snp_status cuda_checked_embed(void *ctx, void *x, const bk_weight *table, const int32_t *ids,
                              int T) {
    return after_op(ctx, cuda_embed(ctx, x, table, ids, T), "embed", "table '%s' %lld x %lld, T %d",
                    table ? table->name : "?", table ? (long long)table->rows : 0LL,
                    table ? (long long)table->cols : 0LL, T);
}

snp_status cuda_checked_rms_norm(void *ctx, void *y, const void *x, const bk_weight *w, float eps,
                                 int T, int C) {
    return after_op(ctx, cuda_rms_norm(ctx, y, x, w, eps, T, C), "rms_norm", "w '%s', T %d, C %d",
                    w ? w->name : "?", T, C);
}

snp_status cuda_checked_matmul(void *ctx, void *y, const void *x, const bk_weight *W,
                               const bk_weight *bias, int T) {
    return after_op(ctx, cuda_matmul(ctx, y, x, W, bias, T), "matmul",
                    "W '%s' N %lld x K %lld, T %d%s", W ? W->name : "?",
                    W ? (long long)W->rows : 0LL, W ? (long long)W->cols : 0LL, T,
                    bias ? ", with bias" : "");
}

snp_status cuda_checked_rope(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                             const rope_params *rp) {
    return after_op(ctx, cuda_rope(ctx, x, pos, T, H, D, rp), "rope", "T %d, H %d, D %d, pos[0] %d",
                    T, H, D, pos && T > 0 ? pos[0] : -1);
}

snp_status cuda_checked_kv_store(void *ctx, void *cache, const void *src, int T, int Hkv, int D,
                                 int S_cap, int row0) {
    return after_op(ctx, cuda_kv_store(ctx, cache, src, T, Hkv, D, S_cap, row0), "kv_store",
                    "T %d, Hkv %d, D %d, S_cap %d, row0 %d", T, Hkv, D, S_cap, row0);
}

snp_status cuda_checked_kv_scale(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                                 float factor) {
    return after_op(ctx, cuda_kv_scale(ctx, cache, T, Hkv, D, S_cap, row0, factor), "kv_scale",
                    "T %d, Hkv %d, D %d, S_cap %d, row0 %d, factor %g", T, Hkv, D, S_cap, row0,
                    (double)factor);
}

snp_status cuda_checked_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                                  const attn_shape *s) {
    if (s && s->dca)
        return after_op(ctx, cuda_attention(ctx, out, q, k, v, s), "attention",
                        "T %d, H %d, Hkv %d, D %d, n_keys %d, S_cap %d, q_offset %d, dual chunk "
                        "attention: chunk_len %d, %d rows with stored positions, pos_offset %d",
                        s->T, s->H, s->Hkv, s->D, s->n_keys, s->S_cap, s->q_offset,
                        s->dca->chunk_len, s->dca->n_pos_rows, s->dca->pos_offset);
    return after_op(ctx, cuda_attention(ctx, out, q, k, v, s), "attention",
                    "T %d, H %d, Hkv %d, D %d, n_keys %d, S_cap %d, q_offset %d", s ? s->T : 0,
                    s ? s->H : 0, s ? s->Hkv : 0, s ? s->D : 0, s ? s->n_keys : 0, s ? s->S_cap : 0,
                    s ? s->q_offset : 0);
}

snp_status cuda_checked_swiglu(void *ctx, void *y, const void *gate, const void *up, size_t n) {
    return after_op(ctx, cuda_swiglu(ctx, y, gate, up, n), "swiglu", "n %zu", n);
}

snp_status cuda_checked_add(void *ctx, void *y, const void *x, size_t n) {
    return after_op(ctx, cuda_add(ctx, y, x, n), "add", "n %zu", n);
}

snp_status cuda_checked_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                                     const snapkv_shape *s) {
    return after_op(ctx, cuda_snapkv_votes(ctx, votes, q_win, k, s), "snapkv_votes",
                    "H %d, Hkv %d, D %d, L %d, w %d, S_cap %d", s ? s->H : 0, s ? s->Hkv : 0,
                    s ? s->D : 0, s ? s->L : 0, s ? s->w : 0, s ? s->S_cap : 0);
}

snp_status cuda_checked_snapkv_pool(void *ctx, float *pooled, const float *votes,
                                    const snapkv_shape *s) {
    return after_op(ctx, cuda_snapkv_pool(ctx, pooled, votes, s), "snapkv_pool",
                    "H %d, Hkv %d, L %d, w %d, kernel %d", s ? s->H : 0, s ? s->Hkv : 0,
                    s ? s->L : 0, s ? s->w : 0, s ? s->kernel : 0);
}

snp_status cuda_checked_snapkv_select(void *ctx, int32_t *idx, const float *pooled,
                                      const snapkv_shape *s) {
    return after_op(ctx, cuda_snapkv_select(ctx, idx, pooled, s), "snapkv_select",
                    "Hkv %d, L %d, w %d, budget %d", s ? s->Hkv : 0, s ? s->L : 0, s ? s->w : 0,
                    s ? s->budget : 0);
}

snp_status cuda_checked_kv_gather(void *ctx, void *dst, const void *src, const int32_t *idx,
                                  int Hkv, int D, int n_idx, int src_cap, int dst_cap, int row0) {
    return after_op(ctx, cuda_kv_gather(ctx, dst, src, idx, Hkv, D, n_idx, src_cap, dst_cap, row0),
                    "kv_gather", "Hkv %d, D %d, n_idx %d, src_cap %d, dst_cap %d, row0 %d", Hkv, D,
                    n_idx, src_cap, dst_cap, row0);
}
