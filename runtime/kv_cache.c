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
    }
    free(kv->k);
    free(kv->v);
    free(kv);
}
