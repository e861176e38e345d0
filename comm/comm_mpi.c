// comm_mpi: the Open MPI (any MPI-3) backend of comm: host-memory collectives on a
// duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so MPI failures come back as
// statuses. Counting, argument checks and fault injection are comm.c's job.
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_backend.h"

typedef struct comm_mpi {
    MPI_Comm world; // our duplicate of MPI_COMM_WORLD: errors return, tags stay ours
    MPI_Comm node;  // the ranks sharing this host (MPI_COMM_TYPE_SHARED)
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
        if ((spin & 255) == 0 && MPI_Wtime() - t0 > m->timeout_s)
            // The request stays pending: the caller is expected to abort the job.
            return snp_fail(SNP_ERR_COMM,
                            "comm: rank %d/%d (%s): %s of %zu bytes did not complete within %g s "
                            "(SNAPTP_COMM_TIMEOUT_S): a peer rank is hung or gone",
                            m->rank, m->size, m->host, what, n_bytes, m->timeout_s);
    }
}

static void mpi_free(void *ctx) {
    comm_mpi *m = ctx;
    if (!m) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (m->node != MPI_COMM_NULL) MPI_Comm_free(&m->node);
        if (m->world != MPI_COMM_NULL) MPI_Comm_free(&m->world);
        if (m->owns_mpi) MPI_Finalize();
    }
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
    return SNP_OK;
}

static snp_status mpi_init(int *argc, char ***argv, const comm_backend_options *opt,
                           comm_topology *topo, void **out_ctx) {
    *out_ctx = NULL;
    comm_mpi *m = calloc(1, sizeof *m);
    if (!m) return snp_fail(SNP_ERR_MEMORY, "comm: out of memory for the MPI context");
    m->world = MPI_COMM_NULL;
    m->node = MPI_COMM_NULL;
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
    *m = (comm_mpi){.world = MPI_COMM_NULL, .node = MPI_COMM_NULL, .rank = parent->rank,
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
    .barrier = mpi_barrier,
    .abort = mpi_abort,
};
