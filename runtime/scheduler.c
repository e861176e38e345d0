// scheduler: continuous batching with layer-granular prefill, in lockstep over the
// tensor-parallel ranks. Rank 0 plans each step (step_plan below), every rank runs
// it (execute_plan), rank 0 samples and calls back (after_step).
#include "scheduler.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../comm/comm.h"
#include "kv_cache.h"
#include "memory_plan.h"

const char *sched_finish_name(sched_finish f) {
    switch (f) {
    case SCHED_FINISH_STOP: return "stop";
    case SCHED_FINISH_LENGTH: return "length";
    case SCHED_FINISH_CANCELLED: return "cancelled";
    case SCHED_FINISH_ERROR: return "error";
    }
    return "?";
}

// A request waiting on rank 0, in submission order.
typedef struct pending {
    uint64_t id;
    sched_request req; // req.prompt points at `prompt`
    int32_t *prompt;
    double t_submit;
    int cancelled;
    struct pending *next;
} pending;

typedef enum seq_state { SEQ_FREE, SEQ_PREFILL, SEQ_DECODE, SEQ_DONE } seq_state;

// A slot of the running batch. Every rank holds the cache and the prefill job; the
// rest is rank 0's.
typedef struct seq {
    seq_state state;
    uint64_t id;
    int32_t *prompt;
    int n_prompt;
    snapkv_params snapkv;
    int snap;                 // SnapKV policy
    kv_cache *kv;
    forward_prefill_job *job; // while prefilling
    int next_pos;             // position of the token fed at the next decode step
    // rank 0
    sched_request req;
    sampler *smp;
    int32_t *history;
    int n_history;
    int32_t last;             // the token to feed next
    int cancel;
    double t_submit, t_start, t_first;
    uint64_t bytes_cache, bytes_transient; // reserved in the pool
} seq;

struct scheduler {
    model *m;
    forward_ctx *f;
    comm *comm;
    int root, multi;
    sched_options opt;
    int32_t *stop_ids;
    seq *seqs;       // [max_seqs]
    float *logits;   // [max_seqs, V]
    int prefill_slot; // the slot whose job runs, or -1
    // The plan buffer, grown as needed.
    int32_t *plan;
    size_t plan_cap, plan_len;
    // Decode batch scratch.
    kv_cache **batch_kv;
    int32_t *batch_ids, *batch_pos, *batch_slot;
    // Shared with other threads of rank 0 (submit, cancel, snapshot, drain).
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pending *head, *tail;
    int n_waiting;
    uint64_t next_id;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    int draining, stopping;
    sched_snapshot snap; // counters kept current under mu
};

// ---- requests and memory --------------------------------------------------------

// request_bytes: what a request holds on this rank: its cache (kept rows plus the
// generated ones) for its whole life, and while it prefills the layer-sized full K/V,
// its hidden states and SnapKV's scores (memory_plan.h).
static void request_bytes(const scheduler *s, const sched_request *r, uint64_t *cache,
                          uint64_t *transient) {
    const model *m = s->m;
    const backend_ops *ops = m->be->ops;
    const size_t kv_bytes = backend_kv_bytes(m->be);
    memory_plan p, base;
    memory_plan_compute(&m->cfg, m->shard.tp_size, 0, ops->act_bytes, kv_bytes, r->n_prompt,
                        r->max_tokens, 1, r->policy,
                        r->policy == KV_POLICY_SNAPKV ? &r->snapkv : NULL, &p);
    memory_plan_compute(&m->cfg, m->shard.tp_size, 0, ops->act_bytes, kv_bytes, r->n_prompt,
                        r->max_tokens, 1, KV_POLICY_FULL, NULL, &base);
    *cache = p.kv_cache;
    // The chunk workspace is the forward's, shared by every request: only what this
    // request adds to it counts.
    *transient = p.layer_kv + p.hidden + (p.workspace > base.workspace ? p.workspace - base.workspace : 0);
}

static int seq_capacity(const sched_request *r) {
    const int kept = r->policy == KV_POLICY_SNAPKV ? snapkv_rows_kept(&r->snapkv, r->n_prompt)
                                                   : r->n_prompt;
    return kept + r->max_tokens;
}

snp_status scheduler_check(const scheduler *s, const sched_request *r) {
    const model_config *c = &s->m->cfg;
    if (r->n_prompt <= 0) return snp_fail(SNP_ERR_ARGUMENT, "the prompt is empty (0 tokens)");
    if (r->max_tokens < 1)
        return snp_fail(SNP_ERR_ARGUMENT, "max_tokens %d must be at least 1", r->max_tokens);
    if ((int64_t)r->n_prompt + r->max_tokens > c->n_ctx)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "%d prompt tokens + %d max_tokens exceed the model's context of %d tokens",
                        r->n_prompt, r->max_tokens, c->n_ctx);
    if (r->policy == KV_POLICY_SNAPKV) {
        TRY(snapkv_params_validate(&r->snapkv));
        TRY(snapkv_check_prompt(&r->snapkv, r->n_prompt));
    }
    uint64_t cache, transient;
    request_bytes(s, r, &cache, &transient);
    if (cache + transient > s->opt.kv_pool_bytes)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "the request needs %.1f MiB on each rank (%.1f MiB of %s KV cache for %d "
                        "prompt + %d new tokens, %.1f MiB while its prefill runs), more than the "
                        "server's KV pool of %.1f MiB (--kv-memory)",
                        (double)(cache + transient) / 1048576.0, (double)cache / 1048576.0,
                        kv_policy_name(r->policy), r->n_prompt, r->max_tokens,
                        (double)transient / 1048576.0, (double)s->opt.kv_pool_bytes / 1048576.0);
    return SNP_OK;
}

// ---- creation -------------------------------------------------------------------

snp_status scheduler_create(model *m, forward_ctx *f, comm *c, const sched_options *opt,
                            scheduler **out) {
    *out = NULL;
    if (opt->max_seqs < 1 || opt->max_queue < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "scheduler: max_seqs %d must be >= 1, max_queue %d >= 0",
                        opt->max_seqs, opt->max_queue);
    scheduler *s = calloc(1, sizeof *s);
    if (!s) return snp_fail(SNP_ERR_MEMORY, "scheduler: out of memory");
    s->m = m;
    s->f = f;
    s->comm = c;
    s->root = !c || comm_rank(c) == 0;
    s->multi = c && comm_size(c) > 1;
    s->opt = *opt;
    s->prefill_slot = -1;
    s->next_id = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    const size_t B = (size_t)opt->max_seqs, V = (size_t)m->cfg.n_vocab;
    s->stop_ids = malloc(sizeof(int32_t) * (opt->n_stop_ids > 0 ? (size_t)opt->n_stop_ids : 1));
    s->seqs = calloc(B, sizeof *s->seqs);
    s->logits = malloc(sizeof(float) * B * V);
    s->batch_kv = malloc(sizeof *s->batch_kv * B);
    s->batch_ids = malloc(sizeof(int32_t) * B);
    s->batch_pos = malloc(sizeof(int32_t) * B);
    s->batch_slot = malloc(sizeof(int32_t) * B);
    if (!s->stop_ids || !s->seqs || !s->logits || !s->batch_kv || !s->batch_ids ||
        !s->batch_pos || !s->batch_slot) {
        scheduler_free(s);
        return snp_fail(SNP_ERR_MEMORY, "scheduler: out of memory for %d sequences", opt->max_seqs);
    }
    if (opt->n_stop_ids > 0)
        memcpy(s->stop_ids, opt->stop_ids, sizeof(int32_t) * (size_t)opt->n_stop_ids);
    s->opt.stop_ids = s->stop_ids;
    s->snap.kv_bytes_pool = opt->kv_pool_bytes;
    *out = s;
    return SNP_OK;
}

static void seq_release(scheduler *s, seq *q) {
    forward_prefill_job_free(q->job);
    kv_cache_free(q->kv);
    sampler_free(q->smp);
    free(q->prompt);
    free(q->history);
    (void)s;
    memset(q, 0, sizeof *q);
}

void scheduler_free(scheduler *s) {
    if (!s) return;
    for (int i = 0; s->seqs && i < s->opt.max_seqs; i++) seq_release(s, &s->seqs[i]);
    for (pending *p = s->head, *n; p; p = n) {
        n = p->next;
        free(p->prompt);
        free(p);
    }
    free(s->seqs);
    free(s->logits);
    free(s->plan);
    free(s->batch_kv);
    free(s->batch_ids);
    free(s->batch_pos);
    free(s->batch_slot);
    free(s->stop_ids);
    free(s->cancels);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

// ---- the other threads' side ----------------------------------------------------

snp_status scheduler_submit(scheduler *s, const sched_request *r, uint64_t *out_id) {
    pending *p = calloc(1, sizeof *p);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)(r->n_prompt > 0 ? r->n_prompt : 1));
    if (!p || !prompt) {
        free(p);
        free(prompt);
        return snp_fail(SNP_ERR_MEMORY, "scheduler: out of memory queueing a request");
    }
    memcpy(prompt, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    p->req = *r;
    p->req.prompt = prompt;
    p->prompt = prompt;
    p->t_submit = engine_now_s();
    pthread_mutex_lock(&s->mu);
    snp_status st = SNP_OK;
    if (s->draining) {
        st = snp_fail(SNP_ERR_UNSUPPORTED, "the server is shutting down");
    } else if (s->n_waiting >= s->opt.max_queue) {
        st = snp_fail(SNP_ERR_BUSY, "%d requests are already waiting (--max-queue %d)",
                      s->n_waiting, s->opt.max_queue);
    } else {
        p->id = s->next_id++;
        if (s->tail) s->tail->next = p;
        else s->head = p;
        s->tail = p;
        s->n_waiting++;
        s->snap.waiting = s->n_waiting;
        *out_id = p->id;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    if (st != SNP_OK) {
        free(prompt);
        free(p);
    }
    return st;
}

void scheduler_cancel(scheduler *s, uint64_t id) {
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        const int cap = s->cap_cancels ? 2 * s->cap_cancels : 16;
        uint64_t *c = realloc(s->cancels, sizeof *c * (size_t)cap);
        if (c) {
            s->cancels = c;
            s->cap_cancels = cap;
        }
    }
    // Out of memory here loses the cancel: the request then runs to its end.
    if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = id;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void scheduler_snapshot(scheduler *s, sched_snapshot *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->snap;
    pthread_mutex_unlock(&s->mu);
}

void scheduler_drain(scheduler *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    s->snap.draining = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void scheduler_stop(scheduler *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = s->stopping = 1;
    s->snap.draining = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

// ---- the step plan --------------------------------------------------------------
// int32 words, rank 0 to every rank:
//   shutdown
//   n_free, slot...
//   n_admit (0 or 1): slot, policy, window, budget, kernel, pooling, capacity,
//                     n_prompt, tokens...
//   prefill_slot (-1: none)
//   n_decode, (slot, token, position)...

static snp_status plan_reserve(scheduler *s, size_t extra) {
    if (s->plan_len + extra <= s->plan_cap) return SNP_OK;
    size_t cap = s->plan_cap ? s->plan_cap : 256;
    while (cap < s->plan_len + extra) cap *= 2;
    int32_t *p = realloc(s->plan, sizeof(int32_t) * cap);
    if (!p) return snp_fail(SNP_ERR_MEMORY, "scheduler: out of memory for a step plan");
    s->plan = p;
    s->plan_cap = cap;
    return SNP_OK;
}

static snp_status plan_put(scheduler *s, int32_t v) {
    TRY(plan_reserve(s, 1));
    s->plan[s->plan_len++] = v;
    return SNP_OK;
}

// The plan's reader: each take checks the bounds, so a corrupt plan fails instead of
// reading past it.
typedef struct plan_reader {
    const int32_t *w;
    size_t n, at;
} plan_reader;

static snp_status take(plan_reader *r, int32_t *out) {
    if (r->at >= r->n)
        return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan of %zu words ended early", r->n);
    *out = r->w[r->at++];
    return SNP_OK;
}

static snp_status take_slot(const scheduler *s, plan_reader *r, int32_t *slot) {
    TRY(take(r, slot));
    if (*slot < 0 || *slot >= s->opt.max_seqs)
        return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan names slot %d of %d", *slot,
                        s->opt.max_seqs);
    return SNP_OK;
}

// ---- rank 0: deciding a step ----------------------------------------------------

static int is_stop_id(const scheduler *s, int32_t t) {
    for (int i = 0; i < s->opt.n_stop_ids; i++)
        if (s->stop_ids[i] == t) return 1;
    return 0;
}

static int free_slot(const scheduler *s) {
    for (int i = 0; i < s->opt.max_seqs; i++)
        if (s->seqs[i].state == SEQ_FREE) return i;
    return -1;
}

// finish: the sequence's last callback; its slot is freed by the next plan.
static void finish(scheduler *s, seq *q, sched_finish why, const char *error) {
    sched_seq_stats st = {
        .prompt_tokens = q->n_prompt,
        .generated_tokens = q->n_history - q->n_prompt,
        .queued_s = q->t_start - q->t_submit,
        .ttft_s = q->t_first > 0 ? q->t_first - q->t_submit : 0,
        .total_s = engine_now_s() - q->t_submit,
        .kv_bytes = q->kv ? kv_cache_bytes(s->m->be, q->kv->n_layers, q->kv->Hkv, q->kv->D,
                                           q->kv->capacity)
                          : 0,
    };
    if (error) snprintf(st.error, sizeof st.error, "%s", error);
    q->state = SEQ_DONE;
    pthread_mutex_lock(&s->mu);
    s->snap.requests_finished[why]++;
    pthread_mutex_unlock(&s->mu);
    if (q->req.cb.on_done) q->req.cb.on_done(q->req.cb.user, why, &st);
}

// take_cancels: applies the cancels asked since the last step: a waiting request
// ends at once, a running one is marked and ends here too.
static void take_cancels(scheduler *s) {
    pthread_mutex_lock(&s->mu);
    const int n = s->n_cancels;
    uint64_t ids[64];
    const int m = n < 64 ? n : 64;
    memcpy(ids, s->cancels, sizeof ids[0] * (size_t)m);
    memmove(s->cancels, s->cancels + m, sizeof ids[0] * (size_t)(n - m));
    s->n_cancels = n - m;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < m; i++) {
        for (int k = 0; k < s->opt.max_seqs; k++) {
            seq *q = &s->seqs[k];
            if ((q->state == SEQ_PREFILL || q->state == SEQ_DECODE) && q->id == ids[i])
                finish(s, q, SCHED_FINISH_CANCELLED, NULL);
        }
        pthread_mutex_lock(&s->mu);
        for (pending *p = s->head; p; p = p->next)
            if (p->id == ids[i]) p->cancelled = 1;
        pthread_mutex_unlock(&s->mu);
    }
}

// pop_cancelled: ends the waiting requests that were cancelled (their on_done is
// called outside the lock).
static void pop_cancelled(scheduler *s) {
    for (;;) {
        pending *gone = NULL;
        pthread_mutex_lock(&s->mu);
        for (pending **pp = &s->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
            if (!(*pp)->cancelled && !s->stopping) continue;
            gone = *pp;
            *pp = gone->next;
            if (s->tail == gone) s->tail = prev;
            s->n_waiting--;
            s->snap.waiting = s->n_waiting;
            s->snap.requests_finished[SCHED_FINISH_CANCELLED]++;
            break;
        }
        pthread_mutex_unlock(&s->mu);
        if (!gone) return;
        sched_seq_stats st = {.prompt_tokens = gone->req.n_prompt,
                              .total_s = engine_now_s() - gone->t_submit};
        if (gone->req.cb.on_done) gone->req.cb.on_done(gone->req.cb.user, SCHED_FINISH_CANCELLED, &st);
        free(gone->prompt);
        free(gone);
    }
}

static uint64_t pool_used(const scheduler *s) {
    uint64_t used = 0;
    for (int i = 0; i < s->opt.max_seqs; i++)
        if (s->seqs[i].state != SEQ_FREE)
            used += s->seqs[i].bytes_cache + s->seqs[i].bytes_transient;
    return used;
}

// admit: when no prefill runs, the oldest waiting request starts its prefill if a slot
// is free and its memory fits beside the running caches (first come, first served: a
// big request is not overtaken by small ones forever).
static snp_status admit(scheduler *s, int *admitted) {
    *admitted = -1;
    if (s->prefill_slot >= 0) return SNP_OK;
    const int slot = free_slot(s);
    if (slot < 0) return SNP_OK;
    pthread_mutex_lock(&s->mu);
    pending *p = s->head;
    uint64_t cache = 0, transient = 0;
    if (p) request_bytes(s, &p->req, &cache, &transient);
    if (!p || pool_used(s) + cache + transient > s->opt.kv_pool_bytes) {
        pthread_mutex_unlock(&s->mu);
        return SNP_OK;
    }
    s->head = p->next;
    if (!s->head) s->tail = NULL;
    s->n_waiting--;
    s->snap.waiting = s->n_waiting;
    pthread_mutex_unlock(&s->mu);

    seq *q = &s->seqs[slot];
    memset(q, 0, sizeof *q);
    q->state = SEQ_PREFILL;
    q->id = p->id;
    q->req = p->req;
    q->prompt = p->prompt; // moved: the plan carries a copy to the other ranks
    q->n_prompt = p->req.n_prompt;
    q->snap = p->req.policy == KV_POLICY_SNAPKV;
    q->snapkv = p->req.snapkv;
    q->t_submit = p->t_submit;
    q->t_start = engine_now_s();
    q->bytes_cache = cache;
    q->bytes_transient = transient;
    free(p);
    snp_status st = sampler_init(&q->req.sampling, s->m->cfg.n_vocab, &q->smp);
    q->history = malloc(sizeof(int32_t) * ((size_t)q->n_prompt + (size_t)q->req.max_tokens + 1));
    if (st == SNP_OK && !q->history) st = snp_fail(SNP_ERR_MEMORY, "scheduler: out of memory");
    if (st != SNP_OK) { // a bad sampling parameter is this request's error, not the server's
        finish(s, q, SCHED_FINISH_ERROR, snp_error());
        return SNP_OK;
    }
    memcpy(q->history, q->prompt, sizeof(int32_t) * (size_t)q->n_prompt);
    q->n_history = q->n_prompt;
    *admitted = slot;
    return SNP_OK;
}

// build_plan: rank 0's decisions for the next step. *idle: nothing to do at all.
static snp_status build_plan(scheduler *s, int shutdown, int *idle) {
    // A sequence cancelled during its prefill is freed below: its job goes with it.
    if (s->prefill_slot >= 0 && s->seqs[s->prefill_slot].state == SEQ_DONE) s->prefill_slot = -1;
    s->plan_len = 0;
    TRY(plan_put(s, shutdown));
    size_t at = s->plan_len;
    int n = 0;
    TRY(plan_put(s, 0));
    for (int i = 0; i < s->opt.max_seqs; i++)
        if (s->seqs[i].state == SEQ_DONE) {
            TRY(plan_put(s, i));
            n++;
        }
    s->plan[at] = n;
    const int n_free = n;
    int slot = -1;
    if (!shutdown) TRY(admit(s, &slot));
    if (slot >= 0 && s->seqs[slot].state != SEQ_PREFILL) {
        // The request failed before it started (its sampler): freed by the next plan.
        slot = -1;
    }
    TRY(plan_put(s, slot >= 0));
    if (slot >= 0) {
        const seq *q = &s->seqs[slot];
        TRY(plan_reserve(s, 8 + (size_t)q->n_prompt));
        const int32_t head[8] = {slot, q->snap, q->snapkv.window, q->snapkv.budget, q->snapkv.kernel,
                                 (int32_t)q->snapkv.pooling, seq_capacity(&q->req), q->n_prompt};
        memcpy(s->plan + s->plan_len, head, sizeof head);
        memcpy(s->plan + s->plan_len + 8, q->prompt, sizeof(int32_t) * (size_t)q->n_prompt);
        s->plan_len += 8 + (size_t)q->n_prompt;
        s->prefill_slot = slot;
    }
    TRY(plan_put(s, s->prefill_slot));
    at = s->plan_len;
    n = 0;
    TRY(plan_put(s, 0));
    for (int i = 0; i < s->opt.max_seqs; i++) {
        const seq *q = &s->seqs[i];
        if (q->state != SEQ_DECODE) continue;
        TRY(plan_put(s, i));
        TRY(plan_put(s, q->last));
        TRY(plan_put(s, q->next_pos));
        n++;
    }
    s->plan[at] = n;
    *idle = !shutdown && n_free == 0 && s->prefill_slot < 0 && n == 0;
    return SNP_OK;
}

// ---- every rank: running a step -------------------------------------------------

static snp_status run_admit(scheduler *s, plan_reader *r) {
    int32_t slot = 0, snap = 0, window = 0, budget = 0, kernel = 0, pooling = 0, capacity = 0,
            n_prompt = 0;
    TRY(take_slot(s, r, &slot));
    TRY(take(r, &snap));
    TRY(take(r, &window));
    TRY(take(r, &budget));
    TRY(take(r, &kernel));
    TRY(take(r, &pooling));
    TRY(take(r, &capacity));
    TRY(take(r, &n_prompt));
    if (n_prompt <= 0 || (size_t)n_prompt > r->n - r->at || capacity <= 0)
        return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan admits %d tokens (capacity %d)",
                        n_prompt, capacity);
    seq *q = &s->seqs[slot];
    if (!s->root) {
        if (q->state != SEQ_FREE)
            return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan admits into busy slot %d", slot);
        memset(q, 0, sizeof *q);
        q->state = SEQ_PREFILL;
        q->n_prompt = n_prompt;
        q->snap = snap;
        q->snapkv = (snapkv_params){.window = window, .budget = budget, .kernel = kernel,
                                    .pooling = (snapkv_pooling)pooling};
        q->prompt = malloc(sizeof(int32_t) * (size_t)n_prompt);
        if (!q->prompt) return snp_fail(SNP_ERR_MEMORY, "scheduler: out of memory");
        memcpy(q->prompt, r->w + r->at, sizeof(int32_t) * (size_t)n_prompt);
    }
    r->at += (size_t)n_prompt;
    s->prefill_slot = slot;
    const model *m = s->m;
    TRY(kv_cache_init(m->be, m->cfg.n_layers, m->n_kv_heads_local, m->cfg.head_dim, capacity, &q->kv));
    return forward_prefill_begin(s->f, q->kv, q->prompt, q->n_prompt, q->snap ? &q->snapkv : NULL,
                                 NULL, NULL, &q->job);
}

// sample: rank 0's next token of sequence q from its logits row, and what it means.
static snp_status sample(scheduler *s, seq *q, float *logits) {
    int32_t t;
    TRY(sampler_sample(q->smp, logits, q->history, q->n_history, &t));
    if (q->t_first == 0) q->t_first = engine_now_s();
    if (q->state != SEQ_DONE && is_stop_id(s, t) && !q->req.ignore_eos) {
        finish(s, q, SCHED_FINISH_STOP, NULL);
        return SNP_OK;
    }
    q->history[q->n_history++] = t;
    q->last = t;
    pthread_mutex_lock(&s->mu);
    s->snap.generated_tokens_total++;
    pthread_mutex_unlock(&s->mu);
    const int generated = q->n_history - q->n_prompt;
    if (q->req.cb.on_token && q->req.cb.on_token(q->req.cb.user, t)) {
        finish(s, q, SCHED_FINISH_STOP, NULL);
    } else if (generated >= q->req.max_tokens) {
        finish(s, q, SCHED_FINISH_LENGTH, NULL);
    }
    return SNP_OK;
}

static snp_status run_prefill_layer(scheduler *s, int slot) {
    seq *q = &s->seqs[slot];
    if (!q->job) return snp_fail(SNP_ERR_INTERNAL, "scheduler: slot %d has no prefill to run", slot);
    int done = 0;
    const double t0 = engine_now_s();
    TRY(forward_prefill_step(q->job, s->logits, &done));
    const double dt = engine_now_s() - t0;
    pthread_mutex_lock(&s->mu);
    s->snap.prefill_layers++;
    s->snap.prefill_s += dt;
    pthread_mutex_unlock(&s->mu);
    if (!done) return SNP_OK;
    forward_prefill_job_free(q->job);
    q->job = NULL;
    s->prefill_slot = -1;
    q->next_pos = q->n_prompt;
    q->bytes_transient = 0;
    if (q->state == SEQ_PREFILL) q->state = SEQ_DECODE;
    if (!s->root) return SNP_OK;
    pthread_mutex_lock(&s->mu);
    s->snap.prompt_tokens_total += (uint64_t)q->n_prompt;
    pthread_mutex_unlock(&s->mu);
    if (q->state == SEQ_DECODE) TRY(sample(s, q, s->logits));
    return SNP_OK;
}

static snp_status run_decode(scheduler *s, plan_reader *r) {
    int32_t n = 0;
    TRY(take(r, &n));
    if (n < 0 || n > s->opt.max_seqs)
        return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan decodes %d sequences", n);
    for (int b = 0; b < n; b++) {
        int32_t slot = 0, token = 0, pos = 0;
        TRY(take_slot(s, r, &slot));
        TRY(take(r, &token));
        TRY(take(r, &pos));
        seq *q = &s->seqs[slot];
        if (!q->kv || q->job)
            return snp_fail(SNP_ERR_INTERNAL, "scheduler: slot %d decodes before its prefill", slot);
        s->batch_slot[b] = slot;
        s->batch_kv[b] = q->kv;
        s->batch_ids[b] = token;
        s->batch_pos[b] = pos;
    }
    if (n == 0) return SNP_OK;
    const double t0 = engine_now_s();
    TRY(forward_decode_batch(s->f, s->batch_kv, s->batch_ids, s->batch_pos, n, s->logits));
    const double dt = engine_now_s() - t0;
    pthread_mutex_lock(&s->mu);
    s->snap.decode_steps++;
    s->snap.decode_s += dt;
    pthread_mutex_unlock(&s->mu);
    const size_t V = (size_t)s->m->cfg.n_vocab;
    for (int b = 0; b < n; b++) {
        seq *q = &s->seqs[s->batch_slot[b]];
        q->next_pos++;
        // A sequence cancelled while this step ran still sampled nothing new.
        if (s->root && q->state == SEQ_DECODE) TRY(sample(s, q, s->logits + (size_t)b * V));
    }
    return SNP_OK;
}

static snp_status execute_plan(scheduler *s, int *shutdown) {
    plan_reader r = {.w = s->plan, .n = s->plan_len};
    int32_t v = 0, n = 0;
    TRY(take(&r, &v));
    *shutdown = v;
    TRY(take(&r, &n));
    for (int i = 0; i < n; i++) {
        int32_t slot = 0;
        TRY(take_slot(s, &r, &slot));
        if (s->prefill_slot == slot) s->prefill_slot = -1;
        seq_release(s, &s->seqs[slot]);
    }
    TRY(take(&r, &n));
    if (n) TRY(run_admit(s, &r));
    int32_t prefill = -1;
    TRY(take(&r, &prefill));
    if (prefill >= 0) {
        if (prefill >= s->opt.max_seqs)
            return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan prefills slot %d", prefill);
        TRY(run_prefill_layer(s, prefill));
    }
    TRY(run_decode(s, &r));
    if (r.at != r.n)
        return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan has %zu words left over", r.n - r.at);
    return SNP_OK;
}

// share_plan: rank 0's plan to every rank: its length first, through the idle
// broadcast (the other ranks may wait there a long time for work), then the words.
static snp_status share_plan(scheduler *s) {
    if (!s->multi) return SNP_OK;
    int64_t len = (int64_t)s->plan_len;
    TRY(comm_broadcast_idle(s->comm, &len, sizeof len, 0));
    if (len <= 0 || len > (int64_t)1 << 30)
        return snp_fail(SNP_ERR_INTERNAL, "scheduler: step plan of %lld words", (long long)len);
    if (!s->root) {
        s->plan_len = 0;
        TRY(plan_reserve(s, (size_t)len));
        s->plan_len = (size_t)len;
    }
    return comm_broadcast(s->comm, s->plan, sizeof(int32_t) * (size_t)len, 0);
}

static void update_snapshot(scheduler *s) {
    int running = 0;
    for (int i = 0; i < s->opt.max_seqs; i++)
        running += s->seqs[i].state == SEQ_PREFILL || s->seqs[i].state == SEQ_DECODE;
    const uint64_t used = pool_used(s);
    pthread_mutex_lock(&s->mu);
    s->snap.running = running;
    s->snap.prefilling = s->prefill_slot >= 0;
    s->snap.kv_bytes_used = used;
    s->snap.steps++;
    pthread_mutex_unlock(&s->mu);
}

snp_status scheduler_run(scheduler *s) {
    for (;;) {
        if (s->root) {
            pthread_mutex_lock(&s->mu);
            const int stopping = s->stopping;
            pthread_mutex_unlock(&s->mu);
            for (int i = 0; stopping && i < s->opt.max_seqs; i++)
                if (s->seqs[i].state == SEQ_PREFILL || s->seqs[i].state == SEQ_DECODE)
                    finish(s, &s->seqs[i], SCHED_FINISH_CANCELLED, NULL);
            take_cancels(s);
            pop_cancelled(s);
            int idle = 0;
            TRY(build_plan(s, 0, &idle));
            if (idle) {
                pthread_mutex_lock(&s->mu);
                const int done = s->draining && !s->head;
                // Nothing runs: sleep until a request, a cancel or a drain comes.
                if (!done && !s->head && !s->n_cancels) pthread_cond_wait(&s->wake, &s->mu);
                pthread_mutex_unlock(&s->mu);
                if (!done) continue;
                TRY(build_plan(s, 1, &idle));
            }
        }
        TRY(share_plan(s));
        int shutdown = 0;
        TRY(execute_plan(s, &shutdown));
        update_snapshot(s);
        if (shutdown) return SNP_OK;
    }
}
