// cpu_pool: persistent workers with a spin, then yield, then sleep wait (see
// cpu_pool.h for why). A job is one 64-bit ticket: the job's number in the high
// half, the next item to hand out in the low half. A thread takes item i by moving
// the ticket from (job, i) to (job, i + 1) with a compare-and-swap, and counts the
// item in `done` when it returns; the caller returns when `done` reaches the job's
// item count.
//
// Why the caller waits for items and not for workers: on a shared machine a worker
// is often descheduled when a job is published. Were every worker to acknowledge
// every job, each of the ~200 ops of a decode step would wait for that worker's next
// time slice (2 threads next to 2 busy processes: decode at a third of its fair
// share). Here the threads that run take all the items; a late worker finds the
// job's ticket spent, or a newer job's, and costs nothing but its item in flight.
//
// Why a compare-and-swap and a locked ticket: a late worker reads the job's
// descriptor (fn, arg, item count) after loading the ticket; the caller may be
// writing the next job's descriptor by then. The caller first locks the ticket
// (the next job's number, LOCKED as its item) and only then writes the descriptor,
// so a worker holding the old job's ticket cannot win an item after reading a
// newer descriptor: its compare-and-swap fails (all of it sequentially consistent,
// which makes that a single order of events).
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

// The item field of a ticket whose job is being written: no item can be taken.
#define TICKET_LOCKED 0xffffffffu
// At most this many items per published job (cpu_pool_for runs more in rounds).
#define ROUND_ITEMS ((int64_t)1 << 30)

struct cpu_pool {
    int n_threads;
    pthread_t *workers; // [n_threads - 1], tids 1 ..
    int n_started;
    // The current job, written by the caller while the ticket is locked.
    _Atomic(cpu_pool_fn) fn;
    _Atomic(void *) arg;
    _Atomic int64_t base; // the job's items are base + [0, n_items)
    _Atomic int64_t n_items;
    _Atomic int team;          // threads with tid < team take part
    _Atomic uint64_t ticket;   // job number << 32 | next item
    _Atomic int64_t done;      // items of the current job that have returned
    _Atomic int sleepers;      // workers asleep on `wake`
    _Atomic int caller_asleep; // the caller asleep on `done_cv`
    _Atomic int quit;
    pthread_mutex_t mu;
    pthread_cond_t wake, done_cv;
};

static uint32_t ticket_job(uint64_t t) {
    return (uint32_t)(t >> 32);
}
static uint32_t ticket_item(uint64_t t) {
    return (uint32_t)t;
}

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

// take_items: runs items of the job whose ticket is t until none are left or the
// ticket belongs to another job. The descriptor was read after t was loaded.
static void take_items(cpu_pool *p, uint64_t t, cpu_pool_fn fn, void *arg, int64_t base,
                       int64_t n_items, int tid) {
    const uint32_t job = ticket_job(t);
    while (ticket_job(t) == job && ticket_item(t) < (uint64_t)n_items) {
        if (!atomic_compare_exchange_weak(&p->ticket, &t, t + 1)) continue; // t reloaded
        fn(arg, base + ticket_item(t), tid);
        if (atomic_fetch_add(&p->done, 1) + 1 == n_items && atomic_load(&p->caller_asleep)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        t = atomic_load(&p->ticket);
    }
}

typedef struct job_wait {
    cpu_pool *p;
    uint32_t seen; // the last job this worker looked at
} job_wait;

// new_job: a job this worker has not looked at is published (not locked), or quit.
static int new_job(void *ctx) {
    job_wait *w = ctx;
    const uint64_t t = atomic_load(&w->p->ticket);
    return (ticket_job(t) != w->seen && ticket_item(t) != TICKET_LOCKED) ||
           atomic_load_explicit(&w->p->quit, memory_order_relaxed);
}

typedef struct items_wait {
    cpu_pool *p;
    int64_t n_items;
} items_wait;

static int items_done(void *ctx) {
    items_wait *w = ctx;
    return atomic_load(&w->p->done) == w->n_items;
}

static void *worker_main(void *varg) {
    worker_arg wa = *(worker_arg *)varg;
    free(varg);
    cpu_pool *p = wa.p;
    job_wait w = {p, 0};
    for (;;) {
        if (!spin_then_yield(new_job, &w)) {
            pthread_mutex_lock(&p->mu);
            // sleepers++ before re-reading the ticket, the caller publishes the ticket
            // before reading sleepers (both sequentially consistent): one of us sees
            // the other.
            atomic_fetch_add(&p->sleepers, 1);
            while (!new_job(&w))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->quit, memory_order_relaxed)) return NULL;
        const uint64_t t = atomic_load(&p->ticket);
        if (ticket_item(t) == TICKET_LOCKED) continue; // the next job is being written
        w.seen = ticket_job(t);
        if (wa.tid >= atomic_load(&p->team)) continue;
        const cpu_pool_fn fn = atomic_load(&p->fn);
        void *arg = atomic_load(&p->arg);
        const int64_t base = atomic_load(&p->base), n_items = atomic_load(&p->n_items);
        take_items(p, t, fn, arg, base, n_items, wa.tid);
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
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->done_cv);
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
    pthread_cond_init(&p->done_cv, NULL);
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
            if (rc != 0)
                free(wa);
            else
                p->n_started++;
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

// run_round: one published job of n_items (<= ROUND_ITEMS) items from base.
static void run_round(cpu_pool *p, int team, int64_t base, int64_t n_items, cpu_pool_fn fn,
                      void *arg) {
    const uint32_t job = ticket_job(atomic_load(&p->ticket)) + 1;
    atomic_store(&p->ticket, (uint64_t)job << 32 | TICKET_LOCKED);
    atomic_store(&p->fn, fn);
    atomic_store(&p->arg, arg);
    atomic_store(&p->base, base);
    atomic_store(&p->n_items, n_items);
    atomic_store(&p->team, team);
    atomic_store(&p->done, 0);
    atomic_store(&p->ticket, (uint64_t)job << 32); // publishes the job
    wake_sleepers(p);
    take_items(p, (uint64_t)job << 32, fn, arg, base, n_items, 0);
    items_wait w = {p, n_items};
    if (spin_then_yield(items_done, &w)) return;
    // A worker is still on a long item (prefill), or was descheduled holding one: sleep.
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_asleep, 1);
    while (!items_done(&w))
        pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_asleep, 0);
    pthread_mutex_unlock(&p->mu);
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
    for (int64_t base = 0; base < n_items; base += ROUND_ITEMS) {
        const int64_t n = n_items - base < ROUND_ITEMS ? n_items - base : ROUND_ITEMS;
        run_round(p, n_threads, base, n, fn, arg);
    }
}
