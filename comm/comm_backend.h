// comm_backend: the op tables behind comm.h: a host backend (comm_mpi.c), which
// owns the job and the host-memory collectives, and optionally a device backend
// (comm/nccl/comm_nccl.c) bootstrapped through it for device-buffer collectives.
// Private to comm/: the rest of snaptp sees only comm.h. comm.c validates
// arguments, counts and injects faults; a backend only moves data and reports its
// library's errors.
#ifndef SNAPTP_COMM_BACKEND_H
#define SNAPTP_COMM_BACKEND_H

#include <stddef.h>

#include "../runtime/status.h"
#include "comm.h"

enum { COMM_HOST_CAPACITY = 256 };

// Where this rank sits in the job, as the backend found it at init.
typedef struct comm_topology {
    int rank, size;
    int local_rank, local_size; // among the ranks that share this host's memory
    char host[COMM_HOST_CAPACITY];
} comm_topology;

typedef struct comm_backend_options {
    double timeout_s; // > 0: a collective waiting longer fails with SNP_ERR_COMM
} comm_backend_options;

// Every op gets arguments comm.c has already checked (buf non-NULL when n > 0,
// root in range) and returns a status whose message names the rank.
typedef struct comm_ops {
    const char *name;
    snp_status (*init)(int *argc, char ***argv, const comm_backend_options *opt,
                       comm_topology *topo, void **out_ctx);
    void (*free)(void *ctx); // leaves the job; NULL is a no-op
    // Collective over every rank: a communicator of the ranks that passed the same
    // color, ordered by rank; topo->rank/size are filled in for the group. The new
    // context never finalizes the library.
    snp_status (*split)(void *ctx, int color, comm_topology *topo, void **out_ctx);
    snp_status (*all_reduce_sum_f32)(void *ctx, float *buf, size_t n);
    snp_status (*broadcast)(void *ctx, void *buf, size_t n_bytes, int root);
    // The same, for a wait that may be long: sleeps between polls, no timeout.
    snp_status (*broadcast_idle)(void *ctx, void *buf, size_t n_bytes, int root);
    snp_status (*barrier)(void *ctx);
    // Ends every rank of the job with `code`; does not return. ctx may be NULL.
    void (*abort)(void *ctx, int code);
} comm_ops;

extern const comm_ops comm_mpi_ops; // comm_mpi.c

typedef struct comm_device_options {
    int device;       // this rank's CUDA device ordinal
    int required;     // 1 (SNAPTP_COMM=nccl): every obstacle is an error; 0: decline instead
    double timeout_s; // > 0: a device collective waits at most this long, then aborts
} comm_device_options;

// The device side of a communicator: collectives on device buffers, in stream order.
typedef struct comm_device_ops {
    const char *name;
    // Collective over every rank of the host context, whose ops (`host`) carry the
    // bootstrap. On success *out_ctx is the device communicator, or NULL when it
    // declined (opt->required == 0 and some rank cannot take part); either way
    // note[note_cap] says why, in one line. A failure after the ranks agreed to go
    // ahead may leave peers blocked inside the vendor's init: the caller must end the
    // job (comm_fail / comm_abort), which the launcher does.
    snp_status (*init)(const comm_ops *host, void *host_ctx, const comm_topology *topo,
                       const comm_device_options *opt, void **out_ctx, char *note, size_t note_cap);
    void (*free)(void *ctx); // NULL is a no-op; waits for the communicator's work
    // Arguments are checked by comm.c; buf is device memory of n elements.
    snp_status (*all_reduce_sum)(void *ctx, void *buf, size_t n, comm_elem_type type, void *stream);
    // Abandons every operation in flight (ncclCommAbort) so that this rank leaves no
    // kernel of a collective behind; returns. ctx may be NULL.
    void (*abort)(void *ctx);
} comm_device_ops;

// comm_nccl_device_ops: the NCCL device backend (comm/nccl/comm_nccl.c, built into
// the CUDA library), or NULL when that library was built without NCCL. Declared
// for comm.c, which calls it only in builds with the CUDA library.
const comm_device_ops *comm_nccl_device_ops(void);

#endif
