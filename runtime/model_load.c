// model_load: finds each weight of a checkpoint by role (GGUF or HF names), checks
// its shape against the config, cuts this rank's tensor-parallel slice and hands it
// to the backend. The checkpoint stays mapped while the model lives on host-memory
// backends (their weights may point into it), else only while loading.
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "gguf.h"
#include "safetensors.h"

typedef struct checkpoint {
    const char *path;
    gguf_file *gguf; // exactly one of gguf / st is set
    st_model *st;
} checkpoint;

// A 2-D view of a checkpoint tensor: rows x cols, row-major.
typedef struct tensor_view {
    const char *name;
    dtype type;
    uint64_t rows, cols;
    uint64_t row_bytes;
    const void *data;
} tensor_view;

typedef enum weight_role {
    ROLE_ATTN_NORM,
    ROLE_WQ,
    ROLE_WK,
    ROLE_WV,
    ROLE_BQ,
    ROLE_BK,
    ROLE_BV,
    ROLE_Q_NORM,
    ROLE_K_NORM,
    ROLE_WO,
    ROLE_FFN_NORM,
    ROLE_W_GATE,
    ROLE_W_UP,
    ROLE_W_DOWN,
    ROLE_POST_ATTN_NORM, // GLM-4-0414
    ROLE_POST_FFN_NORM,
    ROLE_W_GATE_UP, // GLM: [2F, C], gate rows then up rows
    ROLE_WQKV,      // GGUF chatglm from THUDM's own layout: [(H + 2 Hkv) D, C], q, k, v rows
    ROLE_BQKV,
    ROLE_COUNT
} weight_role;

// Per-layer names, GGUF (llama.cpp) and Hugging Face.
static const struct {
    const char *gguf;
    const char *hf;
} role_names[] = {
    [ROLE_ATTN_NORM] = {"blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight"},
    [ROLE_WQ] = {"blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight"},
    [ROLE_WK] = {"blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight"},
    [ROLE_WV] = {"blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight"},
    [ROLE_BQ] = {"blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias"},
    [ROLE_BK] = {"blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias"},
    [ROLE_BV] = {"blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias"},
    [ROLE_Q_NORM] = {"blk.%d.attn_q_norm.weight", "model.layers.%d.self_attn.q_norm.weight"},
    [ROLE_K_NORM] = {"blk.%d.attn_k_norm.weight", "model.layers.%d.self_attn.k_norm.weight"},
    [ROLE_WO] = {"blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight"},
    [ROLE_FFN_NORM] = {"blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight"},
    [ROLE_W_GATE] = {"blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight"},
    [ROLE_W_UP] = {"blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight"},
    [ROLE_W_DOWN] = {"blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight"},
    [ROLE_POST_ATTN_NORM] = {"blk.%d.post_attention_norm.weight",
                             "model.layers.%d.post_self_attn_layernorm.weight"},
    [ROLE_POST_FFN_NORM] = {"blk.%d.post_ffw_norm.weight",
                            "model.layers.%d.post_mlp_layernorm.weight"},
    // llama.cpp maps gate_up_proj to ffn_up and keeps it whole (its swiglu splits it).
    [ROLE_W_GATE_UP] = {"blk.%d.ffn_up.weight", "model.layers.%d.mlp.gate_up_proj.weight"},
    // HF's Glm* keep q/k/v apart; only THUDM's checkpoints, converted, fuse them.
    [ROLE_WQKV] = {"blk.%d.attn_qkv.weight", "model.layers.%d.self_attn.qkv_proj.weight"},
    [ROLE_BQKV] = {"blk.%d.attn_qkv.bias", "model.layers.%d.self_attn.qkv_proj.bias"},
};
_Static_assert(sizeof role_names / sizeof role_names[0] == ROLE_COUNT, "one name per role");

// How a tensor is cut across ranks: whole, by rows [lo, hi) or by columns [lo, hi).
typedef enum slice_kind { SLICE_NONE, SLICE_ROWS, SLICE_COLS } slice_kind;
typedef struct slice {
    slice_kind kind;
    uint64_t lo, hi;
} slice;

static int is_directory(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// The directory of a safetensors checkpoint given the directory itself or its
// config.json. Returns a malloc'd string.
static char *checkpoint_dir(const char *path) {
    if (is_directory(path)) return strdup(path);
    char *dir = strdup(path);
    if (!dir) return NULL;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    return dir;
}

snp_status model_path_check(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return snp_fail(SNP_ERR_IO, "--model %s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return SNP_OK; // a safetensors directory: its files say the rest
    if (has_suffix(path, ".json") || has_suffix(path, ".safetensors")) return SNP_OK;
    char magic[4] = {0};
    FILE *f = S_ISREG(sb.st_mode) ? fopen(path, "rb") : NULL;
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return SNP_OK;
    return snp_fail(SNP_ERR_FORMAT,
                    "--model %s is neither a GGUF file (it does not start with the 'GGUF' magic) "
                    "nor a safetensors checkpoint (a directory with config.json, its config.json "
                    "or index .json, or a .safetensors file)",
                    path);
}

static snp_status checkpoint_open(const char *path, checkpoint *ck) {
    memset(ck, 0, sizeof *ck);
    ck->path = path;
    TRY(model_path_check(path));
    if (has_suffix(path, ".gguf")) return gguf_open(path, &ck->gguf);
    char *dir = checkpoint_dir(path);
    if (!dir) return snp_fail(SNP_ERR_MEMORY, "model: out of memory opening %s", path);
    snp_status st = st_open(dir, &ck->st);
    free(dir);
    return st;
}

static void checkpoint_close(checkpoint *ck) {
    gguf_close(ck->gguf);
    st_close(ck->st);
    ck->gguf = NULL;
    ck->st = NULL;
}

snp_status model_read_config(const char *path, model_config *out) {
    TRY(model_path_check(path));
    if (has_suffix(path, ".gguf")) {
        gguf_file *f = NULL;
        TRY(gguf_open(path, &f));
        snp_status st = model_config_from_gguf(f, out);
        gguf_close(f);
        if (st != SNP_OK) snp_error_trace(__FILE__, __LINE__);
        return st;
    }
    char *dir = checkpoint_dir(path);
    if (!dir) return snp_fail(SNP_ERR_MEMORY, "model: out of memory reading %s", path);
    char config_path[4096];
    snprintf(config_path, sizeof config_path, "%s/config.json", dir);
    free(dir);
    return model_config_from_json(config_path, out);
}

// checkpoint_find: the tensor called `name` as a 2-D view; *found = 0 when absent.
static snp_status checkpoint_find(const checkpoint *ck, const char *name, tensor_view *out,
                                  int *found) {
    memset(out, 0, sizeof *out);
    *found = 0;
    uint64_t rows, cols;
    if (ck->gguf) {
        const gguf_tensor *t = gguf_find_tensor(ck->gguf, name);
        if (!t) return SNP_OK;
        if (t->n_dims > 2)
            return snp_fail(SNP_ERR_FORMAT, "model: %s: tensor '%s' has %d dimensions, expected 1 or 2",
                            ck->path, name, t->n_dims);
        cols = t->ne[0];
        rows = t->n_dims == 2 ? t->ne[1] : 1;
        out->name = t->name;
        out->type = t->type;
        out->data = t->data;
    } else {
        const st_tensor *t = st_find_tensor(ck->st, name);
        if (!t) return SNP_OK;
        if (t->n_dims < 1 || t->n_dims > 2)
            return snp_fail(SNP_ERR_FORMAT, "model: %s: tensor '%s' has %d dimensions, expected 1 or 2",
                            t->file, name, t->n_dims);
        rows = t->n_dims == 2 ? t->shape[0] : 1;
        cols = t->shape[t->n_dims - 1];
        out->name = t->name;
        out->type = t->type;
        out->data = t->data;
    }
    out->rows = rows;
    out->cols = cols;
    TRY(dtype_row_bytes(out->type, cols, name, &out->row_bytes));
    *found = 1;
    return SNP_OK;
}

typedef struct loader {
    model *m;
    checkpoint ck;
    int dry; // count bytes only: nothing goes to the backend
} loader;

// load_weight: finds `name`, checks it is rows x cols, slices it and uploads it.
// A missing optional tensor leaves *out NULL.
static snp_status load_weight(loader *ld, const char *name, uint64_t rows, uint64_t cols,
                              slice sl, int required, bk_weight **out) {
    *out = NULL;
    tensor_view tv;
    int found;
    TRY(checkpoint_find(&ld->ck, name, &tv, &found));
    if (!found) {
        if (!required) return SNP_OK;
        return snp_fail(SNP_ERR_FORMAT, "model: %s: tensor '%s' is missing", ld->ck.path, name);
    }
    if (tv.rows != rows || tv.cols != cols)
        return snp_fail(SNP_ERR_FORMAT,
                        "model: %s: tensor '%s' is %llu x %llu, the config implies %llu x %llu",
                        ld->ck.path, name, (unsigned long long)tv.rows,
                        (unsigned long long)tv.cols, (unsigned long long)rows,
                        (unsigned long long)cols);
    weight_src src = {
        .name = name,
        .type = tv.type,
        .rows = tv.rows,
        .cols = tv.cols,
        .row_stride_bytes = tv.row_bytes,
        .data = tv.data,
        // load() keeps the checkpoint open for the model's lifetime on such backends.
        .persistent = ld->m->be && ld->m->be->ops->host_memory,
    };
    if (sl.kind == SLICE_ROWS) {
        src.rows = sl.hi - sl.lo;
        src.data = (const char *)tv.data + sl.lo * tv.row_bytes;
    } else if (sl.kind == SLICE_COLS) {
        uint64_t be = dtype_block_elems(tv.type);
        if (sl.lo % be != 0 || sl.hi % be != 0)
            return snp_fail(SNP_ERR_UNSUPPORTED,
                            "model: %s: tensor '%s': columns [%llu, %llu) of this rank do not "
                            "fall on %s block boundaries (%llu)",
                            ld->ck.path, name, (unsigned long long)sl.lo,
                            (unsigned long long)sl.hi, dtype_name(tv.type),
                            (unsigned long long)be);
        src.cols = sl.hi - sl.lo;
        src.data = (const char *)tv.data + sl.lo / be * dtype_block_bytes(tv.type);
    }
    uint64_t slice_row_bytes;
    TRY(dtype_row_bytes(src.type, src.cols, name, &slice_row_bytes));
    ld->m->weight_bytes += slice_row_bytes * src.rows;
    ld->m->weight_elems += src.cols * src.rows;
    if (ld->dry) return SNP_OK;
    backend *be = ld->m->be;
    return be->ops->weight_load(be->ctx, &src, out);
}

static const char *layer_name(const checkpoint *ck, weight_role role, int layer, char *buf,
                              size_t n) {
    snprintf(buf, n, ck->gguf ? role_names[role].gguf : role_names[role].hf, layer);
    return buf;
}

// plan_shard: how many heads and MLP columns this rank owns (DESIGN.md, GQA rules).
static snp_status plan_shard(model *m, const char *path) {
    const model_config *c = &m->cfg;
    const int tp = m->shard.tp_size, r = m->shard.tp_rank;
    if (tp < 1 || r < 0 || r >= tp)
        return snp_fail(SNP_ERR_ARGUMENT, "model: rank %d of %d is not a valid shard", r, tp);
    if (c->n_heads % tp != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "model: %s: %d query heads cannot be split over tp = %d ranks", path,
                        c->n_heads, tp);
    if (c->n_kv_heads % tp != 0 && !(tp > c->n_kv_heads && tp % c->n_kv_heads == 0))
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "model: %s: %d KV heads cannot be split over tp = %d ranks (tp must "
                        "divide the KV heads, or be a multiple of them)",
                        path, c->n_kv_heads, tp);
    if (c->n_ff % tp != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "model: %s: MLP width %d cannot be split over tp = %d ranks", path,
                        c->n_ff, tp);
    m->n_heads_local = c->n_heads / tp;
    m->n_kv_heads_local = c->n_kv_heads >= tp ? c->n_kv_heads / tp : 1;
    m->n_ff_local = c->n_ff / tp;
    return SNP_OK;
}

// shifted: the slice `sl` moved down by `off` rows (a part of a fused tensor), or, for a
// slice of the whole tensor (tp 1), rows [off, off + n) of it.
static slice shifted(slice sl, uint64_t off, uint64_t n) {
    if (sl.kind == SLICE_NONE) return (slice){SLICE_ROWS, off, off + n};
    return (slice){sl.kind, off + sl.lo, off + sl.hi};
}

// bias_of: the column slice of a [1, N] bias that matches the row slice of its matrix.
static slice bias_of(slice rows) {
    return (slice){rows.kind == SLICE_ROWS ? SLICE_COLS : SLICE_NONE, rows.lo, rows.hi};
}

// load_qkv: q, k, v and their biases, from three tensors or (GGUF chatglm converted
// from THUDM's layout) from one fused attn_qkv whose rows are all q heads, then all k
// heads, then all v heads; each rank cuts its heads out of each part.
static snp_status load_qkv(loader *ld, int l, layer_weights *lw, slice q_rows, slice kv_rows) {
    const model *m = ld->m;
    const model_config *c = &m->cfg;
    const uint64_t C = (uint64_t)c->n_embd, D = (uint64_t)c->head_dim;
    const uint64_t H = (uint64_t)c->n_heads, Hkv = (uint64_t)c->n_kv_heads;
    const uint64_t Hl = (uint64_t)m->n_heads_local, Hkvl = (uint64_t)m->n_kv_heads_local;
    const checkpoint *ck = &ld->ck;
    char name[160];
#define NAME(role) layer_name(ck, role, l, name, sizeof name)
    tensor_view tv;
    int fused = 0;
    if (ck->gguf) TRY(checkpoint_find(ck, NAME(ROLE_WQKV), &tv, &fused));
    if (!fused) {
        TRY(load_weight(ld, NAME(ROLE_WQ), H * D, C, q_rows, 1, &lw->wq));
        TRY(load_weight(ld, NAME(ROLE_WK), Hkv * D, C, kv_rows, 1, &lw->wk));
        TRY(load_weight(ld, NAME(ROLE_WV), Hkv * D, C, kv_rows, 1, &lw->wv));
        TRY(load_weight(ld, NAME(ROLE_BQ), 1, H * D, bias_of(q_rows), c->qkv_bias, &lw->bq));
        TRY(load_weight(ld, NAME(ROLE_BK), 1, Hkv * D, bias_of(kv_rows), c->qkv_bias, &lw->bk));
        TRY(load_weight(ld, NAME(ROLE_BV), 1, Hkv * D, bias_of(kv_rows), c->qkv_bias, &lw->bv));
        return SNP_OK;
    }
    const uint64_t N = (H + 2 * Hkv) * D, k_off = H * D, v_off = (H + Hkv) * D;
    const slice qs = shifted(q_rows, 0, Hl * D);
    const slice ks = shifted(kv_rows, k_off, Hkvl * D), vs = shifted(kv_rows, v_off, Hkvl * D);
    TRY(load_weight(ld, NAME(ROLE_WQKV), N, C, qs, 1, &lw->wq));
    TRY(load_weight(ld, NAME(ROLE_WQKV), N, C, ks, 1, &lw->wk));
    TRY(load_weight(ld, NAME(ROLE_WQKV), N, C, vs, 1, &lw->wv));
    TRY(load_weight(ld, NAME(ROLE_BQKV), 1, N, bias_of(qs), c->qkv_bias, &lw->bq));
    TRY(load_weight(ld, NAME(ROLE_BQKV), 1, N, bias_of(ks), c->qkv_bias, &lw->bk));
    TRY(load_weight(ld, NAME(ROLE_BQKV), 1, N, bias_of(vs), c->qkv_bias, &lw->bv));
#undef NAME
    return SNP_OK;
}

static snp_status load_layer(loader *ld, int l, layer_weights *lw) {
    model *m = ld->m;
    const model_config *c = &m->cfg;
    const uint64_t C = (uint64_t)c->n_embd, D = (uint64_t)c->head_dim;
    const uint64_t H = (uint64_t)c->n_heads, Hkv = (uint64_t)c->n_kv_heads;
    const uint64_t Hl = (uint64_t)m->n_heads_local, Hkvl = (uint64_t)m->n_kv_heads_local;
    const uint64_t F = (uint64_t)c->n_ff, Fl = (uint64_t)m->n_ff_local;
    const uint64_t r = (uint64_t)m->shard.tp_rank, tp = (uint64_t)m->shard.tp_size;
    // KV heads of this rank: its own share, or the one it replicates when tp > Hkv.
    const uint64_t kv0 = Hkv >= tp ? r * Hkvl : r / (tp / Hkv);
    const int full = tp == 1;
    const slice q_rows = {full ? SLICE_NONE : SLICE_ROWS, r * Hl * D, (r + 1) * Hl * D};
    const slice kv_rows = {full ? SLICE_NONE : SLICE_ROWS, kv0 * D, (kv0 + Hkvl) * D};
    const slice o_cols = {full ? SLICE_NONE : SLICE_COLS, r * Hl * D, (r + 1) * Hl * D};
    const slice ff_rows = {full ? SLICE_NONE : SLICE_ROWS, r * Fl, (r + 1) * Fl};
    const slice ff_cols = {full ? SLICE_NONE : SLICE_COLS, r * Fl, (r + 1) * Fl};
    const slice whole = {SLICE_NONE, 0, 0};
    char name[160];
    const checkpoint *ck = &ld->ck;
#define NAME(role) layer_name(ck, role, l, name, sizeof name)
    TRY(load_weight(ld, NAME(ROLE_ATTN_NORM), 1, C, whole, 1, &lw->attn_norm));
    TRY(load_qkv(ld, l, lw, q_rows, kv_rows));
    TRY(load_weight(ld, NAME(ROLE_Q_NORM), 1, D, whole, c->qk_norm, &lw->q_norm));
    TRY(load_weight(ld, NAME(ROLE_K_NORM), 1, D, whole, c->qk_norm, &lw->k_norm));
    TRY(load_weight(ld, NAME(ROLE_WO), C, H * D, o_cols, 1, &lw->wo));
    TRY(load_weight(ld, NAME(ROLE_FFN_NORM), 1, C, whole, 1, &lw->ffn_norm));
    if (c->ffn_fused) {
        // gate and up are column-parallel each: rank r takes columns r·Fl.. of the gate
        // half and the same columns of the up half, so its swiglu pairs them as on tp 1.
        TRY(load_weight(ld, NAME(ROLE_W_GATE_UP), 2 * F, C, shifted(ff_rows, 0, Fl), 1,
                        &lw->w_gate));
        TRY(load_weight(ld, NAME(ROLE_W_GATE_UP), 2 * F, C, shifted(ff_rows, F, Fl), 1, &lw->w_up));
    } else {
        TRY(load_weight(ld, NAME(ROLE_W_GATE), F, C, ff_rows, 1, &lw->w_gate));
        TRY(load_weight(ld, NAME(ROLE_W_UP), F, C, ff_rows, 1, &lw->w_up));
    }
    TRY(load_weight(ld, NAME(ROLE_W_DOWN), C, F, ff_cols, 1, &lw->w_down));
    TRY(load_weight(ld, NAME(ROLE_POST_ATTN_NORM), 1, C, whole, c->post_norms,
                    &lw->post_attn_norm));
    TRY(load_weight(ld, NAME(ROLE_POST_FFN_NORM), 1, C, whole, c->post_norms, &lw->post_ffn_norm));
#undef NAME
    return SNP_OK;
}

// load_rope_factors: llama.cpp's llama3 scaling lives in the tensor rope_freqs.weight
// as one divisor per frequency.
static snp_status load_rope_factors(loader *ld) {
    model *m = ld->m;
    if (!ld->ck.gguf) return SNP_OK;
    tensor_view tv;
    int found;
    TRY(checkpoint_find(&ld->ck, "rope_freqs.weight", &tv, &found));
    if (!found) return SNP_OK;
    const int half = (m->cfg.rope_dims > 0 ? m->cfg.rope_dims : m->cfg.head_dim) / 2;
    if (tv.type != DTYPE_F32 || tv.rows != 1 || tv.cols != (uint64_t)half)
        return snp_fail(SNP_ERR_FORMAT,
                        "model: %s: tensor 'rope_freqs.weight' must be F32 of %d elements, is %s "
                        "%llu x %llu",
                        ld->ck.path, half, dtype_name(tv.type), (unsigned long long)tv.rows,
                        (unsigned long long)tv.cols);
    const float *factors = tv.data;
    for (int i = 0; i < half; i++) {
        if (!(factors[i] > 0))
            return snp_fail(SNP_ERR_FORMAT, "model: %s: rope_freqs.weight[%d] = %g is not positive",
                            ld->ck.path, i, factors[i]);
        m->inv_freq[i] /= factors[i];
    }
    return SNP_OK;
}

static snp_status load(const char *path, backend *be, const model_shard *shard, int dry,
                       model **out) {
    snp_status st = SNP_OK;
    loader ld = {.dry = dry};
    model *m = calloc(1, sizeof *m);
    if (!m) return snp_fail(SNP_ERR_MEMORY, "model: out of memory loading %s", path);
    m->be = be;
    m->shard = shard ? *shard : (model_shard){0, 1};
    m->path = strdup(path);
    ld.m = m;
    TRY_GOTO(st, checkpoint_open(path, &ld.ck), fail);
    if (ld.ck.gguf) TRY_GOTO(st, model_config_from_gguf(ld.ck.gguf, &m->cfg), fail);
    else TRY_GOTO(st, model_read_config(path, &m->cfg), fail);
    TRY_GOTO(st, plan_shard(m, path), fail);

    const model_config *c = &m->cfg;
    m->inv_freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    m->inv_freq_step = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->inv_freq || !m->inv_freq_step || !m->layers || !m->path) {
        st = snp_fail(SNP_ERR_MEMORY, "model: out of memory loading %s", path);
        goto fail;
    }
    model_config_inv_freq(c, m->inv_freq);
    TRY_GOTO(st, load_rope_factors(&ld), fail);

    const uint64_t C = (uint64_t)c->n_embd, V = (uint64_t)c->n_vocab;
    const slice whole = {SLICE_NONE, 0, 0};
    const int gguf = ld.ck.gguf != NULL;
    // Embedding and LM head are replicated on every rank: at V x C they are a small
    // part of a long-context run's memory, and a replicated head lets rank 0 sample
    // without gathering logits (DESIGN.md leaves the choice to us).
    TRY_GOTO(st,
             load_weight(&ld, gguf ? "token_embd.weight" : "model.embed_tokens.weight", V, C,
                         whole, 1, &m->tok_embd),
             fail);
    TRY_GOTO(st,
             load_weight(&ld, gguf ? "output_norm.weight" : "model.norm.weight", 1, C, whole, 1,
                         &m->output_norm),
             fail);
    if (c->tied_embeddings) {
        m->output = m->tok_embd;
    } else {
        TRY_GOTO(st,
                 load_weight(&ld, gguf ? "output.weight" : "lm_head.weight", V, C, whole, 1,
                             &m->output),
                 fail);
    }
    for (int l = 0; l < c->n_layers; l++) TRY_GOTO(st, load_layer(&ld, l, &m->layers[l]), fail);
    if (!dry && be->ops->host_memory) {
        m->mapped = malloc(sizeof *m->mapped);
        if (!m->mapped) {
            st = snp_fail(SNP_ERR_MEMORY, "model: out of memory loading %s", path);
            goto fail;
        }
        *m->mapped = ld.ck;
        m->mapped->path = m->path;
    } else {
        checkpoint_close(&ld.ck);
    }
    *out = m;
    return SNP_OK;
fail:
    checkpoint_close(&ld.ck);
    model_free(m);
    return st;
}

snp_status model_load(const char *path, backend *be, const model_shard *shard, model **out) {
    return load(path, be, shard, 0, out);
}

snp_status model_plan_weights(const char *path, const model_shard *shard, size_t act_bytes,
                              model_config *cfg, uint64_t *out_bytes) {
    model *m = NULL;
    TRY(load(path, NULL, shard, 1, &m));
    *cfg = m->cfg;
    *out_bytes = act_bytes == 2 ? 2 * m->weight_elems : m->weight_bytes;
    model_free(m);
    return SNP_OK;
}

void model_free(model *m) {
    if (!m) return;
    if (!m->be) { // a dry load holds no backend weights
        free(m->layers);
        free(m->inv_freq);
        free(m->inv_freq_step);
        free(m->path);
        free(m);
        return;
    }
    const backend_ops *ops = m->be->ops;
    void *ctx = m->be->ctx;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            layer_weights *lw = &m->layers[l];
            bk_weight *all[] = {
                lw->attn_norm,    lw->wq,     lw->wk,     lw->wv,     lw->bq,
                lw->bk,           lw->bv,     lw->q_norm, lw->k_norm, lw->wo,
                lw->ffn_norm,     lw->w_gate, lw->w_up,   lw->w_down, lw->post_attn_norm,
                lw->post_ffn_norm};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ops->weight_free(ctx, all[i]);
        }
    }
    if (m->output != m->tok_embd) ops->weight_free(ctx, m->output);
    ops->weight_free(ctx, m->tok_embd);
    ops->weight_free(ctx, m->output_norm);
    if (m->mapped) { // after the weights that may borrow from it
        checkpoint_close(m->mapped);
        free(m->mapped);
    }
    free(m->layers);
    free(m->inv_freq);
    free(m->inv_freq_step);
    free(m->path);
    free(m);
}

rope_params model_rope_params(model *m, int seq_len) {
    const model_config *c = &m->cfg;
    rope_params rp = {.mode = c->rope_mode,
                      .inv_freq = m->inv_freq,
                      .cs_scale = c->rope_attn_scale,
                      .n_rot = c->rope_dims};
    // Up to max_position_embeddings dynamic NTK keeps the load-time set (HF's too).
    if (c->rope_scaling != ROPE_SCALING_DYNAMIC || seq_len <= c->rope_original_ctx) return rp;
    if (m->inv_freq_step_len != seq_len) {
        model_config_inv_freq_at(c, seq_len, m->inv_freq_step);
        m->inv_freq_step_len = seq_len;
    }
    rp.inv_freq = m->inv_freq_step;
    return rp;
}
