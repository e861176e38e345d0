// cmd_bench: `snaptp bench`: prefill and decode tokens/s at given prompt lengths
// on random token ids (as llama-bench does), repeated, one result per length and
// KV policy (the full cache, SnapKV's compressed one, or both from one weight load).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/engine.h"
#include "../runtime/forward.h"
#include "../runtime/kv_cache.h"
#include "../runtime/memory_plan.h"
#include "../runtime/sampler.h"
#include "../runtime/run_config.h"
#include "../runtime/snapkv_preset.h"
#include "args.h"
#include "commands.h"
#include "session.h"
#include "stats_json.h"

enum { BENCH_MAX_LENGTHS = 32, BENCH_MAX_POLICIES = 2, BENCH_MAX_BATCHES = 16 };

typedef struct bench_result {
    int prompt_tokens, gen_tokens, repeat;
    int batch;                        // sequences decoded together
    double prefill_mean, prefill_std; // tokens/s
    double decode_mean, decode_std;   // tokens/s
    size_t kv_bytes;                  // the decode cache of this rank
} bench_result;

static int parse_lengths(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > (1l << 24)) return -1;
        out[n++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return n;
}

// parse_policies: "full", "snapkv" or both, comma separated, each at most once.
static snp_status parse_policies(const char *s, kv_policy *out, int *n_out) {
    *n_out = 0;
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return snp_fail(SNP_ERR_ARGUMENT, "bench: --kv-policy '%s' is too long", s);
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        kv_policy p;
        TRY(kv_policy_parse(tok, &p));
        for (int i = 0; i < *n_out; i++)
            if (out[i] == p)
                return snp_fail(SNP_ERR_ARGUMENT, "bench: --kv-policy '%s' names '%s' twice", s,
                                tok);
        if (*n_out == BENCH_MAX_POLICIES)
            return snp_fail(SNP_ERR_ARGUMENT, "bench: --kv-policy '%s': at most %d policies", s,
                            BENCH_MAX_POLICIES);
        out[(*n_out)++] = p;
    }
    if (*n_out == 0) return snp_fail(SNP_ERR_ARGUMENT, "bench: --kv-policy is empty");
    return SNP_OK;
}

static void mean_std(const double *x, int n, double *mean, double *std) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
    *std = n > 1 ? sqrt(q / (n - 1)) : 0;
}

// bench_prompt: the prompt of N random ids (one start token for N == 0), the same
// for every run; fails when it and G new tokens exceed the model's context.
static snp_status bench_prompt(const model_config *c, int N, int G, int32_t *ids) {
    const int n_prompt = N > 0 ? N : 1;
    if (n_prompt + G > c->n_ctx)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "bench: %d prompt + %d generated tokens exceed the model's context of %d",
                        N, G, c->n_ctx);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n_prompt; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        ids[i] = (int32_t)(rng % (uint64_t)c->n_vocab);
    }
    return SNP_OK;
}

// bench_one: r repetitions of "prefill N random tokens, then decode G tokens"
// (greedy). N == 0 decodes G tokens after a single start token, as llama-bench's tg.
static snp_status bench_one(model *m, forward_ctx *f, int N, int G, int repeat,
                            kv_policy policy, const snapkv_params *snap, bench_result *out) {
    const model_config *c = &m->cfg;
    snp_status st = SNP_OK;
    double pp[64], tg[64];
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    float *logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    kv_cache *kv = NULL;
    if (!ids || !logits) {
        st = snp_fail(SNP_ERR_MEMORY, "bench: out of memory");
        goto done;
    }
    const int n_prompt = N > 0 ? N : 1;
    TRY_GOTO(st, bench_prompt(c, N, G, ids), done);
    const int snap_on = policy == KV_POLICY_SNAPKV && N > 0;
    if (snap_on) TRY_GOTO(st, snapkv_check_prompt(snap, n_prompt), done);
    const int rows = snap_on ? snapkv_rows_kept(snap, n_prompt) : n_prompt;
    TRY_GOTO(st, kv_cache_init(m->be, c->n_layers, m->n_kv_heads_local, c->head_dim, rows + G, &kv),
             done);
    out->kv_bytes = kv_cache_bytes(m->be, c->n_layers, m->n_kv_heads_local, c->head_dim, rows + G);
    for (int r = 0; r < repeat; r++) {
        kv_cache_reset(kv);
        double t0 = engine_now_s();
        if (snap_on)
            TRY_GOTO(st, forward_prefill_snapkv(f, kv, ids, n_prompt, snap, NULL, logits), done);
        else TRY_GOTO(st, forward_run(f, kv, ids, n_prompt, 0, 0, logits), done);
        double t1 = engine_now_s();
        pp[r] = n_prompt / (t1 - t0);
        for (int g = 0; g < G; g++) {
            int32_t tok = sampler_argmax(logits, c->n_vocab);
            TRY_GOTO(st, forward_run(f, kv, &tok, 1, n_prompt + g, 0, logits), done);
        }
        tg[r] = G > 0 ? G / (engine_now_s() - t1) : 0;
    }
    out->prompt_tokens = N;
    out->gen_tokens = G;
    out->repeat = repeat;
    out->batch = 1;
    mean_std(pp, repeat, &out->prefill_mean, &out->prefill_std);
    mean_std(tg, repeat, &out->decode_mean, &out->decode_std);
done:
    kv_cache_free(kv);
    free(ids);
    free(logits);
    return st;
}

// bench_batch: B sequences, each with its own cache (full, or SnapKV-compressed),
// decoded together by forward_decode_batch: the projections and MLP read the
// weights once for all B tokens, attention runs per sequence over its own cache.
// The prompt is prefilled once and its cache cloned B times; decode tokens/s counts
// every sequence's tokens.
static snp_status bench_batch(model *m, forward_ctx *f, int N, int G, int repeat, int B,
                              kv_policy policy, const snapkv_params *snap, bench_result *out) {
    const model_config *c = &m->cfg;
    const size_t V = (size_t)c->n_vocab;
    snp_status st = SNP_OK;
    double pp[64], tg[64];
    const int n_prompt = N > 0 ? N : 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_prompt);
    int32_t *step_ids = malloc(sizeof(int32_t) * (size_t)B), *pos = malloc(sizeof(int32_t) * (size_t)B);
    float *logits = malloc(sizeof(float) * V * (size_t)B);
    kv_cache **kvs = calloc((size_t)B, sizeof *kvs);
    void *host = NULL;
    if (!ids || !step_ids || !pos || !logits || !kvs) {
        st = snp_fail(SNP_ERR_MEMORY, "bench: out of memory for a batch of %d", B);
        goto done;
    }
    TRY_GOTO(st, bench_prompt(c, N, G, ids), done);
    const int snap_on = policy == KV_POLICY_SNAPKV && N > 0;
    if (snap_on) TRY_GOTO(st, snapkv_check_prompt(snap, n_prompt), done);
    const int rows = snap_on ? snapkv_rows_kept(snap, n_prompt) : n_prompt;
    const int cap = rows + G;
    for (int b = 0; b < B; b++)
        TRY_GOTO(st, kv_cache_init(m->be, c->n_layers, m->n_kv_heads_local, c->head_dim, cap, &kvs[b]),
                 done);
    const size_t layer_bytes =
        (size_t)m->n_kv_heads_local * (size_t)cap * (size_t)c->head_dim * backend_kv_bytes(m->be);
    if (!(host = malloc(layer_bytes))) {
        st = snp_fail(SNP_ERR_MEMORY, "bench: out of memory for a %zu-byte layer", layer_bytes);
        goto done;
    }
    out->kv_bytes = (size_t)B * kv_cache_bytes(m->be, c->n_layers, m->n_kv_heads_local,
                                               c->head_dim, cap);
    for (int r = 0; r < repeat; r++) {
        kv_cache_reset(kvs[0]);
        const double t0 = engine_now_s();
        if (snap_on)
            TRY_GOTO(st, forward_prefill_snapkv(f, kvs[0], ids, n_prompt, snap, NULL, logits), done);
        else TRY_GOTO(st, forward_run(f, kvs[0], ids, n_prompt, 0, 0, logits), done);
        pp[r] = n_prompt / (engine_now_s() - t0);
        for (int b = 1; b < B; b++) TRY_GOTO(st, kv_cache_copy(kvs[b], kvs[0], host), done);
        for (int b = 1; b < B; b++) memcpy(logits + (size_t)b * V, logits, sizeof(float) * V);
        const double t1 = engine_now_s();
        for (int g = 0; g < G; g++) {
            for (int b = 0; b < B; b++) {
                step_ids[b] = sampler_argmax(logits + (size_t)b * V, c->n_vocab);
                pos[b] = n_prompt + g;
            }
            TRY_GOTO(st, forward_decode_batch(f, kvs, step_ids, pos, B, logits), done);
        }
        tg[r] = G > 0 ? (double)G * B / (engine_now_s() - t1) : 0;
    }
    out->prompt_tokens = N;
    out->gen_tokens = G;
    out->repeat = repeat;
    out->batch = B;
    mean_std(pp, repeat, &out->prefill_mean, &out->prefill_std);
    mean_std(tg, repeat, &out->decode_mean, &out->decode_std);
done:
    for (int b = 0; kvs && b < B; b++) kv_cache_free(kvs[b]);
    free(kvs);
    free(host);
    free(ids);
    free(step_ids);
    free(pos);
    free(logits);
    return st;
}

int cmd_bench(int argc, char **argv) {
    session_options so = {.backend_name = "cpu"};
    const char *lengths_arg = "512", *batch_arg = "1";
    int gen = 128, repeat = 3, json = 0, chunk = 512;
    const char *policy_name = "full", *pooling = "max";
    snapkv_params snap = {.pooling = SNAPKV_POOL_MAX}; // 0s: the model's preset fills them
    kv_policy policies[BENCH_MAX_POLICIES];
    int n_policies = 0;
    // A preset (configs/*.json, as cluster/snaptp.sbatch passes) gives the defaults.
    const char *config = args_find_value(argc, argv, "--config");
    run_config rcfg = run_config_defaults();
    if (config) {
        snp_status cst = run_config_load(config, &rcfg);
        if (cst != SNP_OK) {
            fprintf(stderr, "snaptp bench: %s\n", snp_error());
            return 2;
        }
        so.model_path = rcfg.model;
        so.tokenizer_path = rcfg.tokenizer;
        if (rcfg.backend) so.backend_name = rcfg.backend;
        so.n_threads = rcfg.threads;
        so.kv_dtype = rcfg.kv_dtype;
        chunk = rcfg.chunk;
        if (rcfg.kv_policy) policy_name = rcfg.kv_policy;
        if (rcfg.pooling) pooling = rcfg.pooling;
        snap = rcfg.snapkv;
    }
    const arg_spec specs[] = {
        {"--config", ARG_STRING, &config, "PATH", "runtime preset (configs/*.json): model, backend, threads, chunk, KV policy; flags override it", NULL},
        {"--model", ARG_STRING, &so.model_path, "PATH", "GGUF file or safetensors directory", NULL},
        {"--prompt-tokens", ARG_STRING, &lengths_arg, "N,N,..",
         "prompt lengths to measure (512); 0 = decode only", NULL},
        {"--gen-tokens", ARG_COUNT, &gen, "N", "tokens decoded after each prompt (128)", NULL},
        {"--batch", ARG_STRING, &batch_arg, "B,B,..",
         "sequences decoded together, each with its own cache (1: the single-sequence path); "
         "decode tokens/s counts them all (1)", NULL},
        {"--repeat", ARG_POSITIVE, &repeat, "N", "repetitions per length (3)", NULL},
        {"--threads", ARG_POSITIVE, &so.n_threads, "N",
         "CPU threads (default: the cores this process may run on, split between the ranks of a "
         "host; env SNAPTP_THREADS)",
         NULL},
        {"--no-mmap", ARG_FLAG, &so.no_mmap, NULL,
         "copy weights into memory instead of using the file's mapping", NULL},
        {"--backend", ARG_STRING, &so.backend_name, "NAME", "cpu or cuda (default cpu)", NULL},
        {"--kv-dtype", ARG_STRING, &so.kv_dtype, "f16|f32|bf16", "KV cache element type (CPU: f16, f32 halves nothing but is the exact reference; CUDA: bf16)", NULL},
        {"--chunk", ARG_POSITIVE, &chunk, "N", "prefill chunk in tokens (512)", NULL},
        {"--kv-policy", ARG_STRING, &policy_name, "full|snapkv|full,snapkv",
         "KV policy (full); both: each length under each, the weights loaded once", NULL},
        {"--window", ARG_POSITIVE, &snap.window, "N", "SnapKV window (the model's preset, else 32)", NULL},
        {"--budget", ARG_POSITIVE, &snap.budget, "N", "SnapKV rows per KV head (the model's preset, else 2048)", NULL},
        {"--kernel", ARG_POSITIVE, &snap.kernel, "N", "SnapKV pooling kernel (the model's preset, else 7)", NULL},
        {"--pooling", ARG_STRING, &pooling, "avg|max", "SnapKV pooling (max)", NULL},
        {"--json", ARG_FLAG, &json, NULL, "one JSON object per length on stdout", NULL},
    };
    const int n_specs = sizeof specs / sizeof specs[0];
    int rc = args_parse(argc, argv, specs, n_specs, "bench",
                        "usage: snaptp bench --model PATH [--prompt-tokens 512,4096] [options]");
    if (rc) {
        run_config_free(&rcfg);
        return rc == 1 ? 0 : rc;
    }
    int lengths[BENCH_MAX_LENGTHS], batches[BENCH_MAX_BATCHES];
    int n_lengths = parse_lengths(lengths_arg, lengths, BENCH_MAX_LENGTHS);
    int n_batches = parse_lengths(batch_arg, batches, BENCH_MAX_BATCHES);
    int bad_batch = n_batches <= 0;
    for (int i = 0; i < n_batches; i++) bad_batch |= batches[i] < 1 || batches[i] > chunk;
    const char *bad = !so.model_path ? "give --model PATH (or a --config with a model)"
                      : n_lengths <= 0 ? "--prompt-tokens must be a comma-separated list of lengths >= 0"
                      : bad_batch      ? "--batch must be a comma-separated list of 1 to --chunk (512) sequences"
                      : repeat > 64    ? "--repeat must be at most 64"
                                       : NULL;
    if (bad) {
        const int show = so.model_path && (n_lengths <= 0 || bad_batch);
        fprintf(stderr, "snaptp bench: %s%s%s%s\n", bad, show ? " (got '" : "",
                !show ? "" : n_lengths <= 0 ? lengths_arg : batch_arg, show ? "')" : "");
        run_config_free(&rcfg);
        return 2;
    }
    session s;
    snp_status st = session_init_comm(&argc, &argv, &s);
    forward_ctx *f = NULL;
    if (st != SNP_OK) goto done;
    if ((st = parse_policies(policy_name, policies, &n_policies)) != SNP_OK) goto done;
    if ((st = snapkv_pooling_parse(pooling, &snap.pooling)) != SNP_OK) goto done;
    if ((st = session_open(&so, &s)) != SNP_OK) goto done;
    const snapkv_preset *preset = snapkv_params_fill(&snap, &s.m->cfg);
    for (int p = 0; p < n_policies; p++)
        if (policies[p] == KV_POLICY_SNAPKV && (st = snapkv_params_validate(&snap)) != SNP_OK)
            goto done;
    if ((st = forward_init(s.m, chunk, &f)) != SNP_OK) goto done;
    if ((st = forward_set_comm(f, s.comm)) != SNP_OK) goto done;
    const int root = session_is_root(&s);
    if (!json && root)
        printf("# model %s, backend %s, threads %d\n"
               "# %8s %8s %6s %-7s %20s %20s\n",
               s.m->path, s.be->ops->name, so.n_threads, "prompt", "gen", "batch", "kv",
               "prefill tokens/s", "decode tokens/s");
    // Lengths outer, then batches, policies inner: a run cut short still has both
    // policies at the shorter lengths, which is what a comparison needs.
    const int per_length = n_batches * n_policies;
    for (int i = 0; i < n_lengths * per_length; i++) {
        const kv_policy policy = policies[i % n_policies];
        const int B = batches[i % per_length / n_policies], N = lengths[i / per_length];
        bench_result r = {0};
        st = B == 1 ? bench_one(s.m, f, N, gen, repeat, policy, &snap, &r)
                    : bench_batch(s.m, f, N, gen, repeat, B, policy, &snap, &r);
        if (st != SNP_OK) goto done;
        if (!root) continue;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", s.m->path);
            cJSON_AddStringToObject(o, "backend", s.be->ops->name);
            cJSON_AddNumberToObject(o, "threads", so.n_threads);
            json_add_comm_path(o, &s);
            cJSON_AddNumberToObject(o, "prompt_tokens", r.prompt_tokens);
            cJSON_AddNumberToObject(o, "gen_tokens", r.gen_tokens);
            cJSON_AddNumberToObject(o, "repeat", r.repeat);
            cJSON_AddNumberToObject(o, "batch", r.batch);
            cJSON_AddStringToObject(o, "kv_policy", kv_policy_name(policy));
            if (policy == KV_POLICY_SNAPKV) {
                cJSON_AddNumberToObject(o, "window", snap.window);
                cJSON_AddNumberToObject(o, "budget", snap.budget);
                cJSON_AddNumberToObject(o, "kernel", snap.kernel);
                cJSON_AddStringToObject(o, "pooling", snapkv_pooling_name(snap.pooling));
                if (preset) cJSON_AddStringToObject(o, "snapkv_preset", preset->name);
                else cJSON_AddNullToObject(o, "snapkv_preset");
            }
            cJSON_AddStringToObject(o, "kv_dtype", dtype_name(s.be->ops->kv_type(s.be->ctx)));
            cJSON_AddNumberToObject(o, "kv_bytes", (double)r.kv_bytes);
            cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)memory_peak_rss_bytes());
            if (r.prompt_tokens > 0) {
                cJSON_AddNumberToObject(o, "prefill_tokens_per_s", r.prefill_mean);
                cJSON_AddNumberToObject(o, "prefill_tokens_per_s_std", r.prefill_std);
            } else {
                cJSON_AddNullToObject(o, "prefill_tokens_per_s");
            }
            cJSON_AddNumberToObject(o, "decode_tokens_per_s", r.decode_mean);
            cJSON_AddNumberToObject(o, "decode_tokens_per_s_std", r.decode_std);
            cJSON_AddNumberToObject(o, "decode_tokens_per_s_per_seq", r.decode_mean / r.batch);
            char *js = cJSON_PrintUnformatted(o);
            if (js) printf("%s\n", js);
            free(js);
            cJSON_Delete(o);
        } else {
            printf("  %8d %8d %6d %-7s %12.1f ± %5.1f %12.1f ± %5.1f\n", r.prompt_tokens,
                   r.gen_tokens, r.batch, kv_policy_name(policy), r.prefill_mean, r.prefill_std,
                   r.decode_mean, r.decode_std);
        }
        fflush(stdout);
    }
done:
    forward_free(f);
    int code = st != SNP_OK ? session_report_error(&s, "bench", st) : 0;
    session_close(&s);
    run_config_free(&rcfg);
    return code;
}
