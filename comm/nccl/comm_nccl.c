// comm_nccl: the NCCL device backend of comm: one ncclComm for the run, its unique
// id made on rank 0 and broadcast through the host backend (MPI), in-place sums of
// device buffers on the caller's stream, and ncclCommAbort on the way down.
// Compiled into the CUDA library; argument checks, counters and faults are comm.c's,
// and whether every rank can join (one GPU each) is judged by comm_device.c.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../comm_backend.h"

#ifdef SNAPTP_HAVE_NCCL
#include <nccl.h>
// ncclBfloat16 (2.10), ncclGetLastError (2.13) and ncclCommFinalize (2.14).
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
#define COMM_NCCL_USABLE 1
#else
#warning "NCCL older than 2.14 found: snaptp is built without its NCCL backend"
#endif
#endif

#ifndef COMM_NCCL_USABLE

const comm_device_ops *comm_nccl_device_ops(void) {
    return NULL;
}

#else

#include <cuda_runtime_api.h>
#include <sched.h>
#include <time.h>

#include "../comm_device.h"

typedef struct comm_nccl {
    ncclComm_t comm; // NULL before init and once aborted
    int device;
    int rank, size;
    const char *host; // the comm's own topology string, for messages
    double timeout_s;
    cudaEvent_t done; // recorded after a collective when a timeout is set
} comm_nccl;

static const char *base_name(const char *file) {
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

static snp_status nccl_fail(const comm_nccl *g, ncclResult_t rc, const char *call, const char *func,
                            const char *file, int line) {
    // The last error is NCCL's own detail (which peer, which transport); the comm
    // argument is unused by NCCL, so a NULL one is fine before init.
    const char *last = ncclGetLastError(g->comm);
    return snp_fail(SNP_ERR_COMM, "comm: rank %d/%d (%s): '%s' failed in %s (%s:%d): %s%s%s",
                    g->rank, g->size, g->host, call, func, base_name(file), line,
                    ncclGetErrorString(rc), last && *last ? ": " : "", last ? last : "");
}

static snp_status cuda_fail(const comm_nccl *g, cudaError_t rc, const char *call, const char *func,
                            const char *file, int line) {
    cudaGetLastError(); // a non-sticky error must not be reported again by the next CUDA call
    return snp_fail(SNP_ERR_DEVICE, "comm: rank %d/%d (%s): '%s' failed in %s (%s:%d): %s", g->rank,
                    g->size, g->host, call, func, base_name(file), line, cudaGetErrorString(rc));
}

// NCCL_TRY / COMM_CUDA_TRY: evaluate `call` once; a result other than success
// returns the status its fail function makes: the statement, the function,
// file:line, the rank and the library's own error string.
#define COMM_VENDOR_TRY(g, type, ok, fail_fn, call)                                                \
    do {                                                                                           \
        type vendor_rc_ = (call);                                                                  \
        if (vendor_rc_ != (ok))                                                                    \
            return fail_fn((g), vendor_rc_, #call, __func__, __FILE__, __LINE__);                  \
    } while (0)
#define NCCL_TRY(g, call)      COMM_VENDOR_TRY(g, ncclResult_t, ncclSuccess, nccl_fail, call)
#define COMM_CUDA_TRY(g, call) COMM_VENDOR_TRY(g, cudaError_t, cudaSuccess, cuda_fail, call)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nccl_abort(void *ctx) {
    comm_nccl *g = ctx;
    if (!g || !g->comm) return;
    // Best effort on the way down: the job is ending whatever this returns.
    ncclCommAbort(g->comm);
    g->comm = NULL;
}

static void nccl_free(void *ctx) {
    comm_nccl *g = ctx;
    if (!g) return;
    if (g->comm) {
        cudaSetDevice(g->device);
        // Finalize waits for the communicator's queued work (on every rank: comm_free
        // is collective), so that Destroy frees nothing a kernel still reads.
        if (ncclCommFinalize(g->comm) == ncclSuccess)
            ncclCommDestroy(g->comm);
        else
            ncclCommAbort(g->comm);
    }
    if (g->done) cudaEventDestroy(g->done);
    cudaGetLastError();
    free(g);
}

// probe_device: what this rank can tell about its GPU before any NCCL call; detail
// gets the CUDA runtime's own words for the local message.
static comm_device_probe probe_device(int device, char *detail, size_t cap) {
    comm_device_probe p = {.code = COMM_DEVICE_PROBE_OK};
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0) {
        snprintf(detail, cap, "no CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        p.code = COMM_DEVICE_PROBE_NO_DEVICE;
        return p;
    }
    if (device >= n_dev) {
        snprintf(detail, cap, "device %d is outside 0 .. %d", device, n_dev - 1);
        p.code = COMM_DEVICE_PROBE_BAD_ORDINAL;
        return p;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        snprintf(detail, cap, "device %d: %s", device, cudaGetErrorString(e));
        cudaGetLastError();
        p.code = COMM_DEVICE_PROBE_CUDA_ERROR;
        return p;
    }
    memcpy(p.uuid, prop.uuid.bytes, sizeof p.uuid);
    snprintf(detail, cap, "device %d (%.120s)", device, prop.name);
    return p;
}

// agree_on_devices: gathers every rank's probe through the host backend's float
// all-reduce and judges them; every rank reads the same probes, so all go on, all
// decline (*declined) or all fail (required) together.
static snp_status agree_on_devices(const comm_ops *host, void *host_ctx, const comm_nccl *g,
                                   const comm_device_probe *mine, const char *detail, int required,
                                   int *declined, char *note, size_t note_cap) {
    const size_t n = (size_t)g->size * COMM_DEVICE_PROBE_FLOATS;
    float *rows = calloc(n, sizeof *rows);
    comm_device_probe *all = calloc((size_t)g->size, sizeof *all);
    snp_status st = SNP_OK;
    if (!rows || !all) {
        st = snp_fail(SNP_ERR_MEMORY, "comm: rank %d/%d (%s): out of memory for %d probes", g->rank,
                      g->size, g->host, g->size);
        goto done;
    }
    comm_device_probe_pack(mine, rows + (size_t)g->rank * COMM_DEVICE_PROBE_FLOATS);
    TRY_GOTO(st, host->all_reduce_sum_f32(host_ctx, rows, n), done);
    for (int r = 0; r < g->size; r++)
        comm_device_probe_unpack(rows + (size_t)r * COMM_DEVICE_PROBE_FLOATS, &all[r]);
    *declined = !comm_device_probe_check(all, g->size, note, note_cap);
    if (*declined && required)
        st =
            snp_fail(SNP_ERR_DEVICE, "comm: rank %d/%d (%s): SNAPTP_COMM=nccl, but %s%s%s", g->rank,
                     g->size, g->host, note, mine->code != COMM_DEVICE_PROBE_OK ? "; here: " : "",
                     mine->code != COMM_DEVICE_PROBE_OK ? detail : "");
done:
    free(rows);
    free(all);
    return st;
}

// The id travels with rank 0's result, so that every rank gives up together when
// it could not be made instead of entering ncclCommInitRank with garbage.
typedef struct nccl_id_msg {
    int32_t rc;
    ncclUniqueId id;
} nccl_id_msg;

// nccl_start: the unique id, made on rank 0 and broadcast, then the communicator.
static snp_status nccl_start(comm_nccl *g, const comm_ops *host, void *host_ctx, int required,
                             int *declined, char *note, size_t note_cap) {
    nccl_id_msg msg;
    memset(&msg, 0, sizeof msg);
    if (g->rank == 0) msg.rc = (int32_t)ncclGetUniqueId(&msg.id);
    TRY(host->broadcast(host_ctx, &msg, sizeof msg, 0));
    if (msg.rc != ncclSuccess) {
        snprintf(note, note_cap, "rank 0 could not make an NCCL id: %s",
                 ncclGetErrorString((ncclResult_t)msg.rc));
        *declined = 1;
        if (required)
            return snp_fail(SNP_ERR_COMM, "comm: rank %d/%d (%s): SNAPTP_COMM=nccl, but %s",
                            g->rank, g->size, g->host, note);
        return SNP_OK;
    }
    // From here on a failure is this rank's alone, and its peers may be waiting
    // inside ncclCommInitRank: the caller ends the job (comm_backend.h).
    ncclComm_t comm = NULL;
    NCCL_TRY(g, ncclCommInitRank(&comm, g->size, msg.id, g->rank));
    g->comm = comm;
    COMM_CUDA_TRY(g, cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming));
    return SNP_OK;
}

static snp_status nccl_init(const comm_ops *host, void *host_ctx, const comm_topology *topo,
                            const comm_device_options *opt, void **out_ctx, char *note,
                            size_t note_cap) {
    *out_ctx = NULL;
    comm_nccl *g = calloc(1, sizeof *g);
    if (!g) return snp_fail(SNP_ERR_MEMORY, "comm: out of memory for the NCCL context");
    *g = (comm_nccl){.device = opt->device,
                     .rank = topo->rank,
                     .size = topo->size,
                     .host = topo->host,
                     .timeout_s = opt->timeout_s};
    char detail[192] = "";
    const comm_device_probe mine = probe_device(opt->device, detail, sizeof detail);
    int declined = 0;
    snp_status st = agree_on_devices(host, host_ctx, g, &mine, detail, opt->required, &declined,
                                     note, note_cap);
    if (st == SNP_OK && !declined)
        st = nccl_start(g, host, host_ctx, opt->required, &declined, note, note_cap);
    if (st != SNP_OK || declined) {
        nccl_free(g);
        return st;
    }
    int version = 0;
    ncclGetVersion(&version);
    snprintf(note, note_cap, "nccl %d.%d.%d, %s, %d rank%s", version / 10000, version / 100 % 100,
             version % 100, detail, g->size, g->size == 1 ? "" : "s");
    *out_ctx = g;
    return SNP_OK;
}

// nccl_wait: waits for everything on `stream` up to the collective just enqueued,
// for at most timeout_s; a collective NCCL reports as failed, or one still running
// at the deadline, aborts the communicator (its kernels would spin forever).
static snp_status nccl_wait(comm_nccl *g, cudaStream_t stream, size_t n_bytes) {
    COMM_CUDA_TRY(g, cudaEventRecord(g->done, stream));
    const double t0 = now_s();
    for (unsigned spin = 0;; spin++) {
        cudaError_t e = cudaEventQuery(g->done);
        if (e == cudaSuccess) return SNP_OK;
        if (e != cudaErrorNotReady)
            return cuda_fail(g, e, "cudaEventQuery(g->done)", __func__, __FILE__, __LINE__);
        ncclResult_t async = ncclSuccess;
        NCCL_TRY(g, ncclCommGetAsyncError(g->comm, &async));
        if (async != ncclSuccess && async != ncclInProgress) {
            snp_status st = nccl_fail(g, async, "ncclAllReduce (reported by ncclCommGetAsyncError)",
                                      __func__, __FILE__, __LINE__);
            nccl_abort(g);
            return st;
        }
        if ((spin & 63) == 0 && now_s() - t0 > g->timeout_s) {
            nccl_abort(g);
            return snp_fail(SNP_ERR_COMM,
                            "comm: rank %d/%d (%s): an NCCL all-reduce of %zu bytes did not "
                            "complete within %g s (SNAPTP_COMM_TIMEOUT_S; the wait includes the "
                            "work queued before it): a peer rank is hung or gone; the NCCL "
                            "communicator was aborted",
                            g->rank, g->size, g->host, n_bytes, g->timeout_s);
        }
        sched_yield();
    }
}

static snp_status nccl_all_reduce_sum(void *ctx, void *buf, size_t n, comm_elem_type type,
                                      void *stream) {
    comm_nccl *g = ctx;
    if (!g->comm)
        return snp_fail(SNP_ERR_COMM,
                        "comm: rank %d/%d (%s): the NCCL communicator was aborted after an "
                        "earlier failure",
                        g->rank, g->size, g->host);
    const ncclDataType_t dt = type == COMM_ELEM_BF16 ? ncclBfloat16 : ncclFloat32;
    const size_t n_bytes = n * (type == COMM_ELEM_BF16 ? 2 : 4);
    cudaStream_t s = (cudaStream_t)stream;
    // The caller's stream belongs to this device; NCCL launches on the current one.
    COMM_CUDA_TRY(g, cudaSetDevice(g->device));
    NCCL_TRY(g, ncclAllReduce(buf, buf, n, dt, ncclSum, g->comm, s));
    if (g->timeout_s > 0) return nccl_wait(g, s, n_bytes);
    // Without a timeout the call returns at once; what NCCL found asynchronously (a
    // peer gone, a transport error) surfaces at the next call instead of as a hang.
    ncclResult_t async = ncclSuccess;
    NCCL_TRY(g, ncclCommGetAsyncError(g->comm, &async));
    if (async != ncclSuccess && async != ncclInProgress)
        return nccl_fail(g, async, "ncclAllReduce (reported by ncclCommGetAsyncError)", __func__,
                         __FILE__, __LINE__);
    return SNP_OK;
}

static const comm_device_ops nccl_ops = {
    .name = "nccl",
    .init = nccl_init,
    .free = nccl_free,
    .all_reduce_sum = nccl_all_reduce_sum,
    .abort = nccl_abort,
};

const comm_device_ops *comm_nccl_device_ops(void) {
    return &nccl_ops;
}

#endif
