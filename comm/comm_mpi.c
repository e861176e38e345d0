// comm_mpi: the Open MPI (any MPI-3) backend of comm: host-memory collectives on a
// duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so MPI failures come back as
// statuses. Counting, argument checks and fault injection are comm.c's job.
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_backend.h"

typedef struct comm_mpi {
    MPI_Comm world; // our duplicate of MPI_COMM_WORLD: errors return, tags stay ours
    MPI_Comm node;  // the ranks sharing this host (MPI_COMM_TYPE_SHARED)
    MPI_Comm probe; // another duplicate, for liveness pings while a collective is stuck
    char (*hosts)[COMM_HOST_CAPACITY]; // every rank's host, for naming a lost peer
    int rank, size;
    const char *host; // points into the caller's comm_topology, for messages
    int owns_mpi;     // we called MPI_Init_thread, so we call MPI_Finalize
    double timeout_s;
} comm_mpi;

// Largest count per MPI call: counts are int, and staying under 2 GiB per call
// keeps clear of the large-message paths MPI implementations test least.
// (-DCOMM_MPI_MAX_COUNT=1000 exercises the chunking with small buffers.)
#ifndef COMM_MPI_MAX_COUNT
#define COMM_MPI_MAX_COUNT (1 << 28)
#endif
enum { MPI_MAX_COUNT = COMM_MPI_MAX_COUNT };

static snp_status mpi_fail(const comm_mpi *m, int rc, const char *call, const char *func,
                           const char *file, int line) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", rc);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (m && m->rank >= 0)
        return snp_fail(SNP_ERR_COMM, "comm: rank %d/%d (%s): %s failed in %s (%s:%d): %s", m->rank,
                        m->size, m->host, call, func, base, line, text);
    return snp_fail(SNP_ERR_COMM, "comm: rank ?: %s failed in %s (%s:%d): %s", call, func, base,
                    line, text);
}

// MPI_TRY(m, call): evaluates call once; a result other than MPI_SUCCESS returns
// SNP_ERR_COMM with the call's text, function, file:line, rank and MPI's own string.
#define MPI_TRY(m, call)                                                                           \
    do {                                                                                           \
        int mpi_try_rc_ = (call);                                                                  \
        if (mpi_try_rc_ != MPI_SUCCESS)                                                            \
            return mpi_fail((m), mpi_try_rc_, #call, __func__, __FILE__, __LINE__);                \
    } while (0)

// Liveness pings, on m->probe so they never match the stuck collective's messages.
// A rank waiting in a collective with a deadline answers pings as it polls, so one
// that times out learns which peers are still in MPI and which are silent.
enum { TAG_PING = 1, TAG_PONG = 2 };

// Answers every ping that has arrived (a pong is one int, sent and forgotten).
static void answer_pings(comm_mpi *m) {
    if (m->probe == MPI_COMM_NULL) return;
    for (;;) {
        int flag = 0, token = 0;
        MPI_Status status;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, m->probe, &flag, &status) != MPI_SUCCESS || !flag)
            return;
        if (MPI_Recv(&token, 1, MPI_INT, status.MPI_SOURCE, TAG_PING, m->probe,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return;
        MPI_Request req;
        if (MPI_Isend(&m->rank, 1, MPI_INT, status.MPI_SOURCE, TAG_PONG, m->probe, &req) ==
            MPI_SUCCESS)
            MPI_Request_free(&req);
    }
}

// How long a rank that timed out waits for its peers' pongs: long enough for a peer
// that entered the collective a little later to be polling, short next to T.
static double ping_window_s(double timeout_s) {
    double w = timeout_s / 10.0;
    return w < 1.0 ? (timeout_s < 1.0 ? timeout_s : 1.0) : (w > 30.0 ? 30.0 : w);
}

// After a timeout: pings every peer and writes into out[cap] the ranks (with their
// hosts) that did not answer within the window, or a sentence saying all did.
// The requests to silent peers stay pending: the job is about to be aborted.
static void find_silent_peers(comm_mpi *m, char *out, size_t cap) {
    const double window = ping_window_s(m->timeout_s);
    int *answered = calloc((size_t)m->size, sizeof *answered);
    MPI_Request *recv = calloc((size_t)m->size, sizeof *recv);
    int *tokens = calloc((size_t)m->size, sizeof *tokens);
    int posted = 0;
    if (m->probe == MPI_COMM_NULL) {
        snprintf(out, cap, "; a comm_split group: no liveness check");
        goto done;
    }
    if (!answered || !recv || !tokens) {
        snprintf(out, cap, "; no liveness check (out of memory)");
        goto done;
    }
    for (int r = 0; r < m->size; r++) {
        recv[r] = MPI_REQUEST_NULL;
        if (r == m->rank) continue;
        MPI_Request sreq;
        if (MPI_Isend(&m->rank, 1, MPI_INT, r, TAG_PING, m->probe, &sreq) == MPI_SUCCESS)
            MPI_Request_free(&sreq);
        MPI_Irecv(&tokens[r], 1, MPI_INT, r, TAG_PONG, m->probe, &recv[r]);
    }
    posted = 1;
    answered[m->rank] = 1;
    double t0 = MPI_Wtime();
    int n_answered = 1;
    while (n_answered < m->size && MPI_Wtime() - t0 < window) {
        answer_pings(m); // a peer timing out at the same moment pings us too
        for (int r = 0; r < m->size; r++) {
            int done = 0;
            if (answered[r] || MPI_Test(&recv[r], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done)
                continue;
            answered[r] = 1;
            n_answered++;
        }
        sched_yield();
    }
    if (n_answered == m->size) {
        snprintf(out, cap,
                 "; every other rank answered a ping within %g s, so none is gone: the ranks "
                 "may have called collectives in different orders",
                 window);
        goto done;
    }
    size_t len = (size_t)snprintf(out, cap, "; no answer within %g s from", window);
    int listed = 0;
    for (int r = 0; r < m->size && len < cap; r++) {
        if (answered[r]) continue;
        if (listed == 8) {
            len += (size_t)snprintf(out + len, cap - len, " and %d more", m->size - n_answered - 8);
            break;
        }
        len += (size_t)snprintf(out + len, cap - len, "%s rank %d (%s)", listed ? "," : "", r,
                                m->hosts ? m->hosts[r] : "?");
        listed++;
    }
    if (len < cap)
        snprintf(out + len, cap - len,
                 ": that rank is gone or hung, or its host has lost its network link");
done:
    // A pong still on its way must not land in freed memory.
    for (int r = 0; posted && r < m->size; r++) {
        if (recv[r] == MPI_REQUEST_NULL) continue;
        MPI_Cancel(&recv[r]);
        MPI_Wait(&recv[r], MPI_STATUS_IGNORE);
    }
    free(answered);
    free(recv);
    free(tokens);
}

// Waits for a nonblocking collective, failing after m->timeout_s. Used only when a
// timeout is set: the blocking collectives are faster and are used otherwise.
static snp_status mpi_wait_deadline(comm_mpi *m, MPI_Request *req, const char *what,
                                    size_t n_bytes) {
    double t0 = MPI_Wtime();
    for (unsigned spin = 0;; spin++) {
        int done = 0;
        MPI_TRY(m, MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done) return SNP_OK;
        // Polling drives MPI's progress; yielding after a burst lets oversubscribed
        // ranks (more ranks than cores, as in CI) reach the collective at all.
        if (spin > 256) sched_yield();
        if ((spin & 255) == 0) answer_pings(m);
        if ((spin & 255) == 0 && MPI_Wtime() - t0 > m->timeout_s) {
            // The request stays pending: the caller is expected to abort the job.
            char silent[1024];
            find_silent_peers(m, silent, sizeof silent);
            return snp_fail(SNP_ERR_COMM,
                            "comm: rank %d/%d (%s): %s of %zu bytes did not complete within %g s "
                            "(SNAPTP_COMM_TIMEOUT_S)%s",
                            m->rank, m->size, m->host, what, n_bytes, m->timeout_s, silent);
        }
    }
}

static void mpi_free(void *ctx) {
    comm_mpi *m = ctx;
    if (!m) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (m->node != MPI_COMM_NULL) MPI_Comm_free(&m->node);
        if (m->probe != MPI_COMM_NULL) MPI_Comm_free(&m->probe);
        if (m->world != MPI_COMM_NULL) MPI_Comm_free(&m->world);
        if (m->owns_mpi) MPI_Finalize();
    }
    free(m->hosts);
    free(m);
}

static snp_status mpi_setup(comm_mpi *m, int *argc, char ***argv, comm_topology *topo) {
    int initialized = 0, finalized = 0;
    MPI_TRY(m, MPI_Finalized(&finalized));
    if (finalized)
        return snp_fail(SNP_ERR_COMM, "comm: MPI was already finalized in this process; "
                                      "comm_init may be called once per process");
    MPI_TRY(m, MPI_Initialized(&initialized));
    if (!initialized) {
        // FUNNELED: the CPU pool's workers never call MPI, only the thread that ran init.
        int provided = MPI_THREAD_SINGLE;
        MPI_TRY(m, MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        m->owns_mpi = 1;
        if (provided < MPI_THREAD_FUNNELED)
            return snp_fail(SNP_ERR_COMM,
                            "comm: MPI provides thread level %d, snaptp needs MPI_THREAD_FUNNELED "
                            "(%d)",
                            provided, MPI_THREAD_FUNNELED);
    }
    MPI_TRY(m, MPI_Comm_dup(MPI_COMM_WORLD, &m->world));
    MPI_TRY(m, MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN));
    MPI_TRY(m, MPI_Comm_rank(m->world, &m->rank));
    MPI_TRY(m, MPI_Comm_size(m->world, &m->size));

    char name[MPI_MAX_PROCESSOR_NAME] = "";
    int len = 0;
    if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS || !name[0])
        if (gethostname(name, sizeof name) != 0) snprintf(name, sizeof name, "unknown-host");
    snprintf(topo->host, sizeof topo->host, "%s", name);

    MPI_TRY(m,
            MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &m->node));
    MPI_TRY(m, MPI_Comm_set_errhandler(m->node, MPI_ERRORS_RETURN));
    MPI_TRY(m, MPI_Comm_rank(m->node, &topo->local_rank));
    MPI_TRY(m, MPI_Comm_size(m->node, &topo->local_size));
    topo->rank = m->rank;
    topo->size = m->size;

    MPI_TRY(m, MPI_Comm_dup(m->world, &m->probe));
    MPI_TRY(m, MPI_Comm_set_errhandler(m->probe, MPI_ERRORS_RETURN));
    m->hosts = calloc((size_t)m->size, sizeof *m->hosts);
    if (!m->hosts)
        return snp_fail(SNP_ERR_MEMORY, "comm: rank %d/%d (%s): out of memory for %d host names",
                        m->rank, m->size, topo->host, m->size);
    MPI_TRY(m, MPI_Allgather(topo->host, COMM_HOST_CAPACITY, MPI_CHAR, m->hosts,
                             COMM_HOST_CAPACITY, MPI_CHAR, m->world));
    return SNP_OK;
}

static snp_status mpi_init(int *argc, char ***argv, const comm_backend_options *opt,
                           comm_topology *topo, void **out_ctx) {
    *out_ctx = NULL;
    comm_mpi *m = calloc(1, sizeof *m);
    if (!m) return snp_fail(SNP_ERR_MEMORY, "comm: out of memory for the MPI context");
    m->world = MPI_COMM_NULL;
    m->node = MPI_COMM_NULL;
    m->probe = MPI_COMM_NULL;
    m->rank = -1;
    m->host = topo->host;
    m->timeout_s = opt ? opt->timeout_s : 0.0;
    snp_status st = mpi_setup(m, argc, argv, topo);
    if (st != SNP_OK) {
        mpi_free(m);
        return st;
    }
    *out_ctx = m;
    return SNP_OK;
}

static snp_status mpi_split(void *ctx, int color, comm_topology *topo, void **out_ctx) {
    comm_mpi *parent = ctx;
    *out_ctx = NULL;
    comm_mpi *m = calloc(1, sizeof *m);
    if (!m) return snp_fail(SNP_ERR_MEMORY, "comm: out of memory for a sub-communicator");
    *m = (comm_mpi){.world = MPI_COMM_NULL, .node = MPI_COMM_NULL, .probe = MPI_COMM_NULL,
                    .rank = parent->rank,
                    .size = parent->size, .host = topo->host, .timeout_s = parent->timeout_s};
    int rc = MPI_Comm_split(parent->world, color, parent->rank, &m->world);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(m->world, &topo->rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(m->world, &topo->size);
    if (rc != MPI_SUCCESS) {
        snp_status st = mpi_fail(parent, rc, "MPI_Comm_split", __func__, __FILE__, __LINE__);
        mpi_free(m);
        return st;
    }
    // Messages keep naming the rank in the whole job, which is what a user sees.
    *out_ctx = m;
    return SNP_OK;
}

static snp_status mpi_all_reduce_sum_f32(void *ctx, float *buf, size_t n) {
    comm_mpi *m = ctx;
    for (size_t off = 0; off < n; off += MPI_MAX_COUNT) {
        int count = (int)(n - off < MPI_MAX_COUNT ? n - off : MPI_MAX_COUNT);
        if (m->timeout_s > 0) {
            MPI_Request req;
            MPI_TRY(m, MPI_Iallreduce(MPI_IN_PLACE, buf + off, count, MPI_FLOAT, MPI_SUM, m->world,
                                      &req));
            TRY(mpi_wait_deadline(m, &req, "all-reduce", (size_t)count * sizeof(float)));
        } else {
            MPI_TRY(m, MPI_Allreduce(MPI_IN_PLACE, buf + off, count, MPI_FLOAT, MPI_SUM, m->world));
        }
    }
    return SNP_OK;
}

static snp_status mpi_broadcast(void *ctx, void *buf, size_t n_bytes, int root) {
    comm_mpi *m = ctx;
    char *bytes = buf;
    for (size_t off = 0; off < n_bytes; off += MPI_MAX_COUNT) {
        int count = (int)(n_bytes - off < MPI_MAX_COUNT ? n_bytes - off : MPI_MAX_COUNT);
        if (m->timeout_s > 0) {
            MPI_Request req;
            MPI_TRY(m, MPI_Ibcast(bytes + off, count, MPI_BYTE, root, m->world, &req));
            TRY(mpi_wait_deadline(m, &req, "broadcast", (size_t)count));
        } else {
            MPI_TRY(m, MPI_Bcast(bytes + off, count, MPI_BYTE, root, m->world));
        }
    }
    return SNP_OK;
}

// mpi_broadcast_idle: an MPI_Ibcast polled with sleeps that grow to 2 ms, so that a
// server's ranks waiting for work leave their cores to the others (a blocking
// MPI_Bcast spins at 100%). Pings are answered while waiting, so a peer's fault
// search still finds this rank alive.
static snp_status mpi_broadcast_idle(void *ctx, void *buf, size_t n_bytes, int root) {
    comm_mpi *m = ctx;
    if (n_bytes > MPI_MAX_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "comm: rank %d/%d (%s): idle broadcast of %zu bytes "
                        "(at most %d)", m->rank, m->size, m->host, n_bytes, MPI_MAX_COUNT);
    MPI_Request req;
    MPI_TRY(m, MPI_Ibcast(buf, (int)n_bytes, MPI_BYTE, root, m->world, &req));
    long sleep_ns = 0;
    for (unsigned spin = 0;; spin++) {
        int done = 0;
        MPI_TRY(m, MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) return SNP_OK;
        if ((spin & 63) == 0) answer_pings(m);
        if (spin < 1024) continue; // a step that follows at once: no sleep at all
        sleep_ns = sleep_ns < 2000000 ? sleep_ns + 20000 : 2000000;
        const struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
    }
}

static snp_status mpi_barrier(void *ctx) {
    comm_mpi *m = ctx;
    if (m->timeout_s > 0) {
        MPI_Request req;
        MPI_TRY(m, MPI_Ibarrier(m->world, &req));
        TRY(mpi_wait_deadline(m, &req, "barrier", 0));
    } else {
        MPI_TRY(m, MPI_Barrier(m->world));
    }
    return SNP_OK;
}

static void mpi_abort(void *ctx, int code) {
    (void)ctx;
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    // MPI_COMM_WORLD, not our duplicate: every process of the job must go, and
    // mpirun kills the ranks that are blocked in a collective.
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code ? code : 1); // no MPI (or MPI_Abort returned): end this process at least
}

const comm_ops comm_mpi_ops = {
    .name = "mpi",
    .init = mpi_init,
    .free = mpi_free,
    .split = mpi_split,
    .all_reduce_sum_f32 = mpi_all_reduce_sum_f32,
    .broadcast = mpi_broadcast,
    .broadcast_idle = mpi_broadcast_idle,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
};
