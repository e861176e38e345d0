// kv_cache: allocation of the per-layer K/V blocks.
#include "kv_cache.h"

#include <stdlib.h>

size_t kv_cache_bytes(const backend *be, int n_layers, int Hkv, int D, int capacity) {
    return 2 * (size_t)n_layers * (size_t)Hkv * (size_t)capacity * (size_t)D * backend_kv_bytes(be);
}

snp_status kv_cache_init(backend *be, int n_layers, int Hkv, int D, int capacity,
                         kv_cache **out) {
    if (n_layers <= 0 || Hkv <= 0 || D <= 0 || capacity <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "kv_cache: invalid geometry: %d layers, %d KV heads, head size %d, "
                        "capacity %d",
                        n_layers, Hkv, D, capacity);
    snp_status st = SNP_OK;
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return snp_fail(SNP_ERR_MEMORY, "kv_cache: out of memory");
    kv->be = be;
    kv->n_layers = n_layers;
    kv->Hkv = Hkv;
    kv->D = D;
    kv->capacity = capacity;
    kv->k = calloc((size_t)n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)n_layers, sizeof *kv->v);
    if (!kv->k || !kv->v) {
        st = snp_fail(SNP_ERR_MEMORY, "kv_cache: out of memory");
        goto fail;
    }
    const size_t layer_bytes = (size_t)Hkv * (size_t)capacity * (size_t)D * backend_kv_bytes(be);
    for (int l = 0; l < n_layers; l++) {
        TRY_GOTO(st, be->ops->alloc(be->ctx, layer_bytes, &kv->k[l]), fail);
        TRY_GOTO(st, be->ops->alloc(be->ctx, layer_bytes, &kv->v[l]), fail);
    }
    *out = kv;
    return SNP_OK;
fail:
    kv_cache_free(kv);
    return st;
}

void kv_cache_free(kv_cache *kv) {
    if (!kv) return;
    for (int l = 0; kv->k && kv->v && l < kv->n_layers; l++) {
        kv->be->ops->dealloc(kv->be->ctx, kv->k[l]);
        kv->be->ops->dealloc(kv->be->ctx, kv->v[l]);
        if (kv->pos) kv->be->ops->dealloc(kv->be->ctx, kv->pos[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->pos);
    free(kv);
}

void kv_cache_reset(kv_cache *kv) {
    kv->n_keys = 0;
    kv->n_pos_rows = 0;
    kv->pos_offset = 0;
}

static size_t pos_bytes(const kv_cache *kv) {
    return (size_t)kv->Hkv * (size_t)kv->capacity * sizeof(int32_t);
}

snp_status kv_cache_ensure_positions(kv_cache *kv) {
    if (kv->pos) return SNP_OK;
    void **pos = calloc((size_t)kv->n_layers, sizeof *pos);
    if (!pos) return snp_fail(SNP_ERR_MEMORY, "kv_cache: out of memory for key positions");
    for (int l = 0; l < kv->n_layers; l++) {
        const snp_status st = kv->be->ops->alloc(kv->be->ctx, pos_bytes(kv), &pos[l]);
        if (st != SNP_OK) {
            for (int i = 0; i < l; i++) kv->be->ops->dealloc(kv->be->ctx, pos[i]);
            free(pos);
            return st;
        }
    }
    kv->pos = pos;
    return SNP_OK;
}

snp_status kv_cache_copy(kv_cache *dst, const kv_cache *src, void *host) {
    const backend_ops *ops = src->be->ops;
    void *ctx = src->be->ctx;
    if (dst->n_layers != src->n_layers || dst->Hkv != src->Hkv || dst->D != src->D ||
        dst->capacity != src->capacity)
        return snp_fail(SNP_ERR_ARGUMENT, "kv_cache: copy between caches of different geometry");
    const size_t layer_bytes =
        (size_t)src->Hkv * (size_t)src->capacity * (size_t)src->D * backend_kv_bytes(src->be);
    if (src->pos) TRY(kv_cache_ensure_positions(dst));
    for (int l = 0; l < src->n_layers; l++) {
        TRY(ops->download(ctx, host, src->k[l], layer_bytes));
        TRY(ops->upload(ctx, dst->k[l], host, layer_bytes));
        TRY(ops->download(ctx, host, src->v[l], layer_bytes));
        TRY(ops->upload(ctx, dst->v[l], host, layer_bytes));
        if (src->pos) TRY(ops->copy(ctx, dst->pos[l], src->pos[l], pos_bytes(src)));
    }
    dst->n_keys = src->n_keys;
    dst->n_pos_rows = src->n_pos_rows;
    dst->pos_offset = src->pos_offset;
    return SNP_OK;
}
