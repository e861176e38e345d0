// scheduler: continuous batching of many sequences over one model, each with its
// own KV cache (full or SnapKV-compressed), for `snaptp serve` (DESIGN.md,
// "Serving"). One step is: at most one layer of the pending prefill, then one
// decode step of every running sequence, so a long prompt never holds the running
// batch up for more than one layer's time. Admission is by the memory plan: a
// sequence is let in when its cache, and the transient buffers of its prefill, fit
// the KV pool beside the caches already running.
//
// Under tensor parallelism every rank runs scheduler_run: rank 0 decides each step
// (which prefill layer, which sequences decode with which tokens) and broadcasts it
// as a step plan; the other ranks run the same forward in lockstep. Only rank 0
// samples, holds the waiting queue and calls back; submit, cancel, snapshot and
// drain are rank 0's, and may be called from any thread.
#ifndef SNAPTP_SCHEDULER_H
#define SNAPTP_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "forward.h"
#include "sampler.h"
#include "snapkv.h"
#include "status.h"

struct comm;

typedef enum sched_finish {
    SCHED_FINISH_STOP,      // an end-of-generation token, or the caller's on_token asked
    SCHED_FINISH_LENGTH,    // max_tokens generated
    SCHED_FINISH_CANCELLED, // scheduler_cancel (a client went away)
    SCHED_FINISH_ERROR,     // the request could not run (the message is in the stats)
} sched_finish;

const char *sched_finish_name(sched_finish f); // "stop", "length", "cancelled", "error"

typedef struct sched_seq_stats {
    int prompt_tokens;
    int generated_tokens;
    double queued_s;  // submit to the start of its prefill
    double ttft_s;    // submit to its first token
    double total_s;   // submit to its end
    size_t kv_bytes;  // its cache on this rank
    char error[256];  // SCHED_FINISH_ERROR: why
} sched_seq_stats;

// Called on rank 0, on the thread inside scheduler_run. on_token: one generated token
// (end-of-generation tokens are not passed); return non-zero to end the sequence
// (SCHED_FINISH_STOP). on_done: exactly once per submitted request, last.
typedef struct sched_callbacks {
    int (*on_token)(void *user, int32_t token);
    void (*on_done)(void *user, sched_finish reason, const sched_seq_stats *stats);
    void *user;
} sched_callbacks;

typedef struct sched_request {
    kv_policy policy;
    snapkv_params snapkv; // policy == KV_POLICY_SNAPKV: filled and valid
    sampler_params sampling;
    const int32_t *prompt; // copied by scheduler_submit
    int n_prompt;
    int max_tokens;        // >= 1
    int ignore_eos;        // generate max_tokens whatever the model says
    sched_callbacks cb;
} sched_request;

typedef struct sched_options {
    int max_seqs;          // sequences decoding at once (<= the forward's chunk)
    int max_queue;         // requests waiting beyond the running ones; more are refused
    uint64_t kv_pool_bytes; // this rank's memory for caches and prefill buffers
    const int32_t *stop_ids; // end-of-generation ids (copied)
    int n_stop_ids;
} sched_options;

typedef struct scheduler scheduler;

// scheduler_create: every rank, with the same options. f must have its communicator
// set (forward_set_comm) and a chunk of at least max_seqs.
snp_status scheduler_create(model *m, forward_ctx *f, struct comm *c, const sched_options *opt,
                            scheduler **out);
void scheduler_free(scheduler *s); // NULL is a no-op

// scheduler_check: whether a request could ever run: the prompt and max_tokens within
// the model's context, the SnapKV settings, and its memory within the KV pool. Fails
// with SNP_ERR_ARGUMENT naming the limit; stateless, any thread.
snp_status scheduler_check(const scheduler *s, const sched_request *r);

// scheduler_submit: queues a request (after scheduler_check) and returns its id.
// Refuses with SNP_ERR_BUSY when max_queue requests already wait, and with
// SNP_ERR_UNSUPPORTED once draining. On success the callbacks will be called (on
// scheduler_run's thread); on failure never.
snp_status scheduler_submit(scheduler *s, const sched_request *r, uint64_t *out_id);

// scheduler_cancel: ends a request early (its on_done says cancelled) and frees its
// cache at the next step; an unknown or finished id is ignored.
void scheduler_cancel(scheduler *s, uint64_t id);

typedef struct sched_snapshot {
    int running;      // admitted: prefilling or decoding
    int waiting;      // queued
    int prefilling;   // 0 or 1
    uint64_t kv_bytes_used;  // caches and the prefill's buffers, this rank
    uint64_t kv_bytes_pool;
    uint64_t steps, decode_steps, prefill_layers;
    double prefill_s, decode_s; // seconds in prefill layers, in decode steps (this rank)
    uint64_t prompt_tokens_total, generated_tokens_total;
    uint64_t requests_finished[SCHED_FINISH_ERROR + 1];
    int draining;
} sched_snapshot;

void scheduler_snapshot(scheduler *s, sched_snapshot *out);

// scheduler_drain: refuses new requests; scheduler_run returns once every queued and
// running request has finished. scheduler_stop: the same, cancelling them first.
void scheduler_drain(scheduler *s);
void scheduler_stop(scheduler *s);

// scheduler_run: the step loop, on every rank; returns SNP_OK after a drain (rank 0
// decides, the others follow). A failed step fails here on the rank at fault; the
// caller ends the job (comm_fail), since its peers cannot step alone.
snp_status scheduler_run(scheduler *s);

#endif
