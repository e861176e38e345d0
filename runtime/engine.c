// engine: prefill + decode loop of one request, full KV or SnapKV.
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../comm/comm.h"
#include "kv_cache.h"

double engine_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *kv_policy_name(kv_policy p) {
    return p == KV_POLICY_FULL ? "full" : p == KV_POLICY_SNAPKV ? "snapkv" : "?";
}

snp_status kv_policy_parse(const char *s, kv_policy *out) {
    if (strcmp(s, "full") == 0) *out = KV_POLICY_FULL;
    else if (strcmp(s, "snapkv") == 0) *out = KV_POLICY_SNAPKV;
    else return snp_fail(SNP_ERR_ARGUMENT, "--kv-policy '%s' must be full or snapkv", s);
    return SNP_OK;
}

// next_token: rank 0 samples; under tensor parallelism the token is broadcast, so
// every rank feeds the same token even if their logits differ in the last bit.
static snp_status next_token(const engine_request *req, sampler *smp, float *logits,
                             const int32_t *history, int n_history, int32_t *token) {
    const int multi = req->comm && comm_size(req->comm) > 1;
    if (!multi || comm_rank(req->comm) == 0)
        TRY(sampler_sample(smp, logits, history, n_history, token));
    if (multi) TRY(comm_broadcast(req->comm, token, sizeof *token, 0));
    return SNP_OK;
}

static int is_stop(const engine_request *req, int32_t token) {
    for (int i = 0; i < req->n_stop_ids; i++)
        if (req->stop_ids[i] == token) return 1;
    return 0;
}

snp_status engine_generate(forward_ctx *f, model *m, const engine_request *req,
                           engine_token_fn on_token, void *user, engine_stats *stats) {
    const model_config *c = &m->cfg;
    memset(stats, 0, sizeof *stats);
    if (req->n_prompt <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "engine: the prompt is empty (0 tokens)");
    if (req->max_tokens < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "engine: max tokens %d must be >= 0", req->max_tokens);
    if ((long)req->n_prompt + req->max_tokens > (long)c->n_ctx)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "engine: %d prompt tokens + %d new tokens exceed the model's context "
                        "of %d tokens",
                        req->n_prompt, req->max_tokens, c->n_ctx);
    snp_status st = SNP_OK;
    kv_cache *kv = NULL;
    sampler *smp = NULL;
    float *logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    int32_t *history = malloc(sizeof(int32_t) * ((size_t)req->n_prompt + (size_t)req->max_tokens + 1));
    if (!logits || !history) {
        st = snp_fail(SNP_ERR_MEMORY, "engine: out of memory");
        goto done;
    }
    memcpy(history, req->prompt, sizeof(int32_t) * (size_t)req->n_prompt);
    int n_history = req->n_prompt;
    const int n_new = req->max_tokens > 0 ? req->max_tokens : 1;
    const int snap = req->policy == KV_POLICY_SNAPKV;
    if (snap) {
        TRY_GOTO(st, snapkv_params_validate(&req->snapkv), done);
        TRY_GOTO(st, snapkv_check_prompt(&req->snapkv, req->n_prompt), done);
    }
    const int capacity = (snap ? snapkv_rows_kept(&req->snapkv, req->n_prompt) : req->n_prompt) + n_new;
    TRY_GOTO(st, kv_cache_init(m->be, c->n_layers, m->n_kv_heads_local, c->head_dim, capacity, &kv),
             done);
    TRY_GOTO(st, sampler_init(&req->sampling, c->n_vocab, &smp), done);
    stats->prompt_tokens = req->n_prompt;
    stats->kv_bytes = kv_cache_bytes(m->be, c->n_layers, m->n_kv_heads_local, c->head_dim, capacity);
    stats->kv_bytes_full =
        kv_cache_bytes(m->be, c->n_layers, m->n_kv_heads_local, c->head_dim, req->n_prompt + n_new);

    comm_counters c0 = {0}, c1 = {0}, c2 = {0};
    if (req->comm) comm_stats(req->comm, &c0);
    double t0 = engine_now_s();
    TRY_GOTO(st,
             forward_prefill(f, kv, req->prompt, req->n_prompt, snap ? &req->snapkv : NULL,
                             req->prefix, req->selected, logits),
             done);
    stats->prefill_tokens_run =
        req->prefix && req->prefix->loaded ? req->n_prompt - req->prefix->n_tokens : req->n_prompt;
    int32_t token = 0;
    TRY_GOTO(st, next_token(req, smp, logits, history, n_history, &token), done);
    double t1 = engine_now_s();
    stats->prefill_s = t1 - t0;
    if (req->comm) comm_stats(req->comm, &c1);

    for (int i = 0; i < req->max_tokens; i++) {
        if (is_stop(req, token)) {
            stats->stopped_by_eos = 1;
            break;
        }
        history[n_history++] = token;
        stats->generated_tokens++;
        if (on_token && on_token(user, token)) break;
        if (i + 1 == req->max_tokens) break;
        TRY_GOTO(st, forward_run(f, kv, &token, 1, n_history - 1, 0, logits), done);
        stats->decode_steps++;
        TRY_GOTO(st, next_token(req, smp, logits, history, n_history, &token), done);
    }
    stats->decode_s = engine_now_s() - t1;
    if (req->comm) {
        comm_stats(req->comm, &c2);
        stats->prefill_allreduce_calls = c1.all_reduce_calls - c0.all_reduce_calls;
        stats->prefill_allreduce_bytes = c1.all_reduce_bytes - c0.all_reduce_bytes;
        stats->decode_allreduce_calls = c2.all_reduce_calls - c1.all_reduce_calls;
        stats->decode_allreduce_bytes = c2.all_reduce_bytes - c1.all_reduce_bytes;
        stats->prefill_allreduce_net_bytes = c1.all_reduce_net_bytes - c0.all_reduce_net_bytes;
        stats->decode_allreduce_net_bytes = c2.all_reduce_net_bytes - c1.all_reduce_net_bytes;
    }
    stats->prefill_tokens_per_s = stats->prefill_s > 0 ? req->n_prompt / stats->prefill_s : 0;
    // The first generated token comes out of the prefill; each decode step (one
    // forward of one token) yields the next.
    stats->decode_tokens_per_s = stats->decode_s > 0 ? stats->decode_steps / stats->decode_s : 0;
done:
    kv_cache_free(kv);
    sampler_free(smp);
    free(logits);
    free(history);
    return st;
}
