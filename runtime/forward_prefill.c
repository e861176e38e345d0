// forward_prefill: the layer-major prefill (DESIGN.md, "Long prefill"), kept as a
// job that stops at layer boundaries: forward_prefill runs its layers back to back,
// a server runs one layer between decode steps of its running batch. A layer is the
// natural cut: its chunks share one full-length K/V buffer that SnapKV compresses
// only once the layer's last chunk is in, and between layers only the hidden states
// [L, C] carry over.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"

// capture_rows: copies the rows of chunk [t0, t0 + Tc) that fall in [first, end) from
// f->q into the host array dst, row r at dst[r - first] ([*, Hl, D] fp32).
static snp_status capture_rows(forward_ctx *f, int t0, int Tc, int first, int end, float *dst) {
    model *m = f->m;
    const int a = first > t0 ? first : t0, b = end < t0 + Tc ? end : t0 + Tc;
    if (a >= b) return SNP_OK;
    const size_t width = (size_t)m->n_heads_local * (size_t)m->cfg.head_dim;
    return m->be->ops->to_host_f32(m->be->ctx, dst + (size_t)(a - first) * width,
                                   forward_act_row(m, f->q, (size_t)(a - t0), width),
                                   (size_t)(b - a) * width);
}

// prefill_check: the preconditions of forward_prefill, each with its own message.
static snp_status prefill_check(const forward_ctx *f, const kv_cache *kv, int L,
                                const snapkv_params *p, const forward_prefix *prefix) {
    const model *m = f->m;
    const model_config *c = &m->cfg;
    if (L <= 0) return snp_fail(SNP_ERR_ARGUMENT, "forward: prefill of %d tokens", L);
    if (kv->n_layers != c->n_layers || kv->Hkv != m->n_kv_heads_local || kv->D != c->head_dim)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: KV cache geometry does not match the model");
    const int rows = p ? snapkv_rows_kept(p, L) : L;
    if (p) {
        TRY(snapkv_params_validate(p));
        TRY(snapkv_check_prompt(p, L));
    }
    if (kv->n_keys != 0 || kv->capacity < rows)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "forward: prefill needs an empty cache of at least %d rows (has %d of %d "
                        "used)",
                        rows, kv->n_keys, kv->capacity);
    if (!prefix) return SNP_OK;
    const float stored = prefix->key_scale > 0 ? prefix->key_scale : 1.0f;
    if (prefix->loaded &&
        fabs((double)model_config_dca_scale(c, L) / stored - 1.0) > FORWARD_STORE_SCALE_TOL)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "forward: the stored document was run under dual chunk attention's "
                        "length scaling %.6f (its writing prompt's length), this %d-token "
                        "prompt's is %.6f: past %g apart the document's rows are not what this "
                        "prompt computes; write a store with a prompt of about this length",
                        (double)stored, L, (double)model_config_dca_scale(c, L),
                        FORWARD_STORE_SCALE_TOL);
    if (c->rope_scaling == ROPE_SCALING_DYNAMIC) // the stored keys' angles depend on L
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "forward: a KV store cannot serve a model with dynamic NTK rope scaling "
                        "(its keys' rotation depends on the whole prompt's length)");
    const int P0 = prefix->n_tokens, nq = prefix->n_query_rows;
    if (P0 <= 0 || P0 >= L)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "forward: a document prefix of %d tokens must leave at least one of the "
                        "%d prompt tokens after it",
                        P0, L);
    if (nq < 0 || nq > P0)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: %d prefix query rows for a %d-token prefix",
                        nq, P0);
    if (prefix->loaded && !prefix->load)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: a loaded prefix needs a load function");
    if (prefix->loaded && p && L - p->window < P0 - nq)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "forward: the SnapKV window of %d tokens reaches %d tokens into the "
                        "document, but the KV store keeps the queries of its last %d tokens only",
                        p->window, P0 - (L - p->window), nq);
    return SNP_OK;
}

struct forward_prefill_job {
    forward_ctx *f;
    kv_cache *kv;
    const snapkv_params *p; // NULL: the full policy
    snapkv_params p_copy;
    const forward_prefix *prefix;
    int32_t *selected;
    int L, P0, nq, loaded, saving, first_run, n_run, kept;
    int layer;    // next layer to run
    int n_chunks; // per layer, for progress
    void *x;      // hidden states of the rows run, [n_run, C], the job's own
    void *full_k, *full_v; // SnapKV: one layer's full K/V [Hkv, L, D], reused by every layer
    snapkv_workspace *ws;
    float *q_win, *q_tail;
    int32_t *win_pos; // dual chunk attention: the window's positions [w]
};

void forward_prefill_job_free(forward_prefill_job *j) {
    if (!j) return;
    const backend *be = j->f->m->be;
    be->ops->dealloc(be->ctx, j->x);
    be->ops->dealloc(be->ctx, j->full_k);
    be->ops->dealloc(be->ctx, j->full_v);
    snapkv_workspace_free(j->ws);
    free(j->q_win);
    free(j->q_tail);
    free(j->win_pos);
    free(j);
}

snp_status forward_prefill_begin(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                                 const snapkv_params *p, const forward_prefix *prefix,
                                 int32_t *selected, forward_prefill_job **out) {
    *out = NULL;
    model *m = f->m;
    const model_config *c = &m->cfg;
    TRY(prefill_check(f, kv, L, p, prefix));
    forward_prefill_job *j = calloc(1, sizeof *j);
    if (!j) return snp_fail(SNP_ERR_MEMORY, "forward: out of memory for a prefill job");
    snp_status st = SNP_OK;
    j->f = f;
    j->kv = kv;
    if (p) {
        j->p_copy = *p;
        j->p = &j->p_copy;
    }
    j->prefix = prefix;
    j->selected = selected;
    j->L = L;
    j->P0 = prefix ? prefix->n_tokens : 0;
    j->nq = prefix ? prefix->n_query_rows : 0;
    j->loaded = prefix && prefix->loaded;
    j->saving = prefix && !j->loaded && prefix->save;
    // Rows [first_run, L) run through the model; a loaded prefix's rows come from the
    // store, so the hidden states hold only the rows after it.
    j->first_run = j->loaded ? j->P0 : 0;
    j->n_run = L - j->first_run;
    j->kept = p ? snapkv_rows_kept(p, L) : L;
    const int Hl = m->n_heads_local, Hkvl = m->n_kv_heads_local, D = c->head_dim;
    const size_t q_width = (size_t)Hl * (size_t)D;
    if (p && !(j->q_win = malloc(sizeof(float) * (size_t)p->window * q_width))) goto oom;
    if (p && f->q_succ && !(j->win_pos = malloc(sizeof(int32_t) * (size_t)p->window))) goto oom;
    if (prefix && j->nq > 0 && (j->saving || (j->loaded && p)) &&
        !(j->q_tail = malloc(sizeof(float) * (size_t)j->nq * q_width)))
        goto oom;
    if (p) {
        // One layer's full K/V, reused by every layer: the full KV of all layers never
        // exists at once (DESIGN.md, "Long prefill").
        const size_t full_elems = (size_t)Hkvl * (size_t)L * (size_t)D;
        TRY_GOTO(st, forward_alloc_kv(m, full_elems, &j->full_k), fail);
        TRY_GOTO(st, forward_alloc_kv(m, full_elems, &j->full_v), fail);
        TRY_GOTO(st, snapkv_workspace_init(m->be, p, L, Hl, Hkvl, D, &j->ws), fail);
        snapkv_workspace_set_replicas(j->ws, f->kv_group);
        if (f->q_succ) { // dual chunk attention: the kept rows' positions stay with them
            TRY_GOTO(st, snapkv_workspace_set_dca(j->ws, model_config_dca_chunk_len(c)), fail);
            TRY_GOTO(st, kv_cache_ensure_positions(kv), fail);
        }
    }
    TRY_GOTO(st, forward_alloc_act(m, (size_t)j->n_run * (size_t)c->n_embd, &j->x), fail);
    TRY_GOTO(st, m->be->ops->embed(m->be->ctx, j->x, m->tok_embd, ids + j->first_run, j->n_run),
             fail);
    // The prompt's segments: the document prefix and what follows it, each chunked on
    // its own (so no chunk straddles P0), or the whole prompt as one segment.
    const int n_segs = prefix ? 2 : 1;
    const int seg_start[2] = {0, j->P0}, seg_end[2] = {prefix ? j->P0 : L, L};
    for (int g = 0; g < n_segs; g++)
        if (seg_start[g] >= j->first_run)
            j->n_chunks += (seg_end[g] - seg_start[g] + f->chunk - 1) / f->chunk;
    *out = j;
    return SNP_OK;
oom:
    st = snp_fail(SNP_ERR_MEMORY, "forward: out of memory for the prefill's query staging");
fail:
    forward_prefill_job_free(j);
    return st;
}

int forward_prefill_layers_done(const forward_prefill_job *j) { return j->layer; }

// run_layer: every chunk of layer l, the store's save or load of its document rows,
// then (SnapKV) the layer's compression into the cache.
static snp_status run_layer(forward_prefill_job *j, int l) {
    forward_ctx *f = j->f;
    model *m = f->m;
    const model_config *c = &m->cfg;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const snapkv_params *p = j->p;
    const forward_prefix *prefix = j->prefix;
    kv_cache *kv = j->kv;
    const int L = j->L, P0 = j->P0, nq = j->nq;
    const size_t q_width = (size_t)m->n_heads_local * (size_t)c->head_dim;
    const int n_segs = prefix ? 2 : 1;
    const int seg_start[2] = {0, P0}, seg_end[2] = {prefix ? P0 : L, L};
    void *k_l = p ? j->full_k : kv->k[l], *v_l = p ? j->full_v : kv->v[l];
    const int cap = p ? L : kv->capacity;
    // Dual Chunk Attention's length scaling: keys carry the factor of the prompt that
    // ran them (1 for other models), and a stored document's are brought to this
    // prompt's (prefill_check has bounded the difference).
    const float key_scale = model_config_dca_scale(c, L);
    if (j->loaded) {
        TRY(prefix->load(prefix->user, l, k_l, v_l, cap, p ? j->q_tail : NULL));
        const float stored = prefix->key_scale > 0 ? prefix->key_scale : 1.0f;
        if (stored != key_scale)
            TRY(ops->kv_scale(ctx, k_l, P0, m->n_kv_heads_local, c->head_dim, cap, 0,
                              key_scale / stored));
    }
    int ci = 0;
    for (int g = 0; g < n_segs; g++) {
        if (seg_start[g] < j->first_run) continue;
        for (int t0 = seg_start[g]; t0 < seg_end[g]; t0 += f->chunk) {
            const int Tc = seg_end[g] - t0 < f->chunk ? seg_end[g] - t0 : f->chunk;
            for (int i = 0; i < Tc; i++) f->pos[i] = t0 + i;
            void *x_c = forward_act_row(m, j->x, (size_t)(t0 - j->first_run), (size_t)c->n_embd);
            TRY(forward_qkv_project(f, l, x_c, Tc, L));
            if (p) TRY(capture_rows(f, t0, Tc, L - p->window, L, j->q_win));
            if (j->saving && nq > 0) TRY(capture_rows(f, t0, Tc, P0 - nq, P0, j->q_tail));
            // The prefill itself attends over the full, uncompressed keys (step 10).
            TRY(forward_store_and_attend(f, k_l, v_l, cap, 0, Tc, t0, NULL, l));
            TRY(forward_attention_out(f, l, x_c, Tc));
            TRY(forward_mlp_block(f, l, x_c, Tc));
            if (f->progress) f->progress(f->progress_user, l, c->n_layers, ci++, j->n_chunks, j->n_run);
        }
        // The document's rows of this layer are final: hand them to the store before
        // the buffer is reused by the next layer.
        if (j->saving && g == 0) {
            TRY(ops->sync(ctx));
            TRY(prefix->save(prefix->user, l, k_l, v_l, cap, j->q_tail, key_scale));
        }
    }
    if (!p) return SNP_OK;
    // Window rows inside a loaded document come from the store's queries, which the
    // run that wrote it captured from the same rows.
    for (int r = L - p->window; j->loaded && r < P0; r++)
        memcpy(j->q_win + (size_t)(r - (L - p->window)) * q_width,
               j->q_tail + (size_t)(r - (P0 - nq)) * q_width, sizeof(float) * q_width);
    // Every chunk of the layer is done, so the window's votes see the whole prompt.
    void *q_win = snapkv_window_queries(j->ws);
    TRY(ops->from_host_f32(ctx, q_win, j->q_win, (size_t)p->window * q_width));
    if (f->q_succ) { // the window's other rotations, made from the intra ones as attention's
        void *q_succ, *q_inter;
        snapkv_window_queries_dca(j->ws, &q_succ, &q_inter);
        for (int r = 0; r < p->window; r++) j->win_pos[r] = L - p->window + r;
        TRY(forward_dca_queries(f, q_win, q_succ, q_inter, j->win_pos, p->window));
    }
    const size_t per_layer = (size_t)m->n_kv_heads_local * (size_t)j->kept;
    TRY(snapkv_compress_layer(j->ws, j->full_k, j->full_v, L, kv->k[l], kv->v[l], kv->capacity,
                              j->selected ? j->selected + (size_t)l * per_layer : NULL));
    return f->q_succ ? snapkv_kept_positions(j->ws, kv->pos[l], kv->capacity) : SNP_OK;
}

snp_status forward_prefill_step(forward_prefill_job *j, float *logits, int *done) {
    *done = 0;
    forward_ctx *f = j->f;
    model *m = f->m;
    const int n_layers = m->cfg.n_layers;
    if (j->layer >= n_layers)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: the prefill job already ran its %d layers",
                        n_layers);
    TRY(run_layer(j, j->layer));
    if (++j->layer < n_layers) return m->be->ops->sync(m->be->ctx);
    j->kv->n_keys = j->kept;
    // Under SnapKV the kept rows carry their positions, and the first row after them
    // is position L (decode continues at the prompt's own positions).
    j->kv->n_pos_rows = j->p && j->kv->pos ? j->kept : 0;
    j->kv->pos_offset = j->L - j->kept;
    TRY(forward_output_logits(f, j->x, j->n_run - 1, 1, logits));
    TRY(m->be->ops->sync(m->be->ctx));
    *done = 1;
    return SNP_OK;
}

snp_status forward_prefill(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                           const snapkv_params *p, const forward_prefix *prefix,
                           int32_t *selected, float *logits) {
    forward_prefill_job *j = NULL;
    TRY(forward_prefill_begin(f, kv, ids, L, p, prefix, selected, &j));
    snp_status st = SNP_OK;
    for (int done = 0; st == SNP_OK && !done;) st = forward_prefill_step(j, logits, &done);
    forward_prefill_job_free(j);
    return st;
}

snp_status forward_prefill_snapkv(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                                  const snapkv_params *p, int32_t *selected, float *logits) {
    return forward_prefill(f, kv, ids, L, p, NULL, selected, logits);
}
