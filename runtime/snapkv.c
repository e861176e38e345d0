// snapkv: SnapKV parameters and per-layer compression, over the backend's ops.
#include "snapkv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../comm/comm.h"

struct snapkv_workspace {
    backend *be;
    snapkv_params p;
    int L, H, Hkv, D;
    void *q_win;     // [w, H, D] activations
    // Dual Chunk Attention (chunk_len > 0): the window's rotations for the previous
    // chunk and for earlier ones, [w, H, D] each.
    int dca_chunk_len;
    void *q_win_succ, *q_win_inter;
    float *votes;    // [H, P] fp32
    float *pooled;   // [Hkv, P] fp32
    int32_t *idx;    // [Hkv, rows_kept] int32
    int32_t *idx_host;
    struct comm *replicas; // ranks sharing this rank's KV head, or NULL
    float *pooled_host;    // [Hkv, P], for joining replicas' votes
};

snapkv_params snapkv_params_default(void) {
    return (snapkv_params){.window = 32, .budget = 2048, .kernel = 7, .pooling = SNAPKV_POOL_MAX};
}

snp_status snapkv_params_validate(const snapkv_params *p) {
    if (p->window < 1)
        return snp_fail(SNP_ERR_ARGUMENT, "snapkv: --window %d must be at least 1", p->window);
    if (p->budget <= p->window)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "snapkv: --budget %d must be larger than --window %d (the budget counts "
                        "the window)",
                        p->budget, p->window);
    if (p->kernel < 1 || p->kernel % 2 == 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "snapkv: --kernel %d must be odd and at least 1 (an even kernel would "
                        "select a position past the prefix)",
                        p->kernel);
    if ((unsigned)p->pooling >= SNAPKV_POOL_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "snapkv: unknown pooling %d", (int)p->pooling);
    return SNP_OK;
}

snp_status snapkv_check_prompt(const snapkv_params *p, int L) {
    if (L <= p->window)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "snapkv: the prompt has %d tokens, not more than --window %d: the "
                        "observation window must leave a prefix to select from",
                        L, p->window);
    return SNP_OK;
}

int snapkv_rows_kept(const snapkv_params *p, int L) { return L <= p->budget ? L : p->budget; }

const char *snapkv_pooling_name(snapkv_pooling p) {
    return p == SNAPKV_POOL_AVG ? "avg" : p == SNAPKV_POOL_MAX ? "max" : "?";
}

snp_status snapkv_pooling_parse(const char *s, snapkv_pooling *out) {
    if (strcmp(s, "avg") == 0) *out = SNAPKV_POOL_AVG;
    else if (strcmp(s, "max") == 0) *out = SNAPKV_POOL_MAX;
    else return snp_fail(SNP_ERR_ARGUMENT, "snapkv: --pooling '%s' must be avg or max", s);
    return SNP_OK;
}

snp_status snapkv_workspace_init(backend *be, const snapkv_params *p, int L, int H, int Hkv, int D,
                                 snapkv_workspace **out) {
    TRY(snapkv_params_validate(p));
    TRY(snapkv_check_prompt(p, L));
    snp_status st = SNP_OK;
    snapkv_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return snp_fail(SNP_ERR_MEMORY, "snapkv: out of memory");
    *ws = (snapkv_workspace){.be = be, .p = *p, .L = L, .H = H, .Hkv = Hkv, .D = D};
    const size_t P = (size_t)(L - p->window), kept = (size_t)snapkv_rows_kept(p, L);
    void *votes = NULL, *pooled = NULL, *idx = NULL;
    TRY_GOTO(st, be->ops->alloc(be->ctx, (size_t)p->window * H * D * be->ops->act_bytes, &ws->q_win),
             fail);
    TRY_GOTO(st, be->ops->alloc(be->ctx, P * (size_t)H * sizeof(float), &votes), fail);
    ws->votes = votes;
    TRY_GOTO(st, be->ops->alloc(be->ctx, P * (size_t)Hkv * sizeof(float), &pooled), fail);
    ws->pooled = pooled;
    TRY_GOTO(st, be->ops->alloc(be->ctx, kept * (size_t)Hkv * sizeof(int32_t), &idx), fail);
    ws->idx = idx;
    ws->idx_host = malloc(kept * (size_t)Hkv * sizeof(int32_t));
    if (!ws->idx_host) {
        st = snp_fail(SNP_ERR_MEMORY, "snapkv: out of memory");
        goto fail;
    }
    *out = ws;
    return SNP_OK;
fail:
    snapkv_workspace_free(ws);
    return st;
}

void snapkv_workspace_free(snapkv_workspace *ws) {
    if (!ws) return;
    const backend_ops *ops = ws->be->ops;
    ops->dealloc(ws->be->ctx, ws->q_win);
    ops->dealloc(ws->be->ctx, ws->q_win_succ);
    ops->dealloc(ws->be->ctx, ws->q_win_inter);
    ops->dealloc(ws->be->ctx, ws->votes);
    ops->dealloc(ws->be->ctx, ws->pooled);
    ops->dealloc(ws->be->ctx, ws->idx);
    free(ws->idx_host);
    free(ws->pooled_host);
    free(ws);
}

void snapkv_workspace_set_replicas(snapkv_workspace *ws, struct comm *group) {
    ws->replicas = group && comm_size(group) > 1 ? group : NULL;
}

// join_replicas: pooled = mean over the replicas of their pooled votes. Each holds
// the mean over its own query heads of the KV head, and each holds as many, so
// the mean of means is the mean over all of the head's query heads.
static snp_status join_replicas(snapkv_workspace *ws) {
    const backend_ops *ops = ws->be->ops;
    const size_t n = (size_t)ws->Hkv * (size_t)(ws->L - ws->p.window);
    if (!ws->pooled_host && !(ws->pooled_host = malloc(n * sizeof(float))))
        return snp_fail(SNP_ERR_MEMORY, "snapkv: out of memory joining replica votes");
    TRY(ops->download(ws->be->ctx, ws->pooled_host, ws->pooled, n * sizeof(float)));
    TRY(comm_all_reduce_sum_f32(ws->replicas, ws->pooled_host, n));
    const float inv = 1.0f / (float)comm_size(ws->replicas);
    for (size_t i = 0; i < n; i++) ws->pooled_host[i] *= inv;
    return ops->upload(ws->be->ctx, ws->pooled, ws->pooled_host, n * sizeof(float));
}

void *snapkv_window_queries(snapkv_workspace *ws) { return ws->q_win; }

snp_status snapkv_workspace_set_dca(snapkv_workspace *ws, int chunk_len) {
    const backend *be = ws->be;
    const size_t bytes = (size_t)ws->p.window * (size_t)ws->H * (size_t)ws->D * be->ops->act_bytes;
    if (chunk_len <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "snapkv: dual chunk length %d must be positive",
                        chunk_len);
    if (!ws->q_win_succ) TRY(be->ops->alloc(be->ctx, bytes, &ws->q_win_succ));
    if (!ws->q_win_inter) TRY(be->ops->alloc(be->ctx, bytes, &ws->q_win_inter));
    ws->dca_chunk_len = chunk_len;
    return SNP_OK;
}

void snapkv_window_queries_dca(snapkv_workspace *ws, void **q_succ, void **q_inter) {
    *q_succ = ws->q_win_succ;
    *q_inter = ws->q_win_inter;
}

snp_status snapkv_kept_positions(snapkv_workspace *ws, int32_t *dst, int dst_cap) {
    const int kept = snapkv_rows_kept(&ws->p, ws->L);
    if (dst_cap < kept)
        return snp_fail(SNP_ERR_ARGUMENT, "snapkv: %d kept positions exceed %d rows", kept, dst_cap);
    for (int g = 0; g < ws->Hkv; g++)
        TRY(ws->be->ops->copy(ws->be->ctx, dst + (size_t)g * (size_t)dst_cap,
                              ws->idx + (size_t)g * (size_t)kept, sizeof(int32_t) * (size_t)kept));
    return SNP_OK;
}

snp_status snapkv_compress_layer(snapkv_workspace *ws, const void *full_k, const void *full_v,
                                 int full_cap, void *cache_k, void *cache_v, int cache_cap,
                                 int32_t *selected) {
    const backend_ops *ops = ws->be->ops;
    void *ctx = ws->be->ctx;
    const int L = ws->L, kept = snapkv_rows_kept(&ws->p, L);
    if (kept > cache_cap)
        return snp_fail(SNP_ERR_ARGUMENT, "snapkv: %d kept rows exceed the cache capacity %d", kept,
                        cache_cap);
    if (L <= ws->p.budget) {
        // SNAPKV.md step 1: a prompt within the budget keeps every position.
        for (int g = 0; g < ws->Hkv; g++)
            for (int i = 0; i < L; i++) ws->idx_host[(size_t)g * (size_t)L + (size_t)i] = i;
        TRY(ops->upload(ctx, ws->idx, ws->idx_host, sizeof(int32_t) * (size_t)ws->Hkv * (size_t)L));
    } else {
        const attn_dca dca = {
            .chunk_len = ws->dca_chunk_len,
            .q_succ = ws->q_win_succ,
            .q_inter = ws->q_win_inter,
        };
        const snapkv_shape s = {
            .H = ws->H,
            .Hkv = ws->Hkv,
            .D = ws->D,
            .S_cap = full_cap,
            .L = L,
            .w = ws->p.window,
            .budget = ws->p.budget,
            .kernel = ws->p.kernel,
            .pooling = ws->p.pooling,
            .scale = 1.0f / sqrtf((float)ws->D),
            .dca = ws->dca_chunk_len > 0 ? &dca : NULL,
        };
        TRY(ops->snapkv_votes(ctx, ws->votes, ws->q_win, full_k, &s));
        TRY(ops->snapkv_pool(ctx, ws->pooled, ws->votes, &s));
        if (ws->replicas) TRY(join_replicas(ws));
        TRY(ops->snapkv_select(ctx, ws->idx, ws->pooled, &s));
    }
    TRY(ops->kv_gather(ctx, cache_k, full_k, ws->idx, ws->Hkv, ws->D, kept, full_cap, cache_cap, 0));
    TRY(ops->kv_gather(ctx, cache_v, full_v, ws->idx, ws->Hkv, ws->D, kept, full_cap, cache_cap, 0));
    if (selected)
        TRY(ops->download(ctx, selected, ws->idx, sizeof(int32_t) * (size_t)ws->Hkv * (size_t)kept));
    return SNP_OK;
}
