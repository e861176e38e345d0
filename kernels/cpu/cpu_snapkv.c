// cpu_snapkv: SnapKV on the CPU, written to ../shared/SNAPKV.md step by step, fp32
// softmax, the pool's threads over heads. Memory is host memory; "backend memory"
// is too.
#include "cpu_snapkv.h"
#include "cpu_backend.h"

#include <stdatomic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


typedef struct votes_job {
    cpu_ctx *c;
    float *votes;
    const float *Q; // [w, H, D]
    const void *K; // [Hkv, S_cap, D] of the context's KV type
    const snapkv_shape *s;
    _Atomic int failed;
} votes_job;

static void votes_head(void *arg, int64_t item, int tid) {
    votes_job *j = arg;
    const snapkv_shape *s = j->s;
    const int h = (int)item, H = s->H, G = s->H / s->Hkv, D = s->D, L = s->L, w = s->w;
    const int P = L - w;
    float *row = cpu_scratch(j->c, tid, sizeof(float) * (size_t)L);
    if (!row) {
        j->failed = 1;
        return;
    }
    const size_t head_elems = (size_t)(h / G) * (size_t)s->S_cap * (size_t)D;
    const int f16 = j->c->kv_type == DTYPE_F16;
    const float *Kh = f16 ? NULL : (const float *)j->K + head_elems;
    const uint16_t *Kh16 = f16 ? (const uint16_t *)j->K + head_elems : NULL;
    float *vh = j->votes + (size_t)h * (size_t)P;
    memset(vh, 0, sizeof(float) * (size_t)P);
    const attn_dca *dca = s->dca;
    for (int i = 0; i < w; i++) {
        const size_t q_at = ((size_t)i * (size_t)H + (size_t)h) * (size_t)D;
        const float *q_parts[3] = {j->Q + q_at, dca ? (const float *)dca->q_succ + q_at : NULL,
                                   dca ? (const float *)dca->q_inter + q_at : NULL};
        // Window row i sits at position P + i: it sees keys 0 .. P + i.
        const int n_seen = P + i + 1;
        float m = -INFINITY;
        for (int k = 0; k < n_seen; k++) {
            // Dual Chunk Attention: the rotation attention gave this (query, key) pair.
            const float *q =
                dca ? q_parts[attn_dca_part(dca->chunk_len, (P + i) / dca->chunk_len, k)]
                    : q_parts[0];
            float dot = 0;
            if (f16) {
                dot = cpu_vec_dot_f16(Kh16 + (size_t)k * (size_t)D, q, D);
            } else {
                const float *kk = Kh + (size_t)k * (size_t)D;
                // Lane-wise partial sums: a strict left-to-right sum would keep the
                // loop scalar, and this loop is most of a question's time over a KV
                // store.
#pragma omp simd reduction(+ : dot)
                for (int d = 0; d < D; d++)
                    dot += q[d] * kk[d];
            }
            row[k] = dot * s->scale;
            if (row[k] > m) m = row[k];
        }
        // The window's own keys stay in the denominator (SNAPKV.md step 4).
        float sum = 0;
        for (int k = 0; k < n_seen; k++) {
            row[k] = expf(row[k] - m);
            sum += row[k];
        }
        const float inv = 1.0f / sum;
        for (int p = 0; p < P; p++)
            vh[p] += row[p] * inv;
    }
}

snp_status cpu_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                            const snapkv_shape *s) {
    cpu_ctx *c = ctx;
    TRY(snapkv_shape_check("cpu", s, "snapkv_votes"));
    votes_job job = {.c = c, .votes = votes, .Q = q_win, .K = k, .s = s};
    cpu_pool_for(c->pool, c->n_threads, s->H, votes_head, &job);
    if (job.failed) return snp_fail(SNP_ERR_MEMORY, "snapkv_votes: out of memory for %d keys", s->L);
    return SNP_OK;
}

typedef struct pool_job {
    float *pooled;
    const float *votes;
    const snapkv_shape *s;
} pool_job;

static void pool_group(void *arg, int64_t item, int tid) {
    const pool_job *j = arg;
    const snapkv_shape *s = j->s;
    const int g = (int)item, G = s->H / s->Hkv, P = s->L - s->w, r = s->kernel / 2;
    float *out = j->pooled + (size_t)g * (size_t)P;
    for (int p = 0; p < P; p++) {
        float group_sum = 0;
        for (int hh = 0; hh < G; hh++) {
            const float *v = j->votes + (size_t)(g * G + hh) * (size_t)P;
            const int lo = p - r < 0 ? 0 : p - r, hi = p + r >= P ? P - 1 : p + r;
            float acc;
            if (s->pooling == SNAPKV_POOL_MAX) {
                acc = v[lo];
                for (int k = lo + 1; k <= hi; k++)
                    acc = v[k] > acc ? v[k] : acc;
            } else { // count_include_pad: the zero padding counts in the divisor
                acc = 0;
                for (int k = lo; k <= hi; k++)
                    acc += v[k];
                acc /= (float)s->kernel;
            }
            group_sum += acc;
        }
        out[p] = group_sum / (float)G;
    }
}

snp_status cpu_snapkv_pool(void *ctx, float *pooled, const float *votes, const snapkv_shape *s) {
    cpu_ctx *c = ctx;
    TRY(snapkv_shape_check("cpu", s, "snapkv_pool"));
    pool_job job = {.pooled = pooled, .votes = votes, .s = s};
    cpu_pool_for(c->pool, c->n_threads, s->Hkv, pool_group, &job);
    return SNP_OK;
}

typedef struct vote_pos {
    float vote;
    int32_t pos;
} vote_pos;

// Highest vote first; ties to the lower position (SNAPKV.md step 8).
static int by_vote_then_pos(const void *a, const void *b) {
    const vote_pos *x = a, *y = b;
    if (x->vote != y->vote) return x->vote > y->vote ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int by_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct select_job {
    int32_t *idx;
    const float *pooled;
    const snapkv_shape *s;
    _Atomic int failed;
} select_job;

static void select_group(void *arg, int64_t item, int tid) {
    select_job *j = arg;
    const snapkv_shape *s = j->s;
    const int g = (int)item, P = s->L - s->w, keep = s->budget - s->w, C = s->budget;
    vote_pos *vp = malloc(sizeof *vp * (size_t)P);
    if (!vp) {
        j->failed = 1;
        return;
    }
    const float *v = j->pooled + (size_t)g * (size_t)P;
    for (int p = 0; p < P; p++)
        vp[p] = (vote_pos){v[p], p};
    qsort(vp, (size_t)P, sizeof *vp, by_vote_then_pos);
    int32_t *out = j->idx + (size_t)g * (size_t)C;
    for (int i = 0; i < keep; i++)
        out[i] = vp[i].pos;
    qsort(out, (size_t)keep, sizeof *out, by_int32);
    for (int i = 0; i < s->w; i++)
        out[keep + i] = P + i;
    free(vp);
}

snp_status cpu_snapkv_select(void *ctx, int32_t *idx, const float *pooled, const snapkv_shape *s) {
    cpu_ctx *c = ctx;
    TRY(snapkv_shape_check("cpu", s, "snapkv_select"));
    const int P = s->L - s->w, keep = s->budget - s->w;
    if (keep > P)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "snapkv_select: %d prompt keys fit the budget %d: nothing to select", s->L,
                        s->budget);
    select_job job = {.idx = idx, .pooled = pooled, .s = s};
    cpu_pool_for(c->pool, c->n_threads, s->Hkv, select_group, &job);
    if (job.failed) return snp_fail(SNP_ERR_MEMORY, "snapkv_select: out of memory for %d keys", P);
    return SNP_OK;
}

typedef struct gather_job {
    char *dst;
    const char *src;
    const int32_t *idx;
    int D, n_idx, src_cap, dst_cap, row0;
    size_t elem; // bytes of one K/V element
} gather_job;

static void gather_head(void *arg, int64_t item, int tid) {
    const gather_job *j = arg;
    const int g = (int)item;
    const size_t row_bytes = j->elem * (size_t)j->D;
    for (int i = 0; i < j->n_idx; i++) {
        int32_t k = j->idx[(size_t)g * (size_t)j->n_idx + (size_t)i];
        memcpy(j->dst + ((size_t)g * (size_t)j->dst_cap + (size_t)(j->row0 + i)) * row_bytes,
               j->src + ((size_t)g * (size_t)j->src_cap + (size_t)k) * row_bytes, row_bytes);
    }
}

snp_status cpu_kv_gather(void *ctx, void *dst, const void *src, const int32_t *idx, int Hkv, int D,
                         int n_idx, int src_cap, int dst_cap, int row0) {
    if (Hkv <= 0 || D <= 0 || n_idx < 0 || row0 < 0 || row0 + n_idx > dst_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "kv_gather: %d rows at row %d do not fit capacity %d (Hkv %d, D %d)", n_idx,
                        row0, dst_cap, Hkv, D);
    for (int g = 0; g < Hkv; g++)
        for (int i = 0; i < n_idx; i++) {
            int32_t j = idx[(size_t)g * (size_t)n_idx + (size_t)i];
            if (j < 0 || j >= src_cap)
                return snp_fail(SNP_ERR_ARGUMENT,
                                "kv_gather: index %d of head %d is outside [0, %d)", j, g, src_cap);
        }
    cpu_ctx *c = ctx;
    gather_job job = {dst, src, idx, D, n_idx, src_cap, dst_cap, row0, dtype_block_bytes(c->kv_type)};
    cpu_pool_for(c->pool, c->n_threads, Hkv, gather_head, &job);
    return SNP_OK;
}

snp_status cpu_download(void *ctx, void *dst_host, const void *src, size_t n_bytes) {
    if (n_bytes && (!dst_host || !src))
        return snp_fail(SNP_ERR_ARGUMENT, "download: NULL pointer for %zu bytes", n_bytes);
    if (n_bytes) memcpy(dst_host, src, n_bytes);
    return SNP_OK;
}

snp_status cpu_upload(void *ctx, void *dst, const void *src_host, size_t n_bytes) {
    if (n_bytes && (!dst || !src_host))
        return snp_fail(SNP_ERR_ARGUMENT, "upload: NULL pointer for %zu bytes", n_bytes);
    if (n_bytes) memcpy(dst, src_host, n_bytes);
    return SNP_OK;
}

snp_status cpu_copy(void *ctx, void *dst, const void *src, size_t n_bytes) {
    if (n_bytes && (!dst || !src))
        return snp_fail(SNP_ERR_ARGUMENT, "copy: NULL pointer for %zu bytes", n_bytes);
    if (n_bytes) memcpy(dst, src, n_bytes);
    return SNP_OK;
}
