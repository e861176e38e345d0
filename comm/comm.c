// comm: the public communicator API over the backend op tables (comm_backend.h):
// argument checks with the rank in every message, counters, the fault-injection
// hook, the choice of device backend, and the abort path. Moving bytes is the
// backends' job (comm_mpi.c for the job and host memory, comm_nccl.c for device
// buffers).
//
// Environment, read once by comm_init:
//   SNAPTP_FAULT="rank=R,at=OP:N[,mode=M]"  (tests) rank R fails at its N-th call of
//       OP (allreduce, broadcast, barrier), counted from comm_init and never reset.
//       M: error (the call returns SNP_ERR_COMM; the caller then comm_fail()s),
//       kill (SIGKILL), hang (sleeps forever), exit (_exit(3) without finalize).
//   SNAPTP_COMM_TIMEOUT_S=T  (T > 0) a collective that has waited T seconds fails
//       with SNP_ERR_COMM naming the rank, so a hung peer cannot hang the job
//       forever. Off by default: collectives then use MPI's blocking calls. With
//       NCCL each device all-reduce then waits for its result, and a stuck one
//       aborts the NCCL communicator.
//   SNAPTP_COMM=auto|mpi|nccl  who sums device buffers once a device backend calls
//       comm_device_setup. auto (default): NCCL when the build has it, the job has
//       more than one rank, and every rank has a GPU of its own; otherwise MPI,
//       which the model reaches by staging device buffers through host memory
//       (two ranks sharing one GPU take that path). mpi: always the staged path.
//       nccl: NCCL or an error, also for a job of one (to test NCCL on one GPU).
//       Every rank must be given the same value.
#include "comm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_backend.h"
#include "comm_device.h"
#include "comm_fault.h"
#include "comm_net.h"

enum { COMM_NOTE_CAPACITY = 320 };

struct comm {
    const comm_ops *ops; // the host backend: the job and host-memory collectives
    void *ctx;
    comm_topology topo;
    comm_counters counters;
    comm_fault fault;
    uint64_t n_calls[COMM_FAULT_OP_COUNT]; // since init, never reset: the fault's clock
    double timeout_s;
    comm_device_mode device_mode;
    const comm_device_ops *dev_ops; // non-NULL with dev_ctx once comm_device_setup chose NCCL
    void *dev_ctx;
    int dev_device;
    int is_split; // comm_split groups carry host collectives only
    int spans_hosts; // some rank lives on another host: all-reduces are measured on the wire
    comm_net net;
    char dev_note[COMM_NOTE_CAPACITY + 16]; // "auto: " + a backend's note
};

// The NCCL backend lives in the CUDA library, which exists only when nvcc was found.
static const comm_device_ops *nccl_backend(void) {
#ifdef SNAPTP_HAVE_CUDA
    return comm_nccl_device_ops();
#else
    return NULL;
#endif
}

static const char *no_nccl_reason(void) {
#ifdef SNAPTP_HAVE_CUDA
    return "its CUDA library was built without libnccl";
#else
    return "it was built without CUDA";
#endif
}

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
    TRY_GOTO(st, comm_device_mode_parse(getenv("SNAPTP_COMM"), &c->device_mode), fail);
    if (c->device_mode == COMM_DEVICE_MODE_NCCL && !nccl_backend()) {
        st = snp_fail(SNP_ERR_UNSUPPORTED, "SNAPTP_COMM=nccl: this snaptp has no NCCL (%s)",
                      no_nccl_reason());
        goto fail;
    }
    c->timeout_s = opt.timeout_s;
    snprintf(c->dev_note, sizeof c->dev_note, "%s",
             c->device_mode == COMM_DEVICE_MODE_MPI ? "SNAPTP_COMM=mpi"
                                                    : "no device communicator asked for "
                                                      "(host-memory backend)");
    c->ops = &comm_mpi_ops;
    TRY_GOTO(st, c->ops->init(argc, argv, &opt, &c->topo, &c->ctx), fail);
    c->spans_hosts = c->topo.local_size < c->topo.size;
    comm_net_init(&c->net);
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
    if (!g)
        return snp_fail(SNP_ERR_MEMORY, "comm: rank %d: out of memory for a split", c->topo.rank);
    g->ops = c->ops;
    g->topo = c->topo; // host and local rank stay those of the process
    g->timeout_s = c->timeout_s;
    g->device_mode = c->device_mode;
    g->is_split = 1;
    g->spans_hosts = c->spans_hosts;
    comm_net_init(&g->net);
    snprintf(g->dev_note, sizeof g->dev_note, "a comm_split group: host collectives only");
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
    // NCCL goes first: its teardown may still need the job that MPI holds together.
    if (c->dev_ops && c->dev_ctx) c->dev_ops->free(c->dev_ctx);
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
    if (c && c->dev_ctx) return c->dev_ops->name;
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
    // Rescanning the process's sockets each time (tens of microseconds) finds the
    // connections MPI opens lazily, on the first message to each peer; the cost is
    // paid only by jobs that span hosts, where one network round trip costs more.
    const int measure = c->spans_hosts && n > 0;
    const uint64_t net0 = measure ? comm_net_sample(&c->net, 1) : 0;
    double t0 = now_s();
    if (n > 0 && c->topo.size > 1) TRY(c->ops->all_reduce_sum_f32(c->ctx, buf, n));
    c->counters.all_reduce_s += now_s() - t0;
    if (measure) c->counters.all_reduce_net_bytes += comm_net_sample(&c->net, 1) - net0;
    c->counters.all_reduce_calls++;
    c->counters.all_reduce_elems += n;
    c->counters.all_reduce_bytes += n * sizeof(float);
    return SNP_OK;
}

// same_mode_everywhere: the ranks must agree on SNAPTP_COMM before any of them
// enters NCCL's init, or the ones that did would wait there forever.
static snp_status same_mode_everywhere(comm *c) {
    if (c->topo.size == 1) return SNP_OK;
    float votes[COMM_DEVICE_MODE_COUNT] = {0};
    votes[c->device_mode] = 1.0f;
    TRY(c->ops->all_reduce_sum_f32(c->ctx, votes, COMM_DEVICE_MODE_COUNT));
    for (int m = 0; m < COMM_DEVICE_MODE_COUNT; m++) {
        if (votes[m] != 0.0f && votes[m] != (float)c->topo.size)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "comm: rank %d/%d (%s): SNAPTP_COMM differs between ranks (%g of %d "
                            "ranks have '%s', this one '%s'); give every rank the same value",
                            c->topo.rank, c->topo.size, c->topo.host, (double)votes[m],
                            c->topo.size, comm_device_mode_name((comm_device_mode)m),
                            comm_device_mode_name(c->device_mode));
    }
    return SNP_OK;
}

snp_status comm_device_setup(comm *c, int device) {
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "comm: device setup: communicator is NULL");
    if (c->is_split || device < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "comm: rank %d/%d (%s): device setup %s", c->topo.rank,
                        c->topo.size, c->topo.host,
                        c->is_split ? "on a comm_split group: call it on comm_init's communicator"
                                    : "with a negative device ordinal");
    if (c->dev_ctx) {
        if (device == c->dev_device) return SNP_OK;
        return snp_fail(SNP_ERR_ARGUMENT,
                        "comm: rank %d/%d (%s): the device communicator is on device %d; it "
                        "cannot move to device %d",
                        c->topo.rank, c->topo.size, c->topo.host, c->dev_device, device);
    }
    TRY(same_mode_everywhere(c));
    const comm_device_ops *ops = nccl_backend();
    // Every condition of an early decline below reads the same on every rank (the
    // mode, the build, the size), so no rank goes on into a collective alone.
    if (c->device_mode == COMM_DEVICE_MODE_MPI) {
        snprintf(c->dev_note, sizeof c->dev_note, "SNAPTP_COMM=mpi");
        return SNP_OK;
    }
    if (c->device_mode == COMM_DEVICE_MODE_AUTO && !ops) {
        snprintf(c->dev_note, sizeof c->dev_note, "auto: this snaptp has no NCCL (%s)",
                 no_nccl_reason());
        return SNP_OK;
    }
    if (c->device_mode == COMM_DEVICE_MODE_AUTO && c->topo.size == 1) {
        snprintf(c->dev_note, sizeof c->dev_note,
                 "auto: a job of one rank has nothing to all-reduce");
        return SNP_OK;
    }
    const comm_device_options opt = {.device = device,
                                     .required = c->device_mode == COMM_DEVICE_MODE_NCCL,
                                     .timeout_s = c->timeout_s};
    char note[COMM_NOTE_CAPACITY] = "";
    void *ctx = NULL;
    snp_status st = ops->init(c->ops, c->ctx, &c->topo, &opt, &ctx, note, sizeof note);
    if (st != SNP_OK) {
        snprintf(c->dev_note, sizeof c->dev_note, "%s failed to start: %s", ops->name, snp_error());
        return st;
    }
    if (!ctx) {
        snprintf(c->dev_note, sizeof c->dev_note, "auto: %s", note);
        return SNP_OK;
    }
    c->dev_ops = ops;
    c->dev_ctx = ctx;
    c->dev_device = device;
    snprintf(c->dev_note, sizeof c->dev_note, "%s", note);
    return SNP_OK;
}

int comm_has_device_collectives(const comm *c) {
    return c && c->dev_ctx;
}

const char *comm_device_note(const comm *c) {
    return c ? c->dev_note : "no communicator";
}

static size_t elem_bytes(comm_elem_type type) {
    return type == COMM_ELEM_BF16 ? 2 : 4;
}

snp_status comm_all_reduce_sum_device(comm *c, void *buf, size_t n, comm_elem_type type,
                                      void *stream) {
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "comm: device all-reduce: communicator is NULL");
    if ((unsigned)type >= COMM_ELEM_TYPE_COUNT || (!buf && n > 0))
        return snp_fail(SNP_ERR_ARGUMENT,
                        "comm: rank %d/%d (%s): device all-reduce of %zu elements: %s",
                        c->topo.rank, c->topo.size, c->topo.host, n,
                        !buf ? "buf is NULL" : "unknown element type");
    if (!c->dev_ctx)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "comm: rank %d/%d (%s): device all-reduce of %zu elements: this "
                        "communicator (%s) takes host memory only (%s); stage the buffer "
                        "through host memory and comm_all_reduce_sum_f32",
                        c->topo.rank, c->topo.size, c->topo.host, n, c->ops->name, c->dev_note);
    // The same fault clock as host all-reduces: a test's "allreduce:N" means the
    // N-th all-reduce of the model, whichever path it takes.
    TRY(fault_point(c, COMM_FAULT_OP_ALL_REDUCE));
    double t0 = now_s();
    // Even with one rank: NCCL's own path is then exercised on a single GPU.
    if (n > 0) TRY(c->dev_ops->all_reduce_sum(c->dev_ctx, buf, n, type, stream));
    c->counters.all_reduce_s += now_s() - t0;
    c->counters.all_reduce_calls++;
    c->counters.all_reduce_device_calls++;
    c->counters.all_reduce_elems += n;
    c->counters.all_reduce_bytes += n * elem_bytes(type);
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

snp_status comm_broadcast_idle(comm *c, void *buf, size_t n_bytes, int root) {
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "comm: broadcast: communicator is NULL");
    if (root < 0 || root >= c->topo.size || (!buf && n_bytes > 0))
        return snp_fail(SNP_ERR_ARGUMENT, "comm: rank %d/%d (%s): idle broadcast of %zu bytes from "
                        "root %d: bad arguments", c->topo.rank, c->topo.size, c->topo.host, n_bytes,
                        root);
    TRY(fault_point(c, COMM_FAULT_OP_BROADCAST));
    // Not timed into broadcast_s: the wait is idleness, not communication.
    if (n_bytes > 0 && c->topo.size > 1) TRY(c->ops->broadcast_idle(c->ctx, buf, n_bytes, root));
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

// A failure that every rank meets alike (a bad file, a bad flag) would print one copy
// per rank. Ranks other than 0 wait this long before printing: when rank 0 fails too,
// its abort ends them during the wait and the message appears once; when only they
// fail, theirs appears a moment later.
enum { ABORT_GRACE_MS = 500 };

void comm_abort(comm *c, int code, const char *message) {
    if (c && c->topo.size > 1 && c->topo.rank != 0) {
        const struct timespec grace = {ABORT_GRACE_MS / 1000, (ABORT_GRACE_MS % 1000) * 1000000L};
        nanosleep(&grace, NULL);
    }
    if (c)
        fprintf(stderr, "[rank %d/%d %s] %s\n", c->topo.rank, c->topo.size, c->topo.host,
                message ? message : "aborting");
    else
        fprintf(stderr, "[rank ?] %s\n", message ? message : "aborting");
    fflush(stderr);
    fflush(stdout);
    // NCCL first: a rank that leaves without ncclCommAbort can leave its peers'
    // collective kernels spinning on the GPU after MPI has killed the processes.
    if (c && c->dev_ops && c->dev_ctx) c->dev_ops->abort(c->dev_ctx);
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
