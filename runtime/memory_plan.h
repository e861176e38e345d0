// memory_plan: what a request will hold on this rank, computed from the config
// and the shard before any weight is loaded or token run (DESIGN.md, "Long
// prefill"), and the check against a memory limit.
#ifndef SNAPTP_MEMORY_PLAN_H
#define SNAPTP_MEMORY_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine.h"
#include "model_config.h"

typedef struct memory_plan {
    int prompt_tokens, max_new_tokens, chunk, tp_size;
    kv_policy policy;
    uint64_t weights;        // this rank's weights as the backend stores them
    uint64_t hidden;         // hidden states of the prompt [L, C]
    uint64_t layer_kv;       // one layer's full K/V (snapkv prefill buffer), 0 for full
    uint64_t kv_cache;       // the cache decode attends to, all layers
    uint64_t kv_cache_full;  // the same for the full policy, for comparison
    uint64_t workspace;      // chunk buffers, logits, SnapKV scores
    uint64_t total;
    // A KV store of the prompt's document prefix (qa --kv-store), on disk, not in
    // `total`: reading it maps the file, whose pages are the kernel's cache.
    int store_prefix_tokens;       // the document prefix it would hold
    uint64_t store_bytes;          // this rank's file (tensor data)
    uint64_t store_bytes_per_token;
    // Reading a store through the prefetcher (device backends) stages one layer of
    // it on the backend: K, V and a row index. In `total` once memory_plan_add_store_staging.
    uint64_t store_staging;
    int store_staging_counted;
} memory_plan;

// memory_plan_compute: the plan for L prompt tokens and `max_new` generated ones.
// weight_bytes comes from model_plan_weights; act_bytes from the backend; kv_bytes
// is one K/V element (backend_kv_type_for: f16 or fp32 on CPU, bf16 on CUDA).
void memory_plan_compute(const model_config *c, int tp_size, uint64_t weight_bytes,
                         size_t act_bytes, size_t kv_bytes, int L, int max_new, int chunk,
                         kv_policy policy, const snapkv_params *snap, memory_plan *out);

// memory_plan_set_store: the store figures for a document prefix of n_prefix tokens
// (memory_plan_compute assumes the whole prompt is the document).
void memory_plan_set_store(memory_plan *p, const model_config *c, int tp_size, size_t kv_bytes,
                           int n_prefix);

// memory_plan_add_store_staging: counts store_staging in total (qa, when it will
// read a store on a device backend). Idempotent.
void memory_plan_add_store_staging(memory_plan *p);

// memory_plan_check: fails with the plan's breakdown when total > limit_bytes.
snp_status memory_plan_check(const memory_plan *p, uint64_t limit_bytes, const char *limit_source);

// memory_plan_print: a table with '#' header lines, MiB.
void memory_plan_print(FILE *out, const memory_plan *p);

// memory_machine_bytes: physical memory of this machine (0 if unknown).
uint64_t memory_machine_bytes(void);

// memory_parse_size: "8G", "512M", "1048576" to bytes; fails naming the text.
snp_status memory_parse_size(const char *s, uint64_t *out);

// memory_peak_rss_bytes: this process's peak resident set so far.
uint64_t memory_peak_rss_bytes(void);

#endif
