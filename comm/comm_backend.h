// comm_backend: the op table a communicator backend implements (comm_mpi.c now;
// an NCCL backend, bootstrapped over MPI, later). Private to comm/: the rest of
// snaptp sees only comm.h. comm.c validates arguments, counts and injects faults;
// a backend only moves data and reports its library's errors.
#ifndef SNAPTP_COMM_BACKEND_H
#define SNAPTP_COMM_BACKEND_H

#include <stddef.h>

#include "../runtime/status.h"

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
    snp_status (*barrier)(void *ctx);
    // Ends every rank of the job with `code`; does not return. ctx may be NULL.
    void (*abort)(void *ctx, int code);
} comm_ops;

extern const comm_ops comm_mpi_ops; // comm_mpi.c

#endif
