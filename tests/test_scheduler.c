// test_scheduler: continuous batching changes no token. Requests of mixed lengths
// and KV policies, run together through the scheduler, each give exactly the tokens
// engine_generate gives for it alone; prefills are interleaved with the running
// batch at layer granularity; admission keeps to the KV pool; a full queue refuses;
// a cancel frees the cache. On the tiny llama_gqa model of tests/golden_snapkv
// (fp32 KV cache, so the comparison is exact).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/engine.h"
#include "../runtime/kv_cache.h"
#include "../runtime/model.h"
#include "../runtime/scheduler.h"
#include "support/test_support.h"

enum { N_REQ = 6, MAX_NEW = 12, CHUNK = 16 };

typedef struct seq_out {
    scheduler *s;
    int32_t tokens[MAX_NEW + 1];
    int n;
    int done;
    sched_finish why;
    int saw_prefill_running; // a token arrived while another prompt's prefill was half done
    int n_layers;
    int cancel_after;        // > 0: cancel this request after that many tokens
    uint64_t id;
} seq_out;

static int on_token(void *user, int32_t t) {
    seq_out *o = user;
    if (o->n <= MAX_NEW) o->tokens[o->n++] = t;
    sched_snapshot snap;
    scheduler_snapshot(o->s, &snap);
    // Prefill layers run so far, not a whole number of prompts: one is half done.
    if (snap.prefill_layers % (uint64_t)o->n_layers != 0) o->saw_prefill_running = 1;
    if (o->cancel_after && o->n == o->cancel_after) scheduler_cancel(o->s, o->id);
    return 0;
}

static void on_done(void *user, sched_finish why, const sched_seq_stats *st) {
    (void)st;
    seq_out *o = user;
    o->done++;
    o->why = why;
}

typedef struct spec {
    int L;
    kv_policy policy;
} spec;

static const spec specs[N_REQ] = {{70, KV_POLICY_SNAPKV}, {9, KV_POLICY_FULL},
                                  {45, KV_POLICY_FULL},   {64, KV_POLICY_SNAPKV},
                                  {3, KV_POLICY_FULL},    {50, KV_POLICY_SNAPKV}};

static void prompt(int r, int V, int32_t *ids, int L) {
    for (int i = 0; i < L; i++) ids[i] = (int32_t)((i * 31 + r * 17 + 5) % V);
}

static sched_request request(int r, int V, int32_t *ids, seq_out *o) {
    prompt(r, V, ids, specs[r].L);
    sched_request q = {.policy = specs[r].policy,
                       .snapkv = {.window = 8, .budget = 24, .kernel = 5, .pooling = SNAPKV_POOL_MAX},
                       .sampling = sampler_params_default(),
                       .prompt = ids,
                       .n_prompt = specs[r].L,
                       .max_tokens = MAX_NEW,
                       .ignore_eos = 1,
                       .cb = {on_token, on_done, o}};
    return q;
}

typedef struct sink {
    int32_t *t;
    int n;
} sink;

static int collect(void *u, int32_t t) {
    sink *k = u;
    if (k->n <= MAX_NEW) k->t[k->n++] = t;
    return 0;
}

// alone: what engine_generate gives for request r on its own.
static int alone(model *m, forward_ctx *f, int r, int32_t *out) {
    int32_t ids[128];
    seq_out unused = {0};
    const sched_request q = request(r, m->cfg.n_vocab, ids, &unused);
    const engine_request e = {.policy = q.policy, .snapkv = q.snapkv, .prompt = ids,
                              .n_prompt = q.n_prompt, .max_tokens = MAX_NEW, .sampling = q.sampling};
    sink k = {out, 0};
    engine_stats st;
    return engine_generate(f, m, &e, collect, &k, &st) == SNP_OK ? k.n : -1;
}

static void check_batching(test_counts *tc, model *m, forward_ctx *f, uint64_t pool, int max_seqs,
                           const char *what) {
    const int V = m->cfg.n_vocab;
    scheduler *s = NULL;
    const sched_options opt = {.max_seqs = max_seqs, .max_queue = 16, .kv_pool_bytes = pool};
    if (!test_check(tc, scheduler_create(m, f, NULL, &opt, &s) == SNP_OK, "%s: %s", what, snp_error()))
        return;
    static int32_t ids[N_REQ][128];
    seq_out out[N_REQ] = {0};
    for (int r = 0; r < N_REQ; r++) {
        out[r].s = s;
        out[r].n_layers = m->cfg.n_layers;
        const sched_request q = request(r, V, ids[r], &out[r]);
        test_check(tc, scheduler_check(s, &q) == SNP_OK, "%s: request %d: %s", what, r, snp_error());
        test_check(tc, scheduler_submit(s, &q, &out[r].id) == SNP_OK, "%s: submit %d: %s", what, r,
                   snp_error());
    }
    scheduler_drain(s);
    test_check(tc, scheduler_run(s) == SNP_OK, "%s: run: %s", what, snp_error());
    int same = 0, interleaved = 0;
    for (int r = 0; r < N_REQ; r++) {
        int32_t ref[MAX_NEW + 1];
        const int n = alone(m, f, r, ref);
        const int ok = out[r].done == 1 && out[r].why == SCHED_FINISH_LENGTH && n == MAX_NEW &&
                       out[r].n == MAX_NEW && memcmp(ref, out[r].tokens, sizeof(int32_t) * MAX_NEW) == 0;
        test_check(tc, ok, "%s: request %d (L %d, %s): %d tokens, done %d, differs from alone", what,
                   r, specs[r].L, kv_policy_name(specs[r].policy), out[r].n, out[r].done);
        same += ok;
        interleaved += out[r].saw_prefill_running;
    }
    sched_snapshot snap;
    scheduler_snapshot(s, &snap);
    test_check(tc, snap.prefill_layers == (uint64_t)N_REQ * (uint64_t)m->cfg.n_layers,
               "%s: %llu prefill layers, expected %d x %d", what,
               (unsigned long long)snap.prefill_layers, N_REQ, m->cfg.n_layers);
    test_check(tc, snap.kv_bytes_used == 0 && snap.running == 0, "%s: %llu KV bytes left in use",
               what, (unsigned long long)snap.kv_bytes_used);
    if (max_seqs > 1)
        test_check(tc, interleaved > 0,
                   "%s: no token was decoded while another prompt's prefill was half done", what);
    else
        test_check(tc, interleaved == 0, "%s: one slot, yet a prefill ran beside a decode", what);
    printf("  %-44s %d/%d requests token-identical to alone, %d saw a prefill interleaved, %llu "
           "decode steps\n",
           what, same, N_REQ, interleaved, (unsigned long long)snap.decode_steps);
    scheduler_free(s);
}

// check_limits: a request over the pool is refused naming it; a full queue refuses
// with SNP_ERR_BUSY; a cancelled request ends as cancelled with its cache freed.
static void check_limits(test_counts *tc, model *m, forward_ctx *f) {
    const int V = m->cfg.n_vocab;
    scheduler *s = NULL;
    const sched_options small = {.max_seqs = 2, .max_queue = 2, .kv_pool_bytes = 4096};
    if (!test_check(tc, scheduler_create(m, f, NULL, &small, &s) == SNP_OK, "%s", snp_error())) return;
    int32_t ids[128];
    seq_out o = {.s = s, .n_layers = m->cfg.n_layers};
    sched_request q = request(0, V, ids, &o);
    test_check(tc, scheduler_check(s, &q) == SNP_ERR_ARGUMENT && strstr(snp_error(), "--kv-memory"),
               "a request over a 4 KiB pool must be refused naming --kv-memory: %s", snp_error());
    q.max_tokens = 100000;
    test_check(tc, scheduler_check(s, &q) == SNP_ERR_ARGUMENT && strstr(snp_error(), "context"),
               "max_tokens past the context must be refused: %s", snp_error());
    uint64_t id;
    q = request(1, V, ids, &o);
    int ok = scheduler_submit(s, &q, &id) == SNP_OK && scheduler_submit(s, &q, &id) == SNP_OK;
    test_check(tc, ok && scheduler_submit(s, &q, &id) == SNP_ERR_BUSY,
               "the third request past --max-queue 2 must be refused busy: %s", snp_error());
    scheduler_stop(s); // cancels both queued requests
    test_check(tc, scheduler_run(s) == SNP_OK && o.done == 2 && o.why == SCHED_FINISH_CANCELLED,
               "stop must end the queued requests as cancelled (%d done)", o.done);
    scheduler_free(s);

    const sched_options roomy = {.max_seqs = 2, .max_queue = 4, .kv_pool_bytes = 1u << 30};
    if (!test_check(tc, scheduler_create(m, f, NULL, &roomy, &s) == SNP_OK, "%s", snp_error())) return;
    seq_out c = {.s = s, .cancel_after = 3, .n_layers = m->cfg.n_layers};
    q = request(2, V, ids, &c);
    test_check(tc, scheduler_submit(s, &q, &c.id) == SNP_OK, "%s", snp_error());
    scheduler_drain(s);
    test_check(tc, scheduler_run(s) == SNP_OK, "%s", snp_error());
    sched_snapshot snap;
    scheduler_snapshot(s, &snap);
    test_check(tc, c.done == 1 && c.why == SCHED_FINISH_CANCELLED && c.n == 3 &&
                       snap.kv_bytes_used == 0 && snap.requests_finished[SCHED_FINISH_CANCELLED] == 1,
               "a request cancelled after 3 tokens: %d tokens, finish %s, %llu KV bytes in use", c.n,
               sched_finish_name(c.why), (unsigned long long)snap.kv_bytes_used);
    scheduler_free(s);
}

int main(void) {
    test_counts tc = {0};
    char dir[4096];
    test_source_path(dir, sizeof dir, "tests/golden_snapkv/llama_gqa");
    backend *be = NULL;
    const backend_options bo = {.kv_type = KV_DTYPE_F32};
    model *m = NULL;
    forward_ctx *f = NULL;
    const model_shard whole = {0, 1};
    if (test_check(&tc, backend_open("cpu", &bo, &be) == SNP_OK, "cpu: %s", snp_error()) &&
        test_check(&tc, model_load(dir, be, &whole, &m) == SNP_OK, "load %s: %s", dir, snp_error()) &&
        test_check(&tc, forward_init(m, CHUNK, &f) == SNP_OK, "%s", snp_error())) {
        check_batching(&tc, m, f, 1u << 30, 4, "6 requests, 4 slots, roomy pool");
        check_batching(&tc, m, f, 1u << 30, 1, "6 requests, 1 slot (one at a time)");
        // A pool for about two requests: admission waits for caches to free.
        const size_t one = kv_cache_bytes(be, m->cfg.n_layers, m->n_kv_heads_local, m->cfg.head_dim,
                                          specs[0].L + MAX_NEW);
        check_batching(&tc, m, f, 3 * one, 4, "6 requests, 4 slots, pool of ~2 requests");
        check_limits(&tc, m, f);
    }
    forward_free(f);
    model_free(m);
    backend_close(be);
    return test_finish(&tc, "test_scheduler");
}
