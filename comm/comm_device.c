// comm_device: SNAPTP_COMM's parser and the all-ranks check behind the choice of
// NCCL. Pure C so that the decision is tested where no GPU exists; the probes
// themselves are taken by comm_nccl.c.
#include "comm_device.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const mode_names[] = {
    [COMM_DEVICE_MODE_AUTO] = "auto",
    [COMM_DEVICE_MODE_MPI] = "mpi",
    [COMM_DEVICE_MODE_NCCL] = "nccl",
};
_Static_assert(sizeof mode_names / sizeof mode_names[0] == COMM_DEVICE_MODE_COUNT,
               "one name per mode");

static const char *const probe_sentences[] = {
    [COMM_DEVICE_PROBE_OK] = "can use its GPU",
    [COMM_DEVICE_PROBE_NO_DEVICE] = "has no CUDA device",
    [COMM_DEVICE_PROBE_BAD_ORDINAL] = "asked for a CUDA device it does not have",
    [COMM_DEVICE_PROBE_CUDA_ERROR] = "could not select or query its CUDA device",
};
_Static_assert(sizeof probe_sentences / sizeof probe_sentences[0] == COMM_DEVICE_PROBE_CODE_COUNT,
               "one sentence per probe code");

snp_status comm_device_mode_parse(const char *value, comm_device_mode *out) {
    *out = COMM_DEVICE_MODE_AUTO;
    if (!value || !*value) return SNP_OK;
    for (int m = 0; m < COMM_DEVICE_MODE_COUNT; m++) {
        if (strcasecmp(value, mode_names[m]) == 0) {
            *out = (comm_device_mode)m;
            return SNP_OK;
        }
    }
    return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_COMM='%s': expected auto, mpi or nccl", value);
}

const char *comm_device_mode_name(comm_device_mode mode) {
    return (unsigned)mode < COMM_DEVICE_MODE_COUNT ? mode_names[mode] : "unknown";
}

void comm_device_probe_pack(const comm_device_probe *p, float *row) {
    row[0] = (float)p->code;
    for (int i = 0; i < 8; i++)
        row[1 + i] = (float)((unsigned)p->uuid[2 * i] << 8 | p->uuid[2 * i + 1]);
}

void comm_device_probe_unpack(const float *row, comm_device_probe *p) {
    // A sum of one non-zero row and zeros is exact; anything else is a bug upstream,
    // and reads as a CUDA error rather than as a usable device.
    int code = (int)row[0];
    p->code = code >= 0 && code < COMM_DEVICE_PROBE_CODE_COUNT && (float)code == row[0]
                  ? (comm_device_probe_code)code
                  : COMM_DEVICE_PROBE_CUDA_ERROR;
    for (int i = 0; i < 8; i++) {
        unsigned w = row[1 + i] >= 0.0f && row[1 + i] <= 65535.0f ? (unsigned)row[1 + i] : 0u;
        p->uuid[2 * i] = (uint8_t)(w >> 8);
        p->uuid[2 * i + 1] = (uint8_t)(w & 0xffu);
    }
}

int comm_device_probe_check(const comm_device_probe *probes, int size, char *note,
                            size_t note_cap) {
    for (int r = 0; r < size; r++) {
        if (probes[r].code != COMM_DEVICE_PROBE_OK) {
            unsigned code = (unsigned)probes[r].code;
            snprintf(note, note_cap, "rank %d %s", r,
                     code < COMM_DEVICE_PROBE_CODE_COUNT ? probe_sentences[code]
                                                         : "reported an unknown device state");
            return 0;
        }
    }
    // NCCL refuses two ranks on one GPU; two ranks sharing one (the host-staged
    // fallback's use case) must therefore stay on MPI.
    for (int a = 0; a < size; a++) {
        for (int b = a + 1; b < size; b++) {
            if (memcmp(probes[a].uuid, probes[b].uuid, sizeof probes[a].uuid) == 0) {
                const uint8_t *u = probes[a].uuid;
                snprintf(note, note_cap,
                         "ranks %d and %d share one GPU (GPU-%02x%02x%02x%02x-...); NCCL needs "
                         "one GPU per rank",
                         a, b, u[0], u[1], u[2], u[3]);
                return 0;
            }
        }
    }
    snprintf(note, note_cap, "every rank of %d has its own GPU", size);
    return 1;
}
