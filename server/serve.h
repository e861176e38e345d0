// serve: what the HTTP side of `snaptp serve` shares on rank 0: the model's
// identity and tokenizer, the scheduler it submits to, the server's defaults for a
// request, and its metrics. Built by launcher/cmd_serve.c.
#ifndef SNAPTP_SERVE_H
#define SNAPTP_SERVE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/engine.h"
#include "../runtime/model.h"
#include "../runtime/scheduler.h"
#include "../runtime/tokenizer.h"
#include "metrics.h"

typedef struct serve_defaults {
    kv_policy policy;
    snapkv_params snapkv;   // filled (the model's preset under the config's values)
    sampler_params sampling; // temperature etc. when a request gives none
    int max_tokens;         // when a request gives none
} serve_defaults;

typedef struct serve_ctx {
    const char *model_id;   // what /v1/models lists and requests may name
    const char *model_path;
    const tokenizer *tok;
    const model_config *cfg;
    int has_chat;           // the model has a chat template (or its family is known)
    scheduler *sched;
    metrics *met;
    serve_defaults def;
    const char *api_key;    // NULL: no authentication
    size_t max_body_bytes;
    int tp_size;
    double created;         // unix time the server started (/v1/models' created)
    atomic_int live;        // completions not yet freed (a drain waits for 0)
} serve_ctx;

#endif
