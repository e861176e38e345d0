// cpu_pool: the CPU backend's persistent worker threads. One op = one
// cpu_pool_for: items handed out one at a time from a shared counter, the calling
// thread working as thread 0, return when every item is done.
//
// Why not an OpenMP team per op: decode runs ~200 parallel ops per token, each a
// fork and a join. OpenMP's waiters either spin without yielding (a descheduled
// team member then costs the others a whole time slice at every join: decode at 2
// threads fell from 82 to 13 tokens/s with one other busy process) or sleep in the
// kernel (a futex round trip per op). These waiters spin briefly, then yield the
// core (so a descheduled peer gets to run), then sleep on a condition variable;
// and the caller waits for the items, not for every worker to check in, so a
// worker that is descheduled when a job comes costs nothing (cpu_pool.c).
#ifndef SNAPTP_CPU_POOL_H
#define SNAPTP_CPU_POOL_H

#include <stdint.h>

#include "../../runtime/status.h"

typedef struct cpu_pool cpu_pool;

// cpu_pool_fn: does item `item` on thread `tid` (0 = the caller, < n_threads).
typedef void (*cpu_pool_fn)(void *arg, int64_t item, int tid);

// cpu_pool_create: a pool of n_threads (>= 1) threads, the caller counted: it
// starts n_threads - 1 workers, which wait for work.
snp_status cpu_pool_create(int n_threads, cpu_pool **out);
void cpu_pool_free(cpu_pool *p); // joins the workers; NULL is a no-op

// cpu_pool_for: fn(arg, i, tid) for every i in [0, n_items) on at most n_threads
// threads (clamped to the pool's; 1 runs everything on the caller, waking no one).
// One caller at a time per pool; fn must not call cpu_pool_for on the same pool.
void cpu_pool_for(cpu_pool *p, int n_threads, int64_t n_items, cpu_pool_fn fn, void *arg);

#endif
