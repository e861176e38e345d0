// status: the one error convention of snaptp. A failing function writes one
// message (naming the file, tensor, field or rank) and returns a status; callers
// propagate it with TRY, which appends "at file:line" and adds no second message.
// This header is shared by runtime/, comm/ and kernels/ (it is part of the backend
// interface); it depends on nothing else in the project.
#ifndef SNAPTP_STATUS_H
#define SNAPTP_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum snp_status {
    SNP_OK = 0,
    SNP_ERR_IO,          // a file could not be opened, read or mapped
    SNP_ERR_FORMAT,      // a file's contents are malformed or inconsistent
    SNP_ERR_UNSUPPORTED, // well-formed, but not something snaptp implements
    SNP_ERR_ARGUMENT,    // a caller or a user gave an invalid value
    SNP_ERR_MEMORY,      // an allocation failed or a memory plan does not fit
    SNP_ERR_UTF8,        // text that is not valid UTF-8
    SNP_ERR_COMM,        // a collective or another rank failed
    SNP_ERR_DEVICE,      // CUDA, cuBLAS or another device library failed
    SNP_ERR_INTERNAL,    // an invariant of snaptp itself did not hold
    SNP_ERR_BUSY,        // a queue or pool is full now: the same call may succeed later
    SNP_STATUS_COUNT
} snp_status;

// snp_fail: records a printf-style message for the current thread and returns
// `status`, so that a detecting function can write `return snp_fail(...)`.
snp_status snp_fail(snp_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// snp_error: the current thread's last message with its trace ("" if none).
// The pointer stays valid until the next snp_fail / snp_error_clear.
const char *snp_error(void);

// snp_error_trace: appends " at FILE:LINE" to the current message (used by TRY).
void snp_error_trace(const char *file, int line);

void snp_error_clear(void);

// snp_status_name: a short name for a status ("format error", ...).
const char *snp_status_name(snp_status status);

// TRY(expr): evaluate expr once; on failure add the call site and return.
#define TRY(expr)                                                              \
    do {                                                                       \
        snp_status try_status_ = (expr);                                       \
        if (try_status_ != SNP_OK) {                                           \
            snp_error_trace(__FILE__, __LINE__);                               \
            return try_status_;                                                \
        }                                                                      \
    } while (0)

// TRY_GOTO(st, expr, label): for functions with a cleanup label; the status is
// kept in the caller's variable `st`.
#define TRY_GOTO(st, expr, label)                                              \
    do {                                                                       \
        (st) = (expr);                                                         \
        if ((st) != SNP_OK) {                                                  \
            snp_error_trace(__FILE__, __LINE__);                               \
            goto label;                                                        \
        }                                                                      \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
