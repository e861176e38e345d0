// layer_prefetch: one worker thread that prepares layer l + 1 while the caller's
// thread computes layer l (the KV store's reader: checksum, then copy to the
// backend, off the compute thread). One layer is in flight at a time; the caller
// asks for it, later takes it, and only then asks for the next.
#ifndef SNAPTP_LAYER_PREFETCH_H
#define SNAPTP_LAYER_PREFETCH_H

#include "status.h"

typedef struct layer_prefetch layer_prefetch;

// layer_stage_fn: prepares `layer`; runs on the worker (or on the caller's thread
// when the layer was never asked for). Its failure message reaches take().
typedef snp_status (*layer_stage_fn)(void *user, int layer);

snp_status layer_prefetch_start(layer_stage_fn stage, void *user, layer_prefetch **out);

// layer_prefetch_request: starts staging `layer` on the worker; returns at once.
// Fails when a layer is still in flight (take it first).
snp_status layer_prefetch_request(layer_prefetch *p, int layer);

// layer_prefetch_take: waits until `layer` is staged and returns the stage's
// status; a layer not in flight is staged here, on the caller's thread (another
// layer in flight is let finish and dropped first).
snp_status layer_prefetch_take(layer_prefetch *p, int layer);

// layer_prefetch_stop: waits for a layer in flight (its result is dropped) and
// ends the worker. NULL is a no-op.
void layer_prefetch_stop(layer_prefetch *p);

#endif
