// comm_device: the vendor-free half of device collectives: SNAPTP_COMM's modes, and
// the check that every rank can join one NCCL communicator (a usable GPU each, no
// GPU shared by two ranks). Private to comm/ and its tests; comm_nccl.c gathers the
// probes and makes the vendor calls, this file only judges them.
#ifndef SNAPTP_COMM_DEVICE_H
#define SNAPTP_COMM_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/status.h"

typedef enum comm_device_mode {
    COMM_DEVICE_MODE_AUTO, // NCCL for device backends when every rank can use it, else MPI
    COMM_DEVICE_MODE_MPI,  // never NCCL: device buffers go through host memory
    COMM_DEVICE_MODE_NCCL, // NCCL or an error
    COMM_DEVICE_MODE_COUNT
} comm_device_mode;

// comm_device_mode_parse: NULL, "" and "auto" are AUTO; "mpi", "nccl" (any case).
// Anything else is SNP_ERR_ARGUMENT naming the value and the choices.
snp_status comm_device_mode_parse(const char *value, comm_device_mode *out);

// comm_device_mode_name: "auto", "mpi", "nccl".
const char *comm_device_mode_name(comm_device_mode mode);

// What one rank found when it looked at its GPU, before any NCCL call.
typedef enum comm_device_probe_code {
    COMM_DEVICE_PROBE_OK,
    COMM_DEVICE_PROBE_NO_DEVICE,   // no CUDA device or no driver
    COMM_DEVICE_PROBE_BAD_ORDINAL, // the device asked for is not one this rank sees
    COMM_DEVICE_PROBE_CUDA_ERROR,  // selecting or querying the device failed
    COMM_DEVICE_PROBE_CODE_COUNT
} comm_device_probe_code;

typedef struct comm_device_probe {
    comm_device_probe_code code;
    uint8_t uuid[16]; // the GPU's UUID (cudaDeviceProp.uuid), zero unless code is OK
} comm_device_probe;

// A probe travels between ranks as COMM_DEVICE_PROBE_FLOATS floats (the code and
// the UUID as eight 16-bit words, all exact in fp32), so that the host
// communicator's float all-reduce can gather every rank's probe: each rank writes
// its own row of a zeroed [size][COMM_DEVICE_PROBE_FLOATS] array and the sum is
// the gather.
enum { COMM_DEVICE_PROBE_FLOATS = 9 };
void comm_device_probe_pack(const comm_device_probe *p, float *row);
void comm_device_probe_unpack(const float *row, comm_device_probe *p);

// comm_device_probe_check: 1 when all `size` probes are OK and no two share a UUID;
// otherwise 0 and a sentence in note[note_cap] naming the first rank at fault
// ("rank 1 has no CUDA device", "ranks 0 and 1 share one GPU (...)").
int comm_device_probe_check(const comm_device_probe *probes, int size, char *note, size_t note_cap);

#endif
