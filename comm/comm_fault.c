// comm_fault: parses SNAPTP_FAULT and acts out the chosen failure on the chosen
// rank. It exists so that tests can prove a failure on one rank brings the whole
// job down promptly; it counts nothing itself (comm.c passes the call index).
#include "comm_fault.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const op_names[] = {
    [COMM_FAULT_OP_NONE] = "none",
    [COMM_FAULT_OP_ALL_REDUCE] = "allreduce",
    [COMM_FAULT_OP_BROADCAST] = "broadcast",
    [COMM_FAULT_OP_BARRIER] = "barrier",
};
_Static_assert(sizeof op_names / sizeof op_names[0] == COMM_FAULT_OP_COUNT, "one name per op");

static const char *const mode_names[] = {
    [COMM_FAULT_MODE_ERROR] = "error",
    [COMM_FAULT_MODE_KILL] = "kill",
    [COMM_FAULT_MODE_HANG] = "hang",
    [COMM_FAULT_MODE_EXIT] = "exit",
};
_Static_assert(sizeof mode_names / sizeof mode_names[0] == COMM_FAULT_MODE_COUNT,
               "one name per mode");

const char *comm_fault_op_name(comm_fault_op op) {
    return (unsigned)op < COMM_FAULT_OP_COUNT ? op_names[op] : "unknown";
}

// parse_u64: a whole decimal number, nothing before or after it.
static int parse_u64(const char *s, uint64_t *out) {
    if (!*s || *s == '-' || *s == '+') return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

static snp_status parse_field(const char *spec, char *key, comm_fault *f, int *seen_rank) {
    char *value = strchr(key, '=');
    if (!value)
        return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_FAULT='%s': '%s' is not key=value", spec, key);
    *value++ = '\0';
    if (strcmp(key, "rank") == 0) {
        uint64_t r;
        if (!parse_u64(value, &r) || r > 1000000)
            return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_FAULT='%s': rank '%s' is not a rank number",
                            spec, value);
        f->rank = (int)r;
        *seen_rank = 1;
    } else if (strcmp(key, "at") == 0) {
        char *colon = strchr(value, ':');
        if (!colon)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "SNAPTP_FAULT='%s': at='%s' should be OP:N (allreduce:3)", spec, value);
        *colon = '\0';
        f->op = COMM_FAULT_OP_NONE;
        for (int op = COMM_FAULT_OP_NONE + 1; op < COMM_FAULT_OP_COUNT; op++)
            if (strcmp(value, op_names[op]) == 0) f->op = (comm_fault_op)op;
        if (f->op == COMM_FAULT_OP_NONE)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "SNAPTP_FAULT='%s': unknown op '%s' (allreduce, broadcast, barrier)",
                            spec, value);
        if (!parse_u64(colon + 1, &f->at) || f->at == 0)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "SNAPTP_FAULT='%s': call number '%s' should be 1 or more", spec,
                            colon + 1);
    } else if (strcmp(key, "mode") == 0) {
        int found = 0;
        for (int m = 0; m < COMM_FAULT_MODE_COUNT; m++)
            if (strcmp(value, mode_names[m]) == 0) {
                f->mode = (comm_fault_mode)m;
                found = 1;
            }
        if (!found)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "SNAPTP_FAULT='%s': unknown mode '%s' (error, kill, hang, exit)", spec,
                            value);
    } else {
        return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_FAULT='%s': unknown key '%s' (rank, at, mode)",
                        spec, key);
    }
    return SNP_OK;
}

snp_status comm_fault_parse(const char *spec, comm_fault *out) {
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) return SNP_OK;
    if (strlen(spec) >= sizeof out->spec)
        return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_FAULT: %zu characters, more than %zu",
                        strlen(spec), sizeof out->spec - 1);
    comm_fault f = {0};
    strcpy(f.spec, spec);
    char work[sizeof f.spec];
    strcpy(work, spec);
    int seen_rank = 0;
    char *save = NULL;
    for (char *key = strtok_r(work, ",", &save); key; key = strtok_r(NULL, ",", &save))
        TRY(parse_field(spec, key, &f, &seen_rank));
    if (!seen_rank || f.op == COMM_FAULT_OP_NONE)
        return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_FAULT='%s': needs both rank=R and at=OP:N", spec);
    *out = f;
    return SNP_OK;
}

snp_status comm_fault_fire(const comm_fault *f, int rank, int size, const char *host,
                           comm_fault_op op, uint64_t call_index) {
    if (f->op == COMM_FAULT_OP_NONE || f->op != op || f->rank != rank || f->at != call_index)
        return SNP_OK;
    switch (f->mode) {
    case COMM_FAULT_MODE_KILL:
        raise(SIGKILL);
        break;
    case COMM_FAULT_MODE_HANG:
        // Sleep rather than spin: a hung rank should not steal the cores its
        // peers need to notice the hang.
        for (;;) {
            struct timespec ts = {3600, 0};
            nanosleep(&ts, NULL);
        }
    case COMM_FAULT_MODE_EXIT:
        _exit(3);
    case COMM_FAULT_MODE_ERROR:
    case COMM_FAULT_MODE_COUNT:
        break;
    }
    return snp_fail(SNP_ERR_COMM,
                    "comm: rank %d/%d (%s): injected fault at %s #%llu (SNAPTP_FAULT='%s')", rank,
                    size, host, op_names[op], (unsigned long long)call_index, f->spec);
}
