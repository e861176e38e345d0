// test_cpu_pool: the CPU backend's thread pool (kernels/cpu/cpu_pool.c): every
// item of every job runs exactly once, on a thread id inside the job's team,
// whether the workers were spinning, yielding or asleep when the job came, and
// the caller returns only after the last (slow) item is done.
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../kernels/cpu/cpu_pool.h"
#include "support/test_support.h"

enum { MAX_ITEMS = 4096 };

typedef struct count_job {
    _Atomic int hits[MAX_ITEMS];
    _Atomic int bad_tid;
    _Atomic int tids_seen; // bit per tid < 32
    int team;
    int item_us; // busy time per item
} count_job;

static void busy_us(int us) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
}

static void count_item(void *arg, int64_t item, int tid) {
    count_job *j = arg;
    if (j->item_us) busy_us(j->item_us);
    atomic_fetch_add(&j->hits[item], 1);
    if (tid < 0 || tid >= j->team) atomic_store(&j->bad_tid, 1);
    else if (tid < 32) atomic_fetch_or(&j->tids_seen, 1 << tid);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// run_job: one job of n_items on a team of `team` (of the pool's n); checks it.
static int run_job(test_counts *tc, cpu_pool *p, int n, int team, int64_t n_items,
                   const char *what) {
    static count_job j;
    for (int64_t i = 0; i < n_items; i++)
        atomic_store(&j.hits[i], 0);
    atomic_store(&j.bad_tid, 0);
    atomic_store(&j.tids_seen, 0);
    j.team = team < n ? team : n;
    if (j.team < 1) j.team = 1;
    cpu_pool_for(p, team, n_items, count_item, &j);
    int64_t wrong = -1;
    for (int64_t i = 0; i < n_items && wrong < 0; i++)
        if (atomic_load(&j.hits[i]) != 1) wrong = i;
    int ok = test_check(tc, wrong < 0, "%s: pool of %d, team %d, %lld items: item %lld ran %d times",
                        what, n, team, (long long)n_items, (long long)wrong,
                        wrong < 0 ? 1 : atomic_load(&j.hits[wrong]));
    ok &= test_check(tc, !atomic_load(&j.bad_tid), "%s: pool of %d, team %d: a tid outside the team",
                     what, n, team);
    return ok;
}

typedef struct slow_job {
    _Atomic int done;
} slow_job;

static void slow_item(void *arg, int64_t item, int tid) {
    slow_job *j = arg;
    if (item == 1) sleep_ms(30); // longer than the pool's spin and yield phases
    atomic_fetch_add(&j->done, 1);
}

int main(void) {
    test_counts tc = {0};
    const int sizes[] = {1, 2, 3, 8};
    srand(7);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int n = sizes[si];
        cpu_pool *p = NULL;
        if (!test_check(&tc, cpu_pool_create(n, &p) == SNP_OK, "create %d: %s", n, snp_error()))
            continue;
        // Back to back, as decode issues them: workers still spinning.
        int ok = 1;
        for (int k = 0; k < 4000 / n && ok; k++)
            ok = run_job(&tc, p, n, n, rand() % 200, "back to back");
        // Smaller teams and more items than the pool: the team is clamped.
        for (int team = 1; team <= n + 2; team++)
            run_job(&tc, p, n, team, MAX_ITEMS, "team sizes");
        // After a pause the workers are asleep: the job must wake them.
        for (int k = 0; k < 5; k++) {
            sleep_ms(5);
            run_job(&tc, p, n, n, 64, "after sleeping");
        }
        // One slow item: the caller waits (spin, yield, then sleep) for it.
        slow_job s = {0};
        cpu_pool_for(p, n, 4, slow_item, &s);
        test_check(&tc, atomic_load(&s.done) == 4,
                   "pool of %d: returned with %d of 4 items done", n, atomic_load(&s.done));
        // With enough work every thread of the team takes part (items of 200 us, so
        // a worker gets scheduled in time even on a busy machine).
        static count_job j;
        j.team = n;
        j.item_us = 200;
        atomic_store(&j.tids_seen, 0);
        int all = 0;
        for (int k = 0; k < 50 && !all; k++) {
            cpu_pool_for(p, n, 64, count_item, &j);
            all = atomic_load(&j.tids_seen) == (int)((1u << n) - 1);
        }
        j.item_us = 0;
        test_check(&tc, all, "pool of %d: threads seen 0x%x", n, atomic_load(&j.tids_seen));
        cpu_pool_free(p);
    }
    // Many pools started and joined: no hang, no leak (under ASan).
    for (int k = 0; k < 50; k++) {
        cpu_pool *p = NULL;
        if (!test_check(&tc, cpu_pool_create(4, &p) == SNP_OK, "create 4: %s", snp_error())) break;
        if (k % 2) run_job(&tc, p, 4, 4, 100, "short-lived pool");
        cpu_pool_free(p);
    }
    cpu_pool *bad = NULL;
    test_check(&tc, cpu_pool_create(0, &bad) != SNP_OK && bad == NULL, "a pool of 0 threads");
    return test_finish(&tc, "test_cpu_pool");
}
