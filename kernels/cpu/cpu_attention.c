// cpu_attention: causal GQA attention on the CPU, flash-style (online softmax over
// key blocks, never a T x n_keys matrix); the tile products go to single-threaded
// sgemm. The KV cache layout and kv_store are the caller's / cpu_elementwise.c's.
#include "cpu_backend.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

// Tile sizes (overridable with -D for tuning): ATT_ROWS packed query rows (tokens x
// group heads) against ATT_BK keys, a 32 KiB score tile. 64 x 128 was the fastest
// of {32..256} x {64..256} at T = 2048 for SmolLM2's heads on one Zen 4 core
// (67 ms against 68-75 ms, CPU time).
#ifndef ATT_ROWS
#define ATT_ROWS 64
#endif
#ifndef ATT_BK
#define ATT_BK 128
#endif
enum {
    ATT_MIN_SPLIT_KEYS = 512, // a shorter key split costs more to merge than it saves
    // Below this many multiply-adds (T x keys x H x D, ~30 us on one core) a call
    // runs on one thread: early decode steps would spend more on the fork/join.
    ATT_PARALLEL_MIN = 1 << 18,
};

typedef struct att_plan {
    const attn_shape *s;
    int g;         // query heads per KV head
    int Bq;        // tokens per tile
    int rows_max;  // Bq * g
    int n_qt;      // query tiles
    int n_split;   // key ranges per tile
    int64_t chunk; // keys per range, a multiple of ATT_BK
} att_plan;

typedef struct att_scratch {
    float *kb, *vb; // [ATT_BK, D] an f16 cache's key block, as fp32 (NULL for fp32)
    float *q; // [rows_max, D] the tile's queries, pre-scaled
    float *S; // [rows_max, ATT_BK] scores, then probabilities
    float *O; // [rows_max, D] unnormalized output
    float *m; // [rows_max] running max
    float *l; // [rows_max] running sum
    // Dual Chunk Attention only: the tile's q_succ and q_inter (pre-scaled), their
    // scores, and the chunk of each key of the block.
    float *q_part[2], *S_part[2];
    int *key_chunk; // [ATT_BK]
} att_scratch;

// dca_scores: S = the scores of the tile's rows against keys [k0, k0 + nk) under
// Dual Chunk Attention: each (query, key) pair with the query rotation the key's
// chunk asks for (backend.h, attn_dca). Rows hold ascending positions, so the parts
// a block meets run from part(first query chunk, last key) to part(last query chunk,
// first key); when those agree, one product serves the whole block.
static void dca_scores(const attn_shape *s, int g, int hk, int t0, int nt, int64_t k0, int nk,
                       const float *kblk, att_scratch *w) {
    const attn_dca *d = s->dca;
    const int D = s->D, rows = nt * g, CL = d->chunk_len;
    const int qc_first = (s->q_offset + t0 + d->pos_offset) / CL;
    const int qc_last = (s->q_offset + t0 + nt - 1 + d->pos_offset) / CL;
    for (int j = 0; j < nk; j++)
        w->key_chunk[j] = attn_dca_position_of_row(d, hk, (int)(k0 + j)) / CL;
    const int lo = attn_dca_part(CL, qc_first, w->key_chunk[nk - 1] * CL);
    const int hi = attn_dca_part(CL, qc_last, w->key_chunk[0] * CL);
    const float *qs[3] = {w->q, w->q_part[0], w->q_part[1]};
    float *Ss[3] = {w->S, w->S_part[0], w->S_part[1]};
    for (int part = lo; part <= hi; part++) // into S itself when the block is one part
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, D, 1.0f, qs[part], D, kblk,
                    D, 0.0f, lo == hi ? w->S : Ss[part], ATT_BK);
    if (lo == hi) return;
    for (int ti = 0; ti < nt; ti++) {
        const int qc = (s->q_offset + t0 + ti + d->pos_offset) / CL;
        for (int i = 0; i < g; i++) {
            const size_t r = (size_t)(ti * g + i) * ATT_BK;
            for (int j = 0; j < nk; j++) {
                const int part = w->key_chunk[j] >= qc ? 0 : w->key_chunk[j] == qc - 1 ? 1 : 2;
                if (part) w->S[r + j] = Ss[part][r + j];
            }
        }
    }
}

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

// Online softmax over keys [ka, kb) of KV head hk for the tile's rows; leaves
// (m, l, O) in w. Row r is token t0 + r / g, query head hk * g + r % g. An f16
// cache (w->kb set) is widened one key block at a time into scratch that stays in
// L1/L2, so the products are the same fp32 sgemm and the cache is read at half the
// bytes.
static void att_tile(const att_plan *p, const float *q, const void *k, const void *v, int hk,
                     int t0, int nt, int64_t ka, int64_t kb, att_scratch *w) {
    const attn_shape *s = p->s;
    const int D = s->D, g = p->g, rows = nt * g;
    const float *srcs[3] = {q, s->dca ? s->dca->q_succ : NULL, s->dca ? s->dca->q_inter : NULL};
    float *dsts[3] = {w->q, w->q_part[0], w->q_part[1]};
    for (int v = 0; v < (s->dca ? 3 : 1); v++) {
        for (int ti = 0; ti < nt; ti++) {
            const float *src = srcs[v] + ((size_t)(t0 + ti) * s->H + (size_t)hk * g) * D;
            float *dst = dsts[v] + (size_t)ti * g * D;
            for (int i = 0; i < g * D; i++)
                dst[i] = src[i] * s->scale;
        }
    }
    for (int r = 0; r < rows; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
    }
    memset(w->O, 0, sizeof(float) * (size_t)rows * D);
    const size_t head = (size_t)hk * s->S_cap * D;

    for (int64_t k0 = ka; k0 < kb; k0 += ATT_BK) {
        int nk = (int)min64(ATT_BK, kb - k0);
        const float *kblk, *vblk;
        if (w->kb) {
            cpu_vec_from_f16(w->kb, (const uint16_t *)k + head + k0 * D, (size_t)nk * D);
            cpu_vec_from_f16(w->vb, (const uint16_t *)v + head + k0 * D, (size_t)nk * D);
            kblk = w->kb;
            vblk = w->vb;
        } else {
            kblk = (const float *)k + head + k0 * D;
            vblk = (const float *)v + head + k0 * D;
        }
        if (s->dca)
            dca_scores(s, g, hk, t0, nt, k0, nk, kblk, w);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, D, 1.0f, w->q, D,
                        kblk, D, 0.0f, w->S, ATT_BK); // S[rows, nk] = q K^T
        // Causal mask, only where the block reaches past the tile's first token.
        if (k0 + nk - 1 > (int64_t)s->q_offset + t0) {
            for (int ti = 0; ti < nt; ti++) {
                int64_t vis = (int64_t)s->q_offset + t0 + ti - k0 + 1; // keys it may see
                if (vis >= nk) continue;
                if (vis < 0) vis = 0;
                for (int i = 0; i < g; i++) {
                    float *sr = w->S + (size_t)(ti * g + i) * ATT_BK;
                    for (int j = (int)vis; j < nk; j++)
                        sr[j] = -INFINITY;
                }
            }
        }
        for (int r = 0; r < rows; r++) {
            float *sr = w->S + (size_t)r * ATT_BK;
            float m_new = fmaxf(w->m[r], cpu_vec_max(sr, nk));
            // -inf guard: a row that has seen no key yet (only in a later key
            // range of a split) keeps m = -inf; exp(-inf - -inf) would be NaN.
            if (m_new == -INFINITY) {
                memset(sr, 0, sizeof(float) * (size_t)nk);
                continue;
            }
            float alpha = expf(w->m[r] - m_new); // 0 on the row's first visible block
            w->l[r] = w->l[r] * alpha + cpu_vec_exp_sum(sr, sr, m_new, nk);
            if (alpha != 1.0f) cpu_vec_scale(w->O + (size_t)r * D, alpha, D);
            w->m[r] = m_new;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, nk, 1.0f, w->S, ATT_BK,
                    vblk, D, 1.0f, w->O, D); // O[rows, D] += P V
    }
}

static snp_status att_check(const float *out, const float *q, const void *k, const void *v,
                            const attn_shape *s) {
    return attn_shape_check("cpu", out, q, k, v, s);
}

static void att_plan_make(const attn_shape *s, int n_threads, att_plan *p) {
    p->s = s;
    p->g = s->H / s->Hkv;
    p->Bq = p->g >= ATT_ROWS ? 1 : ATT_ROWS / p->g;
    if (p->Bq > s->T) p->Bq = s->T;
    p->rows_max = p->Bq * p->g;
    p->n_qt = (s->T + p->Bq - 1) / p->Bq;
    int64_t kend = min64(s->n_keys, (int64_t)s->q_offset + s->T); // keys the last query sees
    int64_t base = (int64_t)s->Hkv * p->n_qt;
    int64_t n_split = 1;
    if (n_threads > 1 && base < 4 * n_threads) {
        // Too few (head, tile) items to keep the team busy: split the keys, and
        // make the item count a multiple of the team so no thread idles at the end.
        n_split = (4 * n_threads + base - 1) / base;
        while ((base * n_split) % n_threads != 0)
            n_split++;
        int64_t max_split = kend / ATT_MIN_SPLIT_KEYS;
        if (n_split > max_split) n_split = max_split > 1 ? max_split : 1;
    }
    int64_t chunk = (kend + n_split - 1) / n_split;
    p->chunk = (chunk + ATT_BK - 1) / ATT_BK * ATT_BK;
    p->n_split = (int)((kend + p->chunk - 1) / p->chunk);
}

typedef struct att_job {
    cpu_ctx *c;
    const att_plan *p;
    float *out, *parts;
    const float *q;
    const void *k, *v; // the context's KV type
    size_t part_floats; // m, l, O of one item
    _Atomic int failed;
} att_job;

static void att_item(void *arg, int64_t it, int tid) {
    att_job *j = arg;
    const att_plan *p = j->p;
    const attn_shape *s = p->s;
    const int D = s->D, g = p->g;
    const size_t rm = (size_t)p->rows_max;
    const int f16 = j->c->kv_type == DTYPE_F16;
    const size_t block = f16 ? (size_t)ATT_BK * D : 0;
    // Dual Chunk Attention: two more query tiles and score tiles, and the key chunks.
    const size_t dca = s->dca ? 2 * rm * D + 2 * rm * ATT_BK + ATT_BK : 0;
    float *buf = cpu_scratch(j->c, tid,
                             sizeof(float) * (rm * D * 2 + rm * ATT_BK + 2 * rm + 2 * block + dca));
    if (!buf) {
        j->failed = 1;
        return;
    }
    att_scratch w = {.q = buf, .O = buf + rm * D, .S = buf + 2 * rm * D};
    w.m = w.S + rm * ATT_BK;
    w.l = w.m + rm;
    if (f16) {
        w.kb = w.l + rm;
        w.vb = w.kb + block;
    }
    if (dca) {
        float *d = w.l + rm + 2 * block;
        w.q_part[0] = d;
        w.q_part[1] = d + rm * D;
        w.S_part[0] = d + 2 * rm * D;
        w.S_part[1] = w.S_part[0] + rm * ATT_BK;
        w.key_chunk = (int *)(w.S_part[1] + rm * ATT_BK); // an int in each float's place
    }
    // Last tiles first: under the causal mask they have the most keys, and items
    // handed out in order balance best when the big ones go out early.
    int64_t per_tile = (int64_t)s->Hkv * p->n_split;
    int qt = p->n_qt - 1 - (int)(it / per_tile);
    int hk = (int)(it % per_tile / p->n_split), ks = (int)(it % p->n_split);
    int t0 = qt * p->Bq, nt = (int)min64(p->Bq, s->T - t0);
    int64_t kend = min64(s->n_keys, (int64_t)s->q_offset + t0 + nt);
    int64_t ka = ks * p->chunk, kb = min64(ka + p->chunk, kend);
    if (ka < kb) {
        att_tile(p, j->q, j->k, j->v, hk, t0, nt, ka, kb, &w);
    } else { // a range wholly in this tile's future: an empty partial
        for (int r = 0; r < nt * g; r++) {
            w.m[r] = -INFINITY;
            w.l[r] = 0.0f;
        }
        memset(w.O, 0, sizeof(float) * (size_t)nt * g * D);
    }
    if (p->n_split == 1) {
        for (int r = 0; r < nt * g; r++) {
            float *o = j->out + ((size_t)(t0 + r / g) * s->H + hk * g + r % g) * D;
            for (int d = 0; d < D; d++)
                o[d] = w.O[(size_t)r * D + d] / w.l[r];
        }
    } else {
        float *part = j->parts + j->part_floats * (size_t)((qt * s->Hkv + hk) * p->n_split + ks);
        memcpy(part, w.m, sizeof(float) * (size_t)nt * g);
        memcpy(part + rm, w.l, sizeof(float) * (size_t)nt * g);
        memcpy(part + 2 * rm, w.O, sizeof(float) * (size_t)nt * g * D);
    }
}

// Merge of one (tile, KV head)'s key ranges: m = max m_i, l = sum l_i e^(m_i - m),
// O = sum O_i e^(m_i - m) / l. Range 0 holds key 0, which every query sees, so m
// is finite.
static void att_merge(void *arg, int64_t tr, int tid) {
    const att_job *j = arg;
    const att_plan *p = j->p;
    const attn_shape *s = p->s;
    const int D = s->D, g = p->g;
    const size_t rm = (size_t)p->rows_max, pf = j->part_floats;
    int qt = (int)(tr / s->Hkv), hk = (int)(tr % s->Hkv);
    int t0 = qt * p->Bq, nt = (int)min64(p->Bq, s->T - t0);
    const float *base = j->parts + pf * (size_t)(tr * p->n_split);
    for (int r = 0; r < nt * g; r++) {
        float m = -INFINITY, l = 0.0f;
        for (int ks = 0; ks < p->n_split; ks++)
            m = fmaxf(m, base[pf * ks + r]);
        float *o = j->out + ((size_t)(t0 + r / g) * s->H + hk * g + r % g) * D;
        for (int d = 0; d < D; d++)
            o[d] = 0.0f;
        for (int ks = 0; ks < p->n_split; ks++) {
            const float *pp = base + pf * ks;
            float wgt = expf(pp[r] - m); // 0 for an empty range
            if (wgt == 0.0f) continue;
            l += pp[rm + r] * wgt;
            const float *po = pp + 2 * rm + (size_t)r * D;
            for (int d = 0; d < D; d++)
                o[d] += po[d] * wgt;
        }
        for (int d = 0; d < D; d++)
            o[d] /= l;
    }
}

// attention: out[t,h,:] = sum_j softmax_j(scale q[t,h,:] . k[h/g,j,:]) v[h/g,j,:]
//   over keys j <= q_offset + t, j < n_keys; g = H / Hkv
// q, out: [T,H,D] fp32; k, v: [Hkv,S_cap,D] of the KV type (fp32 or f16), rows past
// n_keys never read;
// out may alias q (each q row is read only by the item that writes its out row).
// Work items: (KV head, tile of Bq tokens x its g query heads, key range), handed
// out biggest (latest) tiles first; decode and other small T split the keys so the
// pool stays busy, then merge the partial (m, l, O).
// Numerics: fp32 scores of pre-scaled q, exp ~2 ulp, fp32 running m, l and O.
// Dual Chunk Attention (s->dca): each score uses the query rotation of its key's
// chunk (dca_scores); a block inside one part costs what plain attention does.
snp_status cpu_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                         const attn_shape *s) {
    cpu_ctx *c = ctx;
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "cpu: attention: NULL ctx");
    TRY(att_check(out, q, k, v, s));
    int64_t kend = min64(s->n_keys, (int64_t)s->q_offset + s->T);
    int nt = (int64_t)s->T * kend * s->H * s->D < ATT_PARALLEL_MIN ? 1 : c->n_threads;
    att_plan p;
    att_plan_make(s, nt, &p);
    const int64_t n_items = (int64_t)s->Hkv * p.n_qt * p.n_split;
    att_job job = {.c = c, .p = &p, .out = out, .q = q, .k = k, .v = v,
                   .part_floats = (size_t)p.rows_max * (s->D + 2)};
    if (p.n_split > 1) {
        job.parts = malloc(sizeof(float) * job.part_floats * (size_t)n_items);
        if (!job.parts)
            return snp_fail(SNP_ERR_MEMORY, "cpu: attention: out of memory for %lld partials",
                            (long long)n_items);
    }
    cpu_pool_for(c->pool, nt, n_items, att_item, &job);
    if (p.n_split > 1 && !job.failed)
        cpu_pool_for(c->pool, nt, (int64_t)p.n_qt * s->Hkv, att_merge, &job);
    free(job.parts);
    if (job.failed)
        return snp_fail(SNP_ERR_MEMORY, "cpu: attention: out of memory for a %d-row tile",
                        p.rows_max);
    return SNP_OK;
}
