// forward: one transformer forward over a token range, layer-major and chunked.
// Under tensor parallelism the only cross-rank traffic is the two all-reduces per
// layer (after the o and down projections); with tp == 1 they are no-ops.
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../comm/comm.h"

struct forward_ctx {
    model *m;
    int chunk; // max tokens per step
    // Hidden states of the whole call, [cap_tokens, C]; grown on demand.
    void *x;
    int cap_tokens;
    // Chunk workspace, each [chunk, width].
    void *xn;   // C
    void *q;    // Hl * D
    void *k;    // Hkvl * D
    void *v;    // Hkvl * D
    void *att;  // Hl * D
    void *proj; // C
    void *gate; // Fl
    void *up;   // Fl
    void *logits; // [logit_rows, V]
    int logit_rows; // LM-head rows per step: logits are wanted for one token, or all
                    // of a short prompt in tests, so a chunk's worth (~100 MB at
                    // chunk 512, V 49152) would be waste
    int32_t *pos; // host [chunk]
    forward_progress_fn progress;
    void *progress_user;
    comm *comm;       // NULL or size 1: no tensor parallelism
    comm *kv_group;   // ranks replicating this rank's KV head (tp > KV heads), or NULL
    float *stage;     // host staging for all-reduce on device-memory backends
    size_t stage_cap; // floats
};

static snp_status alloc_act(model *m, size_t n, void **out) {
    return m->be->ops->alloc(m->be->ctx, n * m->be->ops->act_bytes, out);
}

static snp_status alloc_kv(model *m, size_t n, void **out) {
    return m->be->ops->alloc(m->be->ctx, n * backend_kv_bytes(m->be), out);
}

snp_status forward_init(model *m, int chunk, forward_ctx **out) {
    if (chunk <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: chunk size %d must be positive", chunk);
    snp_status st = SNP_OK;
    forward_ctx *f = calloc(1, sizeof *f);
    if (!f) return snp_fail(SNP_ERR_MEMORY, "forward: out of memory");
    f->m = m;
    f->chunk = chunk;
    const model_config *c = &m->cfg;
    const size_t T = (size_t)chunk, D = (size_t)c->head_dim;
    TRY_GOTO(st, alloc_act(m, T * (size_t)c->n_embd, &f->xn), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)m->n_heads_local * D, &f->q), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)m->n_kv_heads_local * D, &f->k), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)m->n_kv_heads_local * D, &f->v), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)m->n_heads_local * D, &f->att), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)c->n_embd, &f->proj), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)m->n_ff_local, &f->gate), fail);
    TRY_GOTO(st, alloc_act(m, T * (size_t)m->n_ff_local, &f->up), fail);
    f->logit_rows = chunk < 16 ? chunk : 16;
    TRY_GOTO(st, alloc_act(m, (size_t)f->logit_rows * (size_t)c->n_vocab, &f->logits), fail);
    f->pos = malloc(sizeof(int32_t) * T);
    if (!f->pos) {
        st = snp_fail(SNP_ERR_MEMORY, "forward: out of memory");
        goto fail;
    }
    *out = f;
    return SNP_OK;
fail:
    forward_free(f);
    return st;
}

void forward_free(forward_ctx *f) {
    if (!f) return;
    backend *be = f->m->be;
    void *bufs[] = {f->x, f->xn, f->q, f->k, f->v, f->att, f->proj, f->gate, f->up, f->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->dealloc(be->ctx, bufs[i]);
    free(f->pos);
    free(f->stage);
    comm_free(f->kv_group);
    free(f);
}

snp_status forward_set_comm(forward_ctx *f, comm *c) {
    f->comm = c;
    comm_free(f->kv_group);
    f->kv_group = NULL;
    const model *m = f->m;
    const int tp = m->shard.tp_size, Hkv = m->cfg.n_kv_heads;
    if (!c || tp == 1 || Hkv >= tp) return SNP_OK;
    if (comm_size(c) != tp)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: the model is sharded %d ways, the job has %d ranks",
                        tp, comm_size(c));
    // Ranks r with the same r / (tp / Hkv) hold the same KV head (model_load.c).
    return comm_split(c, m->shard.tp_rank / (tp / Hkv), &f->kv_group);
}

// all_reduce: sums a row-parallel projection's partial outputs over the ranks, in
// place. Host-memory backends hand their buffer to the communicator; a device
// backend whose communicator has device collectives (NCCL) sums it where it is, in
// the activation type, queued on the backend's stream; others stage it through host
// memory (fp32 sums; the path that lets two ranks share one GPU).
forward_reduce_path forward_reduce_path_for(const backend *be, const comm *c) {
    if (!c || comm_size(c) == 1) return FORWARD_REDUCE_NONE;
    if (be->ops->host_memory) return FORWARD_REDUCE_MPI;
    const size_t act = be->ops->act_bytes;
    if (be->ops->stream && (act == 2 || act == 4) && comm_has_device_collectives(c))
        return FORWARD_REDUCE_NCCL;
    return FORWARD_REDUCE_MPI_HOST_STAGED;
}

static const char *const reduce_path_names[] = {
    [FORWARD_REDUCE_NONE] = "none",
    [FORWARD_REDUCE_MPI] = "mpi",
    [FORWARD_REDUCE_MPI_HOST_STAGED] = "mpi-host-staged",
    [FORWARD_REDUCE_NCCL] = "nccl",
};
_Static_assert(sizeof reduce_path_names / sizeof reduce_path_names[0] == FORWARD_REDUCE_PATH_COUNT,
               "one name per all-reduce path");

const char *forward_reduce_path_name(forward_reduce_path p) {
    return (unsigned)p < FORWARD_REDUCE_PATH_COUNT ? reduce_path_names[p] : "unknown";
}

static snp_status all_reduce(forward_ctx *f, void *buf, size_t n) {
    const backend *be = f->m->be;
    // One decision, shared with what --json reports (forward_reduce_path_for).
    switch (forward_reduce_path_for(be, f->comm)) {
    case FORWARD_REDUCE_NONE:
        return SNP_OK;
    case FORWARD_REDUCE_MPI:
        return comm_all_reduce_sum_f32(f->comm, buf, n);
    case FORWARD_REDUCE_NCCL: {
        const comm_elem_type type = be->ops->act_bytes == 2 ? COMM_ELEM_BF16 : COMM_ELEM_F32;
        return comm_all_reduce_sum_device(f->comm, buf, n, type, be->ops->stream(be->ctx));
    }
    case FORWARD_REDUCE_MPI_HOST_STAGED:
    default:
        break;
    }
    if (n > f->stage_cap) {
        float *s = realloc(f->stage, n * sizeof(float));
        if (!s) return snp_fail(SNP_ERR_MEMORY, "forward: out of memory staging %zu floats", n);
        f->stage = s;
        f->stage_cap = n;
    }
    TRY(be->ops->to_host_f32(be->ctx, f->stage, buf, n));
    TRY(comm_all_reduce_sum_f32(f->comm, f->stage, n));
    return be->ops->from_host_f32(be->ctx, buf, f->stage, n);
}

void forward_set_progress(forward_ctx *f, forward_progress_fn fn, void *user) {
    f->progress = fn;
    f->progress_user = user;
}

// Pointer to row `row` of an activation matrix with `width` columns.
static void *act_row(const model *m, void *base, size_t row, size_t width) {
    return (char *)base + row * width * m->be->ops->act_bytes;
}

// qkv_project: q, k, v of one chunk of Tc tokens (positions in f->pos), normed
// (Qwen3) and rotated, into f->q, f->k, f->v. seq_len: the length of the call's
// sequence (dynamic NTK's frequencies depend on it); 0: each token's own pos + 1.
static snp_status qkv_project(forward_ctx *f, int l, const void *x_c, int Tc, int seq_len) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const model_config *c = &m->cfg;
    const layer_weights *lw = &m->layers[l];
    const int Hl = m->n_heads_local, Hkvl = m->n_kv_heads_local, D = c->head_dim;
    const rope_params rp = model_rope_params(m, seq_len > 0 ? seq_len : f->pos[0] + 1);
    TRY(ops->rms_norm(ctx, f->xn, x_c, lw->attn_norm, c->rms_eps, Tc, c->n_embd));
    TRY(ops->matmul(ctx, f->q, f->xn, lw->wq, lw->bq, Tc));
    TRY(ops->matmul(ctx, f->k, f->xn, lw->wk, lw->bk, Tc));
    TRY(ops->matmul(ctx, f->v, f->xn, lw->wv, lw->bv, Tc));
    if (c->qk_norm) { // Qwen3: RMSNorm over each head's D values, before RoPE
        TRY(ops->rms_norm(ctx, f->q, f->q, lw->q_norm, c->rms_eps, Tc * Hl, D));
        TRY(ops->rms_norm(ctx, f->k, f->k, lw->k_norm, c->rms_eps, Tc * Hkvl, D));
    }
    if (seq_len > 0 || c->rope_scaling != ROPE_SCALING_DYNAMIC) {
        TRY(ops->rope(ctx, f->q, f->pos, Tc, Hl, D, &rp));
        TRY(ops->rope(ctx, f->k, f->pos, Tc, Hkvl, D, &rp));
        return SNP_OK;
    }
    for (int t = 0; t < Tc; t++) { // a decode batch under dynamic NTK: per sequence
        const rope_params rt = model_rope_params(m, f->pos[t] + 1);
        TRY(ops->rope(ctx, act_row(m, f->q, t, (size_t)Hl * D), f->pos + t, 1, Hl, D, &rt));
        TRY(ops->rope(ctx, act_row(m, f->k, t, (size_t)Hkvl * D), f->pos + t, 1, Hkvl, D, &rt));
    }
    return SNP_OK;
}

// store_and_attend: appends rows [t0, t0 + Tc) of f->k / f->v at row `row0` of the
// target K/V ([Hkv, cap, D]) and attends those Tc queries causally over rows
// 0 .. row0 + Tc, into the same rows of f->att.
static snp_status store_and_attend(forward_ctx *f, void *k_buf, void *v_buf, int cap, int t0,
                                   int Tc, int row0) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const int Hl = m->n_heads_local, Hkvl = m->n_kv_heads_local, D = m->cfg.head_dim;
    const size_t q_width = (size_t)Hl * (size_t)D, kv_width = (size_t)Hkvl * (size_t)D;
    TRY(ops->kv_store(ctx, k_buf, act_row(m, f->k, (size_t)t0, kv_width), Tc, Hkvl, D, cap, row0));
    TRY(ops->kv_store(ctx, v_buf, act_row(m, f->v, (size_t)t0, kv_width), Tc, Hkvl, D, cap, row0));
    const attn_shape shape = {
        .T = Tc,
        .H = Hl,
        .Hkv = Hkvl,
        .D = D,
        .S_cap = cap,
        .n_keys = row0 + Tc,
        .q_offset = row0,
        .scale = 1.0f / sqrtf((float)D),
    };
    return ops->attention(ctx, act_row(m, f->att, (size_t)t0, q_width),
                          act_row(m, f->q, (size_t)t0, q_width), k_buf, v_buf, &shape);
}

// attention_out: x_c += o_proj(f->att) for Tc rows.
static snp_status attention_out(forward_ctx *f, int l, void *x_c, int Tc) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    TRY(ops->matmul(ctx, f->proj, f->att, m->layers[l].wo, NULL, Tc));
    // All-reduce 1 of 2 per layer: each rank holds a partial sum of the o projection.
    TRY(all_reduce(f, f->proj, (size_t)Tc * (size_t)m->cfg.n_embd));
    TRY(ops->add(ctx, x_c, f->proj, (size_t)Tc * (size_t)m->cfg.n_embd));
    return SNP_OK;
}

// mlp_block: x_c += down(silu(gate(norm(x_c))) * up(norm(x_c))).
static snp_status mlp_block(forward_ctx *f, int l, void *x_c, int Tc) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const model_config *c = &m->cfg;
    const layer_weights *lw = &m->layers[l];
    TRY(ops->rms_norm(ctx, f->xn, x_c, lw->ffn_norm, c->rms_eps, Tc, c->n_embd));
    TRY(ops->matmul(ctx, f->gate, f->xn, lw->w_gate, NULL, Tc));
    TRY(ops->matmul(ctx, f->up, f->xn, lw->w_up, NULL, Tc));
    TRY(ops->swiglu(ctx, f->gate, f->gate, f->up, (size_t)Tc * (size_t)m->n_ff_local));
    TRY(ops->matmul(ctx, f->proj, f->gate, lw->w_down, NULL, Tc));
    // All-reduce 2 of 2 per layer: the down projection's partial sums.
    TRY(all_reduce(f, f->proj, (size_t)Tc * (size_t)c->n_embd));
    TRY(ops->add(ctx, x_c, f->proj, (size_t)Tc * (size_t)c->n_embd));
    return SNP_OK;
}

// output_logits: final norm and LM head for rows [first, first + n) of x, copied to
// host logits [n, V] chunk by chunk.
static snp_status output_logits(forward_ctx *f, int first, int n, float *logits) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const model_config *c = &m->cfg;
    for (int r = 0; r < n; r += f->logit_rows) {
        const int Tc = n - r < f->logit_rows ? n - r : f->logit_rows;
        void *x_c = act_row(m, f->x, (size_t)(first + r), (size_t)c->n_embd);
        TRY(ops->rms_norm(ctx, f->xn, x_c, m->output_norm, c->rms_eps, Tc, c->n_embd));
        TRY(ops->matmul(ctx, f->logits, f->xn, m->output, NULL, Tc));
        TRY(ops->to_host_f32(ctx, logits + (size_t)r * (size_t)c->n_vocab, f->logits,
                             (size_t)Tc * (size_t)c->n_vocab));
    }
    return SNP_OK;
}

static snp_status ensure_hidden(forward_ctx *f, int T) {
    if (T <= f->cap_tokens) return SNP_OK;
    model *m = f->m;
    m->be->ops->dealloc(m->be->ctx, f->x);
    f->x = NULL;
    f->cap_tokens = 0;
    TRY(alloc_act(m, (size_t)T * (size_t)m->cfg.n_embd, &f->x));
    f->cap_tokens = T;
    return SNP_OK;
}

snp_status forward_run(forward_ctx *f, kv_cache *kv, const int32_t *ids, int T, int pos0,
                       int logits_all, float *logits) {
    model *m = f->m;
    const model_config *c = &m->cfg;
    if (T <= 0 || pos0 < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: %d tokens at position %d", T, pos0);
    if (kv->n_keys + T > kv->capacity)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "forward: %d new tokens do not fit the KV cache (%d of %d rows used)", T,
                        kv->n_keys, kv->capacity);
    if (kv->n_layers != c->n_layers || kv->Hkv != m->n_kv_heads_local || kv->D != c->head_dim)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: KV cache geometry does not match the model");
    TRY(ensure_hidden(f, T));
    TRY(m->be->ops->embed(m->be->ctx, f->x, m->tok_embd, ids, T));

    const int n_chunks = (T + f->chunk - 1) / f->chunk;
    const int row_base = kv->n_keys;
    for (int l = 0; l < c->n_layers; l++) {
        for (int ci = 0; ci < n_chunks; ci++) {
            const int t0 = ci * f->chunk;
            const int Tc = T - t0 < f->chunk ? T - t0 : f->chunk;
            for (int i = 0; i < Tc; i++) f->pos[i] = pos0 + t0 + i;
            void *x_c = act_row(m, f->x, (size_t)t0, (size_t)c->n_embd);
            TRY(qkv_project(f, l, x_c, Tc, pos0 + T));
            TRY(store_and_attend(f, kv->k[l], kv->v[l], kv->capacity, 0, Tc, row_base + t0));
            TRY(attention_out(f, l, x_c, Tc));
            TRY(mlp_block(f, l, x_c, Tc));
            // Decode steps (T == 1) are too short to be worth a progress line.
            if (f->progress && T > 1)
                f->progress(f->progress_user, l, c->n_layers, ci, n_chunks, T);
        }
    }
    kv->n_keys = row_base + T;
    if (logits_all) TRY(output_logits(f, 0, T, logits));
    else TRY(output_logits(f, T - 1, 1, logits));
    return m->be->ops->sync(m->be->ctx);
}

// capture_rows: copies the rows of chunk [t0, t0 + Tc) that fall in [first, end) from
// f->q into the host array dst, row r at dst[r - first] ([*, Hl, D] fp32).
static snp_status capture_rows(forward_ctx *f, int t0, int Tc, int first, int end, float *dst) {
    model *m = f->m;
    const int a = first > t0 ? first : t0, b = end < t0 + Tc ? end : t0 + Tc;
    if (a >= b) return SNP_OK;
    const size_t width = (size_t)m->n_heads_local * (size_t)m->cfg.head_dim;
    return m->be->ops->to_host_f32(m->be->ctx, dst + (size_t)(a - first) * width,
                                   act_row(m, f->q, (size_t)(a - t0), width),
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

snp_status forward_prefill(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                           const snapkv_params *p, const forward_prefix *prefix,
                           int32_t *selected, float *logits) {
    model *m = f->m;
    const model_config *c = &m->cfg;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    TRY(prefill_check(f, kv, L, p, prefix));
    const int Hl = m->n_heads_local, Hkvl = m->n_kv_heads_local, D = c->head_dim;
    const size_t q_width = (size_t)Hl * (size_t)D;
    const int P0 = prefix ? prefix->n_tokens : 0;
    const int nq = prefix ? prefix->n_query_rows : 0;
    const int loaded = prefix && prefix->loaded;
    const int saving = prefix && !loaded && prefix->save;
    // Rows [first_run, L) run through the model; a loaded prefix's rows come from the
    // store, so the hidden states hold only the rows after it.
    const int first_run = loaded ? P0 : 0, n_run = L - first_run;
    const int kept = p ? snapkv_rows_kept(p, L) : L;
    snp_status st = SNP_OK;
    void *full_k = NULL, *full_v = NULL;
    snapkv_workspace *ws = NULL;
    float *q_win = NULL, *q_tail = NULL;
    if (p && !(q_win = malloc(sizeof(float) * (size_t)p->window * q_width))) goto oom;
    if (prefix && nq > 0 && (saving || (loaded && p)) &&
        !(q_tail = malloc(sizeof(float) * (size_t)nq * q_width)))
        goto oom;
    if (p) {
        // One layer's full K/V, reused by every layer: the full KV of all layers never
        // exists at once (DESIGN.md, "Long prefill").
        const size_t full_elems = (size_t)Hkvl * (size_t)L * (size_t)D;
        TRY_GOTO(st, alloc_kv(m, full_elems, &full_k), done);
        TRY_GOTO(st, alloc_kv(m, full_elems, &full_v), done);
        TRY_GOTO(st, snapkv_workspace_init(m->be, p, L, Hl, Hkvl, D, &ws), done);
        snapkv_workspace_set_replicas(ws, f->kv_group);
    }
    TRY_GOTO(st, ensure_hidden(f, n_run), done);
    TRY_GOTO(st, ops->embed(ctx, f->x, m->tok_embd, ids + first_run, n_run), done);

    // The prompt's segments: the document prefix and what follows it, each chunked on
    // its own (so no chunk straddles P0), or the whole prompt as one segment.
    const int seg_start[2] = {0, P0}, seg_end[2] = {prefix ? P0 : L, L};
    const int n_segs = prefix ? 2 : 1;
    int n_chunks = 0;
    for (int g = 0; g < n_segs; g++)
        if (seg_start[g] >= first_run)
            n_chunks += (seg_end[g] - seg_start[g] + f->chunk - 1) / f->chunk;
    for (int l = 0; l < c->n_layers; l++) {
        void *k_l = p ? full_k : kv->k[l], *v_l = p ? full_v : kv->v[l];
        const int cap = p ? L : kv->capacity;
        if (loaded)
            TRY_GOTO(st, prefix->load(prefix->user, l, k_l, v_l, cap, p ? q_tail : NULL), done);
        int ci = 0;
        for (int g = 0; g < n_segs; g++) {
            if (seg_start[g] < first_run) continue;
            for (int t0 = seg_start[g]; t0 < seg_end[g]; t0 += f->chunk) {
                const int Tc = seg_end[g] - t0 < f->chunk ? seg_end[g] - t0 : f->chunk;
                for (int i = 0; i < Tc; i++) f->pos[i] = t0 + i;
                void *x_c = act_row(m, f->x, (size_t)(t0 - first_run), (size_t)c->n_embd);
                TRY_GOTO(st, qkv_project(f, l, x_c, Tc, L), done);
                if (p) TRY_GOTO(st, capture_rows(f, t0, Tc, L - p->window, L, q_win), done);
                if (saving && nq > 0)
                    TRY_GOTO(st, capture_rows(f, t0, Tc, P0 - nq, P0, q_tail), done);
                // The prefill itself attends over the full, uncompressed keys (step 10).
                TRY_GOTO(st, store_and_attend(f, k_l, v_l, cap, 0, Tc, t0), done);
                TRY_GOTO(st, attention_out(f, l, x_c, Tc), done);
                TRY_GOTO(st, mlp_block(f, l, x_c, Tc), done);
                if (f->progress)
                    f->progress(f->progress_user, l, c->n_layers, ci++, n_chunks, n_run);
            }
            // The document's rows of this layer are final: hand them to the store
            // before the buffer is reused by the next layer.
            if (saving && g == 0) {
                TRY_GOTO(st, ops->sync(ctx), done);
                TRY_GOTO(st, prefix->save(prefix->user, l, k_l, v_l, cap, q_tail), done);
            }
        }
        if (!p) continue;
        // Window rows inside a loaded document come from the store's queries, which
        // the run that wrote it captured from the same rows.
        for (int r = L - p->window; loaded && r < P0; r++)
            memcpy(q_win + (size_t)(r - (L - p->window)) * q_width,
                   q_tail + (size_t)(r - (P0 - nq)) * q_width, sizeof(float) * q_width);
        // Every chunk of the layer is done, so the window's votes see the whole prompt.
        TRY_GOTO(st,
                 ops->from_host_f32(ctx, snapkv_window_queries(ws), q_win,
                                    (size_t)p->window * q_width),
                 done);
        TRY_GOTO(st,
                 snapkv_compress_layer(ws, full_k, full_v, L, kv->k[l], kv->v[l], kv->capacity,
                                       selected ? selected + (size_t)l * (size_t)Hkvl * (size_t)kept
                                                : NULL),
                 done);
    }
    kv->n_keys = kept;
    TRY_GOTO(st, output_logits(f, n_run - 1, 1, logits), done);
    TRY_GOTO(st, ops->sync(ctx), done);
    goto done;
oom:
    st = snp_fail(SNP_ERR_MEMORY, "forward: out of memory for the prefill's query staging");
done:
    ops->dealloc(ctx, full_k);
    ops->dealloc(ctx, full_v);
    snapkv_workspace_free(ws);
    free(q_win);
    free(q_tail);
    return st;
}

snp_status forward_prefill_snapkv(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                                  const snapkv_params *p, int32_t *selected, float *logits) {
    return forward_prefill(f, kv, ids, L, p, NULL, selected, logits);
}

snp_status forward_decode_batch(forward_ctx *f, kv_cache *const *kvs, const int32_t *ids,
                                const int32_t *pos, int B, float *logits) {
    model *m = f->m;
    const model_config *c = &m->cfg;
    if (B <= 0 || B > f->chunk)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: batch of %d sequences (chunk %d)", B, f->chunk);
    for (int b = 0; b < B; b++)
        if (kvs[b]->n_keys + 1 > kvs[b]->capacity)
            return snp_fail(SNP_ERR_ARGUMENT, "forward: sequence %d's KV cache is full (%d rows)", b,
                            kvs[b]->capacity);
    TRY(ensure_hidden(f, B));
    TRY(m->be->ops->embed(m->be->ctx, f->x, m->tok_embd, ids, B));
    memcpy(f->pos, pos, sizeof(int32_t) * (size_t)B);
    for (int l = 0; l < c->n_layers; l++) {
        // Projections and MLP see the B tokens as one matrix; attention is per
        // sequence, each over its own cache.
        TRY(qkv_project(f, l, f->x, B, 0));
        for (int b = 0; b < B; b++)
            TRY(store_and_attend(f, kvs[b]->k[l], kvs[b]->v[l], kvs[b]->capacity, b, 1,
                                 kvs[b]->n_keys));
        TRY(attention_out(f, l, f->x, B));
        TRY(mlp_block(f, l, f->x, B));
    }
    for (int b = 0; b < B; b++) kvs[b]->n_keys++;
    TRY(output_logits(f, 0, B, logits));
    return m->be->ops->sync(m->be->ctx);
}
