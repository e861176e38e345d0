// comm: the communicator between tensor-parallel ranks: who am I (rank, size,
// local rank, host), the collectives the model needs (all-reduce, broadcast,
// barrier), a clean way down (abort), and counters of what crossed ranks.
// No MPI or NCCL type appears here; the backend hides behind an opaque context.
#ifndef SNAPTP_COMM_H
#define SNAPTP_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/status.h"

typedef struct comm comm;

// What this rank has moved since comm_init or the last comm_counters_reset.
// Calls are counted when they complete; bytes are this rank's payload (n * 4 for
// an all-reduce of n floats, n * 2 for n bf16), not the traffic of the algorithm
// underneath. Device all-reduces count in the all_reduce fields too; their time is
// the time to enqueue them (they finish in stream order), unless
// SNAPTP_COMM_TIMEOUT_S makes each one wait.
typedef struct comm_counters {
    uint64_t all_reduce_calls;
    uint64_t all_reduce_device_calls; // of all_reduce_calls, those on device buffers (NCCL)
    uint64_t all_reduce_elems;
    uint64_t all_reduce_bytes;
    // Of the host all-reduces, the bytes this rank sent over TCP to other hosts while
    // in them, as the kernel counted them (payload, retransmissions included; not
    // headers). Measured only when the job spans hosts (0 on one host, where MPI uses
    // shared memory). Device all-reduces (NCCL) are not in it: they finish later.
    uint64_t all_reduce_net_bytes;
    uint64_t broadcast_calls;
    uint64_t broadcast_bytes;
    uint64_t barrier_calls;
    double all_reduce_s; // wall seconds inside all-reduces (imbalance shows up here)
    double broadcast_s;  // wall seconds inside broadcasts
} comm_counters;

// Element types of device-buffer collectives.
typedef enum comm_elem_type { COMM_ELEM_F32, COMM_ELEM_BF16, COMM_ELEM_TYPE_COUNT } comm_elem_type;

// comm_init: joins the job (MPI_Init_thread, FUNNELED: only the thread that called
// comm_init may call comm_*), or makes a job of one when started without mpirun.
// Reads three environment variables (comm.c documents them in full):
//   SNAPTP_FAULT="rank=R,at=allreduce:N[,mode=error|kill|hang|exit]" test fault
//   SNAPTP_COMM_TIMEOUT_S=T  a collective that waits more than T s fails (0: never)
//   SNAPTP_COMM=auto|mpi|nccl  who sums device buffers (see comm_device_setup)
// A malformed value is an error, and so is SNAPTP_COMM=nccl in a build without
// NCCL. Call once per process; free with comm_free.
snp_status comm_init(int *argc, char ***argv, comm **out);

// comm_free: leaves the job (MPI_Finalize, collective: every rank must call it).
// NULL is a no-op.
void comm_free(comm *c);

// Where this rank sits. A NULL c (comm_init failed) reads as a job of one.
int comm_rank(const comm *c);       // 0 .. size-1
int comm_size(const comm *c);       // 1 without mpirun
int comm_local_rank(const comm *c); // rank among the ranks on this host: picks the GPU
int comm_local_size(const comm *c); // ranks on this host
const char *comm_host(const comm *c);
const char *comm_backend_name(const comm *c); // "mpi", or "nccl" once comm_device_setup chose it

// comm_split: collective over every rank of c: *out holds the ranks that passed
// the same color (>= 0), ordered as in c. Used for the ranks that replicate one KV
// head when tp > KV heads. Free it with comm_free before c; it has its own
// counters and no fault injection.
snp_status comm_split(comm *c, int color, comm **out);

// comm_all_reduce_sum_f32: buf[i] = sum over ranks of buf[i], in place, i < n.
// buf is host memory; n counts elements (floats), not bytes, and must be the same
// on every rank. Every rank must call it, in the same order as the other
// collectives. On failure buf is unspecified and the message names the rank.
snp_status comm_all_reduce_sum_f32(comm *c, float *buf, size_t n);

// comm_device_setup: collective over every rank of c. Brings up the device
// communicator (NCCL, its id broadcast over MPI) on this rank's CUDA device
// `device`, as SNAPTP_COMM says: "nccl" must succeed (a job of one included);
// "auto" (the default) declines without an error when the build has no NCCL, the
// job has one rank, a rank has no usable GPU, or two ranks share one GPU; "mpi"
// always declines. Call it after opening a device backend, before the first
// device collective; again with the same device it does nothing. On failure c
// still works for host collectives, so comm_fail can end the job.
snp_status comm_device_setup(comm *c, int device);

// comm_has_device_collectives: 1 when comm_device_setup brought a device
// communicator up, so that comm_all_reduce_sum_device takes device buffers; else 0.
// Every rank gets the same answer. Always 0 for a NULL c and for comm_split groups.
int comm_has_device_collectives(const comm *c);

// comm_device_note: one line on the device side, for logs and JSON: "nccl 2.28.9,
// device 0" when up, otherwise why not ("SNAPTP_COMM=mpi", "auto: rank 1 has no
// CUDA device", "no device communicator asked for (host-memory backend)"). Free
// text for people; scripts read --json's "allreduce_path" instead. Never NULL.
const char *comm_device_note(const comm *c);

// comm_all_reduce_sum_device: buf[i] = sum over ranks of buf[i], in place, i < n,
// where buf is device memory holding n elements of `type`. Enqueued on `stream` (a
// cudaStream_t; NULL is the legacy default stream) after the work already there;
// returns before the sum is done unless SNAPTP_COMM_TIMEOUT_S is set, in which case
// it waits for it, up to that long. Every rank calls it in the same order as the
// other collectives. SNP_ERR_UNSUPPORTED when comm_has_device_collectives(c) is 0:
// the caller stages through host memory and comm_all_reduce_sum_f32 instead.
// bf16 sums are rounded by NCCL at each step of its algorithm (tp - 1 roundings).
snp_status comm_all_reduce_sum_device(comm *c, void *buf, size_t n, comm_elem_type type,
                                      void *stream);

// comm_broadcast: copies root's n_bytes of buf (host memory) into every rank's buf.
// n_bytes and root must agree on every rank; 0 <= root < size.
snp_status comm_broadcast(comm *c, void *buf, size_t n_bytes, int root);

// comm_broadcast_idle: comm_broadcast for a wait that may be long and is not a
// fault (a server's ranks waiting for rank 0's next step while no request comes):
// the waiting ranks poll with growing sleeps (up to 2 ms) instead of spinning a
// core, and no SNAPTP_COMM_TIMEOUT_S applies. Each call costs a wake-up latency of
// up to those 2 ms, so it is for the start of a step, not inside one.
snp_status comm_broadcast_idle(comm *c, void *buf, size_t n_bytes, int root);

// comm_barrier: returns when every rank has entered it.
snp_status comm_barrier(comm *c);

// comm_abort: writes "[rank r/size host] message" to stderr, flushes, and ends the
// whole job with exit code `code` (ncclCommAbort when a device communicator is up,
// then MPI_Abort on MPI_COMM_WORLD), so that no peer is left blocked in a
// collective. Never returns. c may be NULL (before comm_init).
_Noreturn void comm_abort(comm *c, int code, const char *message);

// comm_fail: the launcher's one way out of a failed status: writes
// "[rank r/size host] snaptp <command>: <status>: <snp_error()>" to stderr; when
// size > 1 it then aborts the job (never returns); when size == 1 it returns 1,
// the exit code, and the caller still calls comm_free.
int comm_fail(comm *c, snp_status st, const char *command);

// comm_stats: copies the counters into *out. comm_counters_reset zeroes them.
void comm_stats(const comm *c, comm_counters *out);
void comm_counters_reset(comm *c);

#endif
