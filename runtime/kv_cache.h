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
    // Key positions, for Dual Chunk Attention (whose attention depends on them): row
    // r < n_pos_rows of layer l, KV head h is at pos[l][h * capacity + r] (SnapKV's
    // kept positions; int32 backend memory, NULL until kv_cache_ensure_positions);
    // every other row r is at position r + pos_offset. Other models ignore them.
    void **pos;
    int n_pos_rows, pos_offset;
} kv_cache;

// kv_cache_init: allocates n_layers x 2 buffers; fails naming the bytes asked for.
snp_status kv_cache_init(backend *be, int n_layers, int Hkv, int D, int capacity,
                         kv_cache **out);
void kv_cache_free(kv_cache *kv); // NULL is a no-op

// kv_cache_reset: empties the cache for a new sequence (rows and positions).
void kv_cache_reset(kv_cache *kv);

// kv_cache_ensure_positions: allocates the per-layer position arrays (once).
snp_status kv_cache_ensure_positions(kv_cache *kv);

// kv_cache_copy: dst takes src's rows and positions (same geometry), layer by layer
// through `host`, a buffer of at least one layer's K (or V) bytes.
snp_status kv_cache_copy(kv_cache *dst, const kv_cache *src, void *host);

// kv_cache_bytes: bytes a cache of this geometry takes on the backend.
size_t kv_cache_bytes(const backend *be, int n_layers, int Hkv, int D, int capacity);

#endif
