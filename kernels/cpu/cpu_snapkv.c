// cpu_snapkv: SnapKV on the CPU, written to ../shared/SNAPKV.md step by step, fp32
// softmax, OpenMP over heads. Memory is host memory; "backend memory" is too.
#include "cpu_snapkv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


snp_status cpu_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                            const snapkv_shape *s) {
    TRY(snapkv_shape_check("cpu", s, "snapkv_votes"));
    const int H = s->H, G = s->H / s->Hkv, D = s->D, L = s->L, w = s->w, P = L - w;
    const float *Q = q_win; // [w, H, D]
    const float *K = k;     // [Hkv, S_cap, D]
    int failed = 0;
#pragma omp parallel
    {
        float *row = malloc(sizeof(float) * (size_t)L);
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int h = 0; h < H; h++) {
            if (!row) continue;
            const float *Kh = K + (size_t)(h / G) * (size_t)s->S_cap * (size_t)D;
            float *vh = votes + (size_t)h * (size_t)P;
            memset(vh, 0, sizeof(float) * (size_t)P);
            for (int i = 0; i < w; i++) {
                const float *q = Q + ((size_t)i * (size_t)H + (size_t)h) * (size_t)D;
                // Window row i sits at position P + i: it sees keys 0 .. P + i.
                const int n_seen = P + i + 1;
                float m = -INFINITY;
                for (int j = 0; j < n_seen; j++) {
                    const float *kj = Kh + (size_t)j * (size_t)D;
                    float dot = 0;
                    for (int d = 0; d < D; d++)
                        dot += q[d] * kj[d];
                    row[j] = dot * s->scale;
                    if (row[j] > m) m = row[j];
                }
                // The window's own keys stay in the denominator (SNAPKV.md step 4).
                float sum = 0;
                for (int j = 0; j < n_seen; j++) {
                    row[j] = expf(row[j] - m);
                    sum += row[j];
                }
                const float inv = 1.0f / sum;
                for (int p = 0; p < P; p++)
                    vh[p] += row[p] * inv;
            }
        }
        free(row);
    }
    if (failed) return snp_fail(SNP_ERR_MEMORY, "snapkv_votes: out of memory for %d keys", L);
    return SNP_OK;
}

snp_status cpu_snapkv_pool(void *ctx, float *pooled, const float *votes, const snapkv_shape *s) {
    TRY(snapkv_shape_check("cpu", s, "snapkv_pool"));
    const int G = s->H / s->Hkv, P = s->L - s->w, r = s->kernel / 2;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < s->Hkv; g++) {
        float *out = pooled + (size_t)g * (size_t)P;
        for (int p = 0; p < P; p++) {
            float group_sum = 0;
            for (int hh = 0; hh < G; hh++) {
                const float *v = votes + (size_t)(g * G + hh) * (size_t)P;
                const int lo = p - r < 0 ? 0 : p - r, hi = p + r >= P ? P - 1 : p + r;
                float acc;
                if (s->pooling == SNAPKV_POOL_MAX) {
                    acc = v[lo];
                    for (int j = lo + 1; j <= hi; j++)
                        acc = v[j] > acc ? v[j] : acc;
                } else { // count_include_pad: the zero padding counts in the divisor
                    acc = 0;
                    for (int j = lo; j <= hi; j++)
                        acc += v[j];
                    acc /= (float)s->kernel;
                }
                group_sum += acc;
            }
            out[p] = group_sum / (float)G;
        }
    }
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

snp_status cpu_snapkv_select(void *ctx, int32_t *idx, const float *pooled, const snapkv_shape *s) {
    TRY(snapkv_shape_check("cpu", s, "snapkv_select"));
    const int P = s->L - s->w, keep = s->budget - s->w, C = s->budget;
    if (keep > P)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "snapkv_select: %d prompt keys fit the budget %d: nothing to select", s->L,
                        C);
    int failed = 0;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < s->Hkv; g++) {
        vote_pos *vp = malloc(sizeof *vp * (size_t)P);
        if (!vp) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        const float *v = pooled + (size_t)g * (size_t)P;
        for (int p = 0; p < P; p++)
            vp[p] = (vote_pos){v[p], p};
        qsort(vp, (size_t)P, sizeof *vp, by_vote_then_pos);
        int32_t *out = idx + (size_t)g * (size_t)C;
        for (int i = 0; i < keep; i++)
            out[i] = vp[i].pos;
        qsort(out, (size_t)keep, sizeof *out, by_int32);
        for (int i = 0; i < s->w; i++)
            out[keep + i] = P + i;
        free(vp);
    }
    if (failed) return snp_fail(SNP_ERR_MEMORY, "snapkv_select: out of memory for %d keys", P);
    return SNP_OK;
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
    const float *S = src;
    float *Dst = dst;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < Hkv; g++)
        for (int i = 0; i < n_idx; i++) {
            int32_t j = idx[(size_t)g * (size_t)n_idx + (size_t)i];
            memcpy(Dst + ((size_t)g * (size_t)dst_cap + (size_t)(row0 + i)) * (size_t)D,
                   S + ((size_t)g * (size_t)src_cap + (size_t)j) * (size_t)D,
                   sizeof(float) * (size_t)D);
        }
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
