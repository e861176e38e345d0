// engine: the request loop of one sequence: prefill the prompt, then sample and
// decode token by token until a stop token or the token limit, timing both phases.
// It owns the KV cache of the request; printing is the caller's (a callback).
#ifndef SNAPTP_ENGINE_H
#define SNAPTP_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "sampler.h"
#include "snapkv.h"
#include "status.h"

typedef enum kv_policy {
    KV_POLICY_FULL,   // every prompt position is kept: the baseline
    KV_POLICY_SNAPKV, // SnapKV's per-head selection right after each layer's prefill
    KV_POLICY_COUNT
} kv_policy;

const char *kv_policy_name(kv_policy p);
snp_status kv_policy_parse(const char *s, kv_policy *out);

typedef struct engine_request {
    kv_policy policy;
    snapkv_params snapkv;      // used when policy == KV_POLICY_SNAPKV
    const int32_t *prompt;
    int n_prompt;
    int max_tokens;            // tokens to generate at most
    sampler_params sampling;
    const int32_t *stop_ids;   // end-of-generation ids; the stop token is not emitted
    int n_stop_ids;
    struct comm *comm;         // tensor-parallel run: rank 0 samples and broadcasts
    // The document prefix of the prompt (forward.h), run and saved or loaded from a KV
    // store; NULL: none.
    const forward_prefix *prefix;
    // Host [n_layers, Hkv, rows kept], may be NULL: SnapKV's kept positions.
    int32_t *selected;
} engine_request;

typedef struct engine_stats {
    int prompt_tokens;
    int prefill_tokens_run;    // prompt tokens run through the model (a loaded prefix is not)
    int generated_tokens;
    double prefill_s;          // prompt forward, first token's sampling included
    double decode_s;           // every later token
    double prefill_tokens_per_s;
    double decode_tokens_per_s;
    size_t kv_bytes;           // KV cache allocated for the request on this rank
    size_t kv_bytes_full;      // what the full policy would allocate, for comparison
    int stopped_by_eos;
    // Collectives of this rank (zero without a communicator): all-reduce calls and
    // bytes in the prefill and in the decode steps, and the decode steps counted.
    uint64_t prefill_allreduce_calls, prefill_allreduce_bytes;
    uint64_t decode_allreduce_calls, decode_allreduce_bytes;
    // Of those bytes' traffic, what this rank sent over TCP to other hosts (comm.h).
    uint64_t prefill_allreduce_net_bytes, decode_allreduce_net_bytes;
    int decode_steps;
} engine_stats;

// Called once per generated token (stop tokens excluded). Return non-zero to stop.
typedef int (*engine_token_fn)(void *user, int32_t token);

// engine_generate: runs one request through `f` (and its model). The prompt must
// fit the model's context together with max_tokens.
snp_status engine_generate(forward_ctx *f, model *m, const engine_request *req,
                           engine_token_fn on_token, void *user, engine_stats *stats);

// engine_now_s: a monotonic clock in seconds, for timings.
double engine_now_s(void);

#endif
