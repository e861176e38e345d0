// kv_cache: the keys and values a sequence's decode attends to, one dense block
// per layer laid out [Hkv][capacity][D] on the backend. Which rows it holds (all
// positions, or SnapKV's selection) is the policy's business, not the cache's.
#ifndef SNAPTP_KV_CACHE_H
#define SNAPTP_KV_CACHE_H

#include <stddef.h>

#include "../kernels/backend.h"
#include "status.h"

typedef struct kv_cache {
    backend *be; // borrowed
    int n_layers;
    int Hkv, D;  // KV heads on this rank, head size
    int capacity; // rows allocated per head
    int n_keys;   // rows valid per head (equal across layers between forward calls)
    void **k, **v; // [n_layers] buffers of Hkv * capacity * D elements of the backend's KV type
} kv_cache;

// kv_cache_init: allocates n_layers x 2 buffers; fails naming the bytes asked for.
snp_status kv_cache_init(backend *be, int n_layers, int Hkv, int D, int capacity,
                         kv_cache **out);
void kv_cache_free(kv_cache *kv); // NULL is a no-op

// kv_cache_bytes: bytes a cache of this geometry takes on the backend.
size_t kv_cache_bytes(const backend *be, int n_layers, int Hkv, int D, int capacity);

#endif
