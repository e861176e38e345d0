// comm_fault: test-only fault injection for the communicator, driven by the
// environment variable SNAPTP_FAULT. Private to comm/ (and its test): it parses the
// spec and acts on it; comm.c decides when a collective is due to fail.
#ifndef SNAPTP_COMM_FAULT_H
#define SNAPTP_COMM_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/status.h"

typedef enum comm_fault_op {
    COMM_FAULT_OP_NONE, // no fault configured
    COMM_FAULT_OP_ALL_REDUCE,
    COMM_FAULT_OP_BROADCAST,
    COMM_FAULT_OP_BARRIER,
    COMM_FAULT_OP_COUNT
} comm_fault_op;

typedef enum comm_fault_mode {
    COMM_FAULT_MODE_ERROR, // the collective returns SNP_ERR_COMM with a message
    COMM_FAULT_MODE_KILL,  // the rank sends itself SIGKILL (a crash, no message)
    COMM_FAULT_MODE_HANG,  // the rank sleeps forever (a deadlock or a stuck device)
    COMM_FAULT_MODE_EXIT,  // the rank calls _exit(3) without MPI_Finalize (a bare exit)
    COMM_FAULT_MODE_COUNT
} comm_fault_mode;

typedef struct comm_fault {
    comm_fault_op op; // COMM_FAULT_OP_NONE: disarmed
    int rank;         // the rank that fails
    uint64_t at;      // it fails at its at-th call of op (1-based)
    comm_fault_mode mode;
    char spec[128]; // the text it was parsed from, for messages
} comm_fault;

// comm_fault_parse: parses "rank=R,at=OP:N[,mode=M]" (OP: allreduce, broadcast,
// barrier; M: error (default), kill, hang, exit) into *out. NULL or "" disarms.
// A malformed spec is SNP_ERR_ARGUMENT naming the offending part.
snp_status comm_fault_parse(const char *spec, comm_fault *out);

// comm_fault_fire: called by comm.c before the call_index-th (1-based) call of op
// on `rank`. Returns SNP_OK when this call is not the faulty one; otherwise acts
// out the mode: returns SNP_ERR_COMM (error) or does not return (kill, hang, exit).
snp_status comm_fault_fire(const comm_fault *f, int rank, int size, const char *host,
                           comm_fault_op op, uint64_t call_index);

// comm_fault_op_name: "allreduce", "broadcast", "barrier" ("none").
const char *comm_fault_op_name(comm_fault_op op);

#endif
