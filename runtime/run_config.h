// run_config: the runtime presets of configs/*.json (model, backend, parallelism,
// KV policy, SnapKV settings, chunk, sampling, memory limit). A file sets defaults;
// the launcher's flags, parsed after it, override them.
#ifndef SNAPTP_RUN_CONFIG_H
#define SNAPTP_RUN_CONFIG_H

#include <stdint.h>

#include "sampler.h"
#include "snapkv.h"
#include "status.h"

typedef struct run_config {
    const char *model;     // strings point into the config's storage or argv
    const char *tokenizer;
    const char *backend;
    const char *kv_policy; // "full" | "snapkv", or NULL: the command's default
    const char *pooling;   // "avg" | "max"
    const char *mem_limit; // "8G", or NULL for the machine's memory
    const char *kv_dtype;  // "f16" | "f32" | "bf16", or NULL for the backend's default
    int threads;
    int chunk;
    int tp;                // expected number of ranks; 0 = whatever mpirun gives
    int max_tokens;
    snapkv_params snapkv;  // window, budget, kernel (pooling via the string)
    sampler_params sampling;
    void *storage;         // the parsed JSON the strings live in
} run_config;

// run_config_defaults: snaptp's defaults (cpu, chunk 512, greedy, 256 new tokens);
// kv_policy NULL (each command's default) and SnapKV's window, budget and kernel 0
// (the model's preset fills them, snapkv_preset.h).
run_config run_config_defaults(void);

// run_config_load: applies the keys of a configs/*.json file over *cfg. An
// unknown key or a value of the wrong type fails naming the file and key.
snp_status run_config_load(const char *path, run_config *cfg);

void run_config_free(run_config *cfg); // frees the storage only

#endif
