// comm: the public communicator API over a backend op table (comm_backend.h):
// argument checks with the rank in every message, counters, the fault-injection
// hook, and the abort path. Moving bytes is the backend's job (comm_mpi.c).
//
// Environment, read once by comm_init:
//   SNAPTP_FAULT="rank=R,at=OP:N[,mode=M]"  (tests) rank R fails at its N-th call of
//       OP (allreduce, broadcast, barrier), counted from comm_init and never reset.
//       M: error (the call returns SNP_ERR_COMM; the caller then comm_fail()s),
//       kill (SIGKILL), hang (sleeps forever), exit (_exit(3) without finalize).
//   SNAPTP_COMM_TIMEOUT_S=T  (T > 0) a collective that has waited T seconds fails
//       with SNP_ERR_COMM naming the rank, so a hung peer cannot hang the job
//       forever. Off by default: collectives then use MPI's blocking calls.
#include "comm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_backend.h"
#include "comm_fault.h"

struct comm {
    const comm_ops *ops;
    void *ctx;
    comm_topology topo;
    comm_counters counters;
    comm_fault fault;
    uint64_t n_calls[COMM_FAULT_OP_COUNT]; // since init, never reset: the fault's clock
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static snp_status read_timeout(double *out) {
    *out = 0.0;
    const char *v = getenv("SNAPTP_COMM_TIMEOUT_S");
    if (!v || !*v) return SNP_OK;
    char *end = NULL;
    errno = 0;
    double t = strtod(v, &end);
    if (errno || *end || !(t >= 0.0) || isinf(t))
        return snp_fail(SNP_ERR_ARGUMENT,
                        "SNAPTP_COMM_TIMEOUT_S='%s': expected seconds, a number >= 0", v);
    *out = t;
    return SNP_OK;
}

snp_status comm_init(int *argc, char ***argv, comm **out) {
    if (!out) return snp_fail(SNP_ERR_ARGUMENT, "comm: init: out is NULL");
    *out = NULL;
    comm *c = calloc(1, sizeof *c);
    if (!c) return snp_fail(SNP_ERR_MEMORY, "comm: init: out of memory");
    snp_status st = SNP_OK;
    comm_backend_options opt = {0};
    // Check the environment before joining the job: a typo in a test's
    // SNAPTP_FAULT must fail loudly, not run a test that injects nothing.
    TRY_GOTO(st, comm_fault_parse(getenv("SNAPTP_FAULT"), &c->fault), fail);
    TRY_GOTO(st, read_timeout(&opt.timeout_s), fail);
    c->ops = &comm_mpi_ops;
    TRY_GOTO(st, c->ops->init(argc, argv, &opt, &c->topo, &c->ctx), fail);
    *out = c;
    return SNP_OK;
fail:
    free(c);
    return st;
}

snp_status comm_split(comm *c, int color, comm **out) {
    if (!c || !out || color < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "comm: split: invalid arguments (color %d)", color);
    *out = NULL;
    comm *g = calloc(1, sizeof *g);
    if (!g) return snp_fail(SNP_ERR_MEMORY, "comm: rank %d: out of memory for a split", c->topo.rank);
    g->ops = c->ops;
    g->topo = c->topo; // host and local rank stay those of the process
    snp_status st = c->ops->split(c->ctx, color, &g->topo, &g->ctx);
    if (st != SNP_OK) {
        free(g);
        return st;
    }
    *out = g;
    return SNP_OK;
}

void comm_free(comm *c) {
    if (!c) return;
    if (c->ops && c->ctx) c->ops->free(c->ctx);
    free(c);
}

int comm_rank(const comm *c) {
    return c ? c->topo.rank : 0;
}
int comm_size(const comm *c) {
    return c ? c->topo.size : 1;
}
int comm_local_rank(const comm *c) {
    return c ? c->topo.local_rank : 0;
}
int comm_local_size(const comm *c) {
    return c ? c->topo.local_size : 1;
}
const char *comm_host(const comm *c) {
    return c ? c->topo.host : "?";
}
const char *comm_backend_name(const comm *c) {
    return c && c->ops ? c->ops->name : "none";
}

// Counts the call for the fault clock and fires the fault when it is due.
static snp_status fault_point(comm *c, comm_fault_op op) {
    uint64_t index = ++c->n_calls[op];
    return comm_fault_fire(&c->fault, c->topo.rank, c->topo.size, c->topo.host, op, index);
}

snp_status comm_all_reduce_sum_f32(comm *c, float *buf, size_t n) {
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "comm: all-reduce: communicator is NULL");
    if (!buf && n > 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "comm: rank %d/%d (%s): all-reduce of %zu floats: buf is NULL",
                        c->topo.rank, c->topo.size, c->topo.host, n);
    TRY(fault_point(c, COMM_FAULT_OP_ALL_REDUCE));
    double t0 = now_s();
    if (n > 0 && c->topo.size > 1) TRY(c->ops->all_reduce_sum_f32(c->ctx, buf, n));
    c->counters.all_reduce_s += now_s() - t0;
    c->counters.all_reduce_calls++;
    c->counters.all_reduce_elems += n;
    c->counters.all_reduce_bytes += n * sizeof(float);
    return SNP_OK;
}

snp_status comm_broadcast(comm *c, void *buf, size_t n_bytes, int root) {
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "comm: broadcast: communicator is NULL");
    if (root < 0 || root >= c->topo.size)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "comm: rank %d/%d (%s): broadcast root %d is not a rank (0..%d)",
                        c->topo.rank, c->topo.size, c->topo.host, root, c->topo.size - 1);
    if (!buf && n_bytes > 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "comm: rank %d/%d (%s): broadcast of %zu bytes: buf is NULL", c->topo.rank,
                        c->topo.size, c->topo.host, n_bytes);
    TRY(fault_point(c, COMM_FAULT_OP_BROADCAST));
    double t0 = now_s();
    if (n_bytes > 0 && c->topo.size > 1) TRY(c->ops->broadcast(c->ctx, buf, n_bytes, root));
    c->counters.broadcast_s += now_s() - t0;
    c->counters.broadcast_calls++;
    c->counters.broadcast_bytes += n_bytes;
    return SNP_OK;
}

snp_status comm_barrier(comm *c) {
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "comm: barrier: communicator is NULL");
    TRY(fault_point(c, COMM_FAULT_OP_BARRIER));
    if (c->topo.size > 1) TRY(c->ops->barrier(c->ctx));
    c->counters.barrier_calls++;
    return SNP_OK;
}

void comm_abort(comm *c, int code, const char *message) {
    if (c)
        fprintf(stderr, "[rank %d/%d %s] %s\n", c->topo.rank, c->topo.size, c->topo.host,
                message ? message : "aborting");
    else
        fprintf(stderr, "[rank ?] %s\n", message ? message : "aborting");
    fflush(stderr);
    fflush(stdout);
    // Without a communicator the MPI backend still knows whether MPI is up.
    const comm_ops *ops = c && c->ops ? c->ops : &comm_mpi_ops;
    ops->abort(c ? c->ctx : NULL, code);
    abort(); // a backend's abort never returns; this only keeps the promise
}

int comm_fail(comm *c, snp_status st, const char *command) {
    char message[4608];
    snprintf(message, sizeof message, "snaptp %s: %s: %s", command ? command : "",
             snp_status_name(st), snp_error());
    if (comm_size(c) > 1) comm_abort(c, 1, message);
    if (c)
        fprintf(stderr, "[rank %d/%d %s] %s\n", c->topo.rank, c->topo.size, c->topo.host, message);
    else
        fprintf(stderr, "[rank ?] %s\n", message); // comm_init failed: who we are is unknown
    fflush(stderr);
    return 1;
}

void comm_stats(const comm *c, comm_counters *out) {
    if (!out) return;
    if (!c) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = c->counters;
}

void comm_counters_reset(comm *c) {
    if (c) memset(&c->counters, 0, sizeof c->counters);
}
