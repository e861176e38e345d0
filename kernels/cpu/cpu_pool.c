// cpu_pool: persistent workers with a spin, then yield, then sleep wait (see
// cpu_pool.h for why). A job is published by bumping `seq`; every worker copies
// it, grabs items from `next` until none are left (a worker outside the job's
// team grabs none), then decrements `running`. The caller grabs items too and
// waits for `running` to reach 0 before it returns, so no worker still reads a
// job when the next one is written.
#include "cpu_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

enum {
    // A waiter spins (pause) this long: longer than the serial gap between two ops
    // of a decode step (norms, RoPE: a few microseconds), so an idle machine never
    // pays a wake-up, yet short enough not to starve a peer on a shared one...
    POOL_SPIN_NS = 50 * 1000,
    // ... then yields the core for this long (a descheduled peer may run), and
    // then sleeps until woken: between requests, the workers cost nothing.
    POOL_YIELD_NS = 2 * 1000 * 1000,
};

typedef struct pool_job {
    cpu_pool_fn fn;
    void *arg;
    int64_t n_items;
    int n_threads; // workers with tid < n_threads take part
} pool_job;

struct cpu_pool {
    int n_threads;
    pthread_t *workers; // [n_threads - 1], tids 1 ..
    int n_started;
    pool_job job;       // written by the caller before seq is bumped
    _Atomic uint64_t seq;
    _Atomic int64_t next;
    _Atomic int running; // workers still on the current job
    _Atomic int sleepers;     // workers asleep on `wake`
    _Atomic int caller_asleep; // the caller asleep on `done`
    _Atomic int quit;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
};

typedef struct worker_arg {
    cpu_pool *p;
    int tid;
} worker_arg;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// spin_then_yield: waits until done(ctx) or the spin and yield phases are over;
// returns done(ctx). The clock is read every 64 checks: a read costs ~20 ns.
static int spin_then_yield(int (*done)(void *), void *ctx) {
    uint64_t t0 = now_ns(), t = t0;
    for (unsigned i = 1; t - t0 < POOL_SPIN_NS; i++) {
        if (done(ctx)) return 1;
        cpu_relax();
        if (i % 64 == 0) t = now_ns();
    }
    while (t - t0 < POOL_SPIN_NS + POOL_YIELD_NS) {
        if (done(ctx)) return 1;
        sched_yield();
        t = now_ns();
    }
    return done(ctx);
}

static void grab_items(cpu_pool *p, const pool_job *job, int tid) {
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= job->n_items) return;
        job->fn(job->arg, i, tid);
    }
}

typedef struct seq_wait {
    cpu_pool *p;
    uint64_t seen;
} seq_wait;

static int seq_moved(void *ctx) {
    seq_wait *w = ctx;
    return atomic_load_explicit(&w->p->seq, memory_order_acquire) != w->seen ||
           atomic_load_explicit(&w->p->quit, memory_order_relaxed);
}

static int job_finished(void *ctx) {
    cpu_pool *p = ctx;
    return atomic_load_explicit(&p->running, memory_order_acquire) == 0;
}

static void *worker_main(void *varg) {
    worker_arg wa = *(worker_arg *)varg;
    free(varg);
    cpu_pool *p = wa.p;
    seq_wait w = {p, 0};
    for (;;) {
        if (!spin_then_yield(seq_moved, &w)) {
            pthread_mutex_lock(&p->mu);
            // sleepers++ before re-reading seq, the caller bumps seq before reading
            // sleepers (both sequentially consistent): one of us sees the other.
            atomic_fetch_add(&p->sleepers, 1);
            while (!seq_moved(&w))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->quit, memory_order_relaxed)) return NULL;
        w.seen = atomic_load_explicit(&p->seq, memory_order_acquire);
        const pool_job job = p->job;
        if (wa.tid < job.n_threads) grab_items(p, &job, wa.tid);
        // The same pairing as `sleepers`, with the caller's sleep on `done`.
        if (atomic_fetch_sub(&p->running, 1) == 1 && atomic_load(&p->caller_asleep)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void wake_sleepers(cpu_pool *p) {
    if (atomic_load(&p->sleepers) == 0) return;
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

void cpu_pool_free(cpu_pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    atomic_fetch_add(&p->seq, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

snp_status cpu_pool_create(int n_threads, cpu_pool **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 4096)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: %d threads: expected 1 to 4096", n_threads);
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return snp_fail(SNP_ERR_MEMORY, "cpu: out of memory for a pool of %d", n_threads);
    p->n_threads = n_threads;
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (!p->workers) {
        cpu_pool_free(p);
        return snp_fail(SNP_ERR_MEMORY, "cpu: out of memory for a pool of %d", n_threads);
    }
    for (int i = 0; i < n_threads - 1; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int rc = wa ? 0 : -1;
        if (wa) {
            *wa = (worker_arg){p, i + 1};
            rc = pthread_create(&p->workers[i], NULL, worker_main, wa);
            if (rc != 0) free(wa);
            else p->n_started++;
        }
        if (rc != 0) {
            cpu_pool_free(p);
            return snp_fail(SNP_ERR_MEMORY, "cpu: could not start worker thread %d of %d", i + 1,
                            n_threads);
        }
    }
    *out = p;
    return SNP_OK;
}

void cpu_pool_for(cpu_pool *p, int n_threads, int64_t n_items, cpu_pool_fn fn, void *arg) {
    if (n_items <= 0) return;
    if (n_threads > p->n_threads) n_threads = p->n_threads;
    if (n_threads > n_items) n_threads = (int)n_items;
    if (n_threads <= 1) {
        for (int64_t i = 0; i < n_items; i++)
            fn(arg, i, 0);
        return;
    }
    // Every worker acknowledges every job, in the team or not: then no worker can
    // still be copying p->job when the next call overwrites it.
    p->job = (pool_job){fn, arg, n_items, n_threads};
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->running, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->seq, 1); // publishes job, next and running
    wake_sleepers(p);
    grab_items(p, &p->job, 0);
    if (spin_then_yield(job_finished, p)) return;
    // A worker is still on a long item (prefill), or was never scheduled: sleep.
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_asleep, 1);
    while (!job_finished(p))
        pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->caller_asleep, 0);
    pthread_mutex_unlock(&p->mu);
}
