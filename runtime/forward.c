// forward: one transformer forward over a token range, layer-major and chunked.
// Under tensor parallelism the only cross-rank traffic is the two all-reduces per
// layer (after the o and down projections); with tp == 1 they are no-ops.
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../comm/comm.h"
#include "forward_internal.h"



snp_status forward_alloc_act(model *m, size_t n, void **out) {
    return m->be->ops->alloc(m->be->ctx, n * m->be->ops->act_bytes, out);
}

snp_status forward_alloc_kv(model *m, size_t n, void **out) {
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
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)c->n_embd, &f->xn), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_heads_local * D, &f->q), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_kv_heads_local * D, &f->k), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_kv_heads_local * D, &f->v), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_heads_local * D, &f->att), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)c->n_embd, &f->proj), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_ff_local, &f->gate), fail);
    TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_ff_local, &f->up), fail);
    f->logit_rows = chunk < 16 ? chunk : 16;
    TRY_GOTO(st, forward_alloc_act(m, (size_t)f->logit_rows * (size_t)c->n_vocab, &f->logits), fail);
    f->pos = malloc(sizeof(int32_t) * T);
    if (model_config_dca_chunk_len(c) > 0) {
        TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_heads_local * D, &f->q_succ), fail);
        TRY_GOTO(st, forward_alloc_act(m, T * (size_t)m->n_heads_local * D, &f->q_inter), fail);
        if (!(f->rot_pos = malloc(sizeof(int32_t) * T))) {
            st = snp_fail(SNP_ERR_MEMORY, "forward: out of memory");
            goto fail;
        }
    }
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
    void *bufs[] = {f->x,    f->xn,   f->q,      f->k,      f->v,       f->att,
                    f->proj, f->gate, f->up,     f->logits, f->q_succ, f->q_inter};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->dealloc(be->ctx, bufs[i]);
    free(f->pos);
    free(f->rot_pos);
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
void *forward_act_row(const model *m, void *base, size_t row, size_t width) {
    return (char *)base + row * width * m->be->ops->act_bytes;
}

snp_status forward_dca_queries(forward_ctx *f, const void *q_intra, void *q_succ, void *q_inter,
                               const int32_t *pos, int T) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const model_config *c = &m->cfg;
    const int CL = model_config_dca_chunk_len(c), C = c->dca_chunk_size;
    const int Hl = m->n_heads_local, D = c->head_dim;
    const size_t width = (size_t)Hl * (size_t)D;
    TRY(ops->copy(ctx, q_succ, q_intra, (size_t)T * width * ops->act_bytes));
    TRY(ops->copy(ctx, q_inter, q_intra, (size_t)T * width * ops->act_bytes));
    rope_params rp = model_rope_params(m, 0);
    rp.cs_scale = 1.0f; // the length scaling is already in q_intra
    // vLLM's tables: the intra query sits at i mod CL, the successive one at
    // min(i mod CL + CL, C), the inter one at min(2 CL - 1, C) for every query.
    const int inter = 2 * CL - 1 < C ? 2 * CL - 1 : C;
    for (int a = 0; a < T; a += f->chunk) { // rot_pos holds a chunk; a window may be longer
        const int n = T - a < f->chunk ? T - a : f->chunk;
        for (int t = 0; t < n; t++) {
            const int at = pos[a + t] % CL;
            f->rot_pos[t] = (at + CL < C ? at + CL : C) - at;
        }
        TRY(ops->rope(ctx, forward_act_row(m, q_succ, (size_t)a, width), f->rot_pos, n, Hl, D, &rp));
        for (int t = 0; t < n; t++) f->rot_pos[t] = inter - pos[a + t] % CL;
        TRY(ops->rope(ctx, forward_act_row(m, q_inter, (size_t)a, width), f->rot_pos, n, Hl, D, &rp));
    }
    return SNP_OK;
}

// rope_dual_chunk: Dual Chunk Attention's rotations of a chunk's q and k (README,
// "Dual Chunk Attention"): keys and the intra query at pos mod chunk_len, both times
// the length scaling s of the call (seq_len; 0: each token's pos + 1, so one rope
// call per run of tokens with equal s), then the two other query rotations.
static snp_status rope_dual_chunk(forward_ctx *f, int Tc, int seq_len) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const model_config *c = &m->cfg;
    const int CL = model_config_dca_chunk_len(c);
    const int Hl = m->n_heads_local, Hkvl = m->n_kv_heads_local, D = c->head_dim;
    for (int t = 0; t < Tc; t++) f->rot_pos[t] = f->pos[t] % CL;
    rope_params rp = model_rope_params(m, 0);
    for (int a = 0, b; a < Tc; a = b) {
        const float s = model_config_dca_scale(c, seq_len > 0 ? seq_len : f->pos[a] + 1);
        for (b = a + 1; b < Tc && (seq_len > 0 ||
                                   model_config_dca_scale(c, f->pos[b] + 1) == s); b++) {}
        rp.cs_scale = s;
        TRY(ops->rope(ctx, forward_act_row(m, f->q, (size_t)a, (size_t)Hl * D), f->rot_pos + a,
                      b - a, Hl, D, &rp));
        TRY(ops->rope(ctx, forward_act_row(m, f->k, (size_t)a, (size_t)Hkvl * D), f->rot_pos + a,
                      b - a, Hkvl, D, &rp));
    }
    return forward_dca_queries(f, f->q, f->q_succ, f->q_inter, f->pos, Tc);
}

// qkv_project: q, k, v of one chunk of Tc tokens (positions in f->pos), normed
// (Qwen3) and rotated, into f->q, f->k, f->v (and, under Dual Chunk Attention,
// f->q_succ, f->q_inter). seq_len: the length of the call's sequence (dynamic NTK's
// frequencies and DCA's scaling depend on it); 0: each token's own pos + 1.
snp_status forward_qkv_project(forward_ctx *f, int l, const void *x_c, int Tc, int seq_len) {
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
    if (f->q_succ) return rope_dual_chunk(f, Tc, seq_len);
    if (seq_len > 0 || c->rope_scaling != ROPE_SCALING_DYNAMIC) {
        TRY(ops->rope(ctx, f->q, f->pos, Tc, Hl, D, &rp));
        TRY(ops->rope(ctx, f->k, f->pos, Tc, Hkvl, D, &rp));
        return SNP_OK;
    }
    for (int t = 0; t < Tc; t++) { // a decode batch under dynamic NTK: per sequence
        const rope_params rt = model_rope_params(m, f->pos[t] + 1);
        TRY(ops->rope(ctx, forward_act_row(m, f->q, t, (size_t)Hl * D), f->pos + t, 1, Hl, D, &rt));
        TRY(ops->rope(ctx, forward_act_row(m, f->k, t, (size_t)Hkvl * D), f->pos + t, 1, Hkvl, D, &rt));
    }
    return SNP_OK;
}

// store_and_attend: appends rows [t0, t0 + Tc) of f->k / f->v at row `row0` of the
// target K/V ([Hkv, cap, D]) and attends those Tc queries causally over rows
// 0 .. row0 + Tc, into the same rows of f->att. Under Dual Chunk Attention the rows'
// positions are layer l's of kv (NULL: row r is position r, a prefill's buffer).
snp_status forward_store_and_attend(forward_ctx *f, void *k_buf, void *v_buf, int cap, int t0,
                                   int Tc, int row0, const kv_cache *kv, int l) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const int Hl = m->n_heads_local, Hkvl = m->n_kv_heads_local, D = m->cfg.head_dim;
    const size_t q_width = (size_t)Hl * (size_t)D, kv_width = (size_t)Hkvl * (size_t)D;
    TRY(ops->kv_store(ctx, k_buf, forward_act_row(m, f->k, (size_t)t0, kv_width), Tc, Hkvl, D, cap, row0));
    TRY(ops->kv_store(ctx, v_buf, forward_act_row(m, f->v, (size_t)t0, kv_width), Tc, Hkvl, D, cap, row0));
    attn_dca dca = {0};
    if (f->q_succ) {
        dca = (attn_dca){
            .chunk_len = model_config_dca_chunk_len(&m->cfg),
            .q_succ = forward_act_row(m, f->q_succ, (size_t)t0, q_width),
            .q_inter = forward_act_row(m, f->q_inter, (size_t)t0, q_width),
            .pos = kv && kv->pos ? kv->pos[l] : NULL,
            .pos_cap = cap,
            .n_pos_rows = kv ? kv->n_pos_rows : 0,
            .pos_offset = kv ? kv->pos_offset : 0,
        };
    }
    const attn_shape shape = {
        .T = Tc,
        .H = Hl,
        .Hkv = Hkvl,
        .D = D,
        .S_cap = cap,
        .n_keys = row0 + Tc,
        .q_offset = row0,
        .scale = 1.0f / sqrtf((float)D),
        .dca = f->q_succ ? &dca : NULL,
    };
    return ops->attention(ctx, forward_act_row(m, f->att, (size_t)t0, q_width),
                          forward_act_row(m, f->q, (size_t)t0, q_width), k_buf, v_buf, &shape);
}

// attention_out: x_c += o_proj(f->att) for Tc rows (GLM-4-0414: += norm(o_proj(...))).
snp_status forward_attention_out(forward_ctx *f, int l, void *x_c, int Tc) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const bk_weight *post = m->layers[l].post_attn_norm;
    TRY(ops->matmul(ctx, f->proj, f->att, m->layers[l].wo, NULL, Tc));
    // All-reduce 1 of 2 per layer: each rank holds a partial sum of the o projection.
    TRY(all_reduce(f, f->proj, (size_t)Tc * (size_t)m->cfg.n_embd));
    // The post-norm needs the whole sum, so it runs after the all-reduce, on every rank.
    if (post) TRY(ops->rms_norm(ctx, f->proj, f->proj, post, m->cfg.rms_eps, Tc, m->cfg.n_embd));
    TRY(ops->add(ctx, x_c, f->proj, (size_t)Tc * (size_t)m->cfg.n_embd));
    return SNP_OK;
}

// mlp_block: x_c += down(silu(gate(norm(x_c))) * up(norm(x_c))) (GLM-4-0414: normed too).
snp_status forward_mlp_block(forward_ctx *f, int l, void *x_c, int Tc) {
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
    if (lw->post_ffn_norm) // GLM-4-0414, after the all-reduce as above
        TRY(ops->rms_norm(ctx, f->proj, f->proj, lw->post_ffn_norm, c->rms_eps, Tc, c->n_embd));
    TRY(ops->add(ctx, x_c, f->proj, (size_t)Tc * (size_t)c->n_embd));
    return SNP_OK;
}

snp_status forward_output_logits(forward_ctx *f, void *x, int first, int n, float *logits) {
    model *m = f->m;
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    const model_config *c = &m->cfg;
    for (int r = 0; r < n; r += f->logit_rows) {
        const int Tc = n - r < f->logit_rows ? n - r : f->logit_rows;
        void *x_c = forward_act_row(m, x, (size_t)(first + r), (size_t)c->n_embd);
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
    TRY(forward_alloc_act(m, (size_t)T * (size_t)m->cfg.n_embd, &f->x));
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
    if (f->q_succ && pos0 != kv->n_keys + kv->pos_offset)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "forward: dual chunk attention: tokens at position %d do not follow the "
                        "cache's last position %d",
                        pos0, kv->n_keys + kv->pos_offset - 1);
    TRY(ensure_hidden(f, T));
    TRY(m->be->ops->embed(m->be->ctx, f->x, m->tok_embd, ids, T));

    const int n_chunks = (T + f->chunk - 1) / f->chunk;
    const int row_base = kv->n_keys;
    for (int l = 0; l < c->n_layers; l++) {
        for (int ci = 0; ci < n_chunks; ci++) {
            const int t0 = ci * f->chunk;
            const int Tc = T - t0 < f->chunk ? T - t0 : f->chunk;
            for (int i = 0; i < Tc; i++) f->pos[i] = pos0 + t0 + i;
            void *x_c = forward_act_row(m, f->x, (size_t)t0, (size_t)c->n_embd);
            TRY(forward_qkv_project(f, l, x_c, Tc, pos0 + T));
            TRY(forward_store_and_attend(f, kv->k[l], kv->v[l], kv->capacity, 0, Tc, row_base + t0,
                                         kv, l));
            TRY(forward_attention_out(f, l, x_c, Tc));
            TRY(forward_mlp_block(f, l, x_c, Tc));
            // Decode steps (T == 1) are too short to be worth a progress line.
            if (f->progress && T > 1)
                f->progress(f->progress_user, l, c->n_layers, ci, n_chunks, T);
        }
    }
    kv->n_keys = row_base + T;
    if (logits_all) TRY(forward_output_logits(f, f->x, 0, T, logits));
    else TRY(forward_output_logits(f, f->x, T - 1, 1, logits));
    return m->be->ops->sync(m->be->ctx);
}

snp_status forward_decode_batch(forward_ctx *f, kv_cache *const *kvs, const int32_t *ids,
                                const int32_t *pos, int B, float *logits) {
    model *m = f->m;
    const model_config *c = &m->cfg;
    if (B <= 0 || B > f->chunk)
        return snp_fail(SNP_ERR_ARGUMENT, "forward: batch of %d sequences (chunk %d)", B, f->chunk);
    for (int b = 0; b < B; b++) {
        if (kvs[b]->n_keys + 1 > kvs[b]->capacity)
            return snp_fail(SNP_ERR_ARGUMENT, "forward: sequence %d's KV cache is full (%d rows)", b,
                            kvs[b]->capacity);
        if (f->q_succ && pos[b] != kvs[b]->n_keys + kvs[b]->pos_offset)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "forward: dual chunk attention: sequence %d's token at position %d "
                            "does not follow its cache's last position %d",
                            b, pos[b], kvs[b]->n_keys + kvs[b]->pos_offset - 1);
    }
    TRY(ensure_hidden(f, B));
    TRY(m->be->ops->embed(m->be->ctx, f->x, m->tok_embd, ids, B));
    memcpy(f->pos, pos, sizeof(int32_t) * (size_t)B);
    for (int l = 0; l < c->n_layers; l++) {
        // Projections and MLP see the B tokens as one matrix; attention is per
        // sequence, each over its own cache.
        TRY(forward_qkv_project(f, l, f->x, B, 0));
        for (int b = 0; b < B; b++)
            TRY(forward_store_and_attend(f, kvs[b]->k[l], kvs[b]->v[l], kvs[b]->capacity, b, 1,
                                         kvs[b]->n_keys, kvs[b], l));
        TRY(forward_attention_out(f, l, f->x, B));
        TRY(forward_mlp_block(f, l, f->x, B));
    }
    for (int b = 0; b < B; b++) kvs[b]->n_keys++;
    TRY(forward_output_logits(f, f->x, 0, B, logits));
    return m->be->ops->sync(m->be->ctx);
}
