// status: thread-local error message storage behind snp_fail / snp_error.
#include "status.h"

#include <stdio.h>
#include <string.h>

enum { ERROR_CAPACITY = 4096 };

static _Thread_local char error_message[ERROR_CAPACITY];

snp_status snp_fail(snp_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return status;
}

const char *snp_error(void) { return error_message; }

void snp_error_trace(const char *file, int line) {
    size_t used = strlen(error_message);
    // Keep only the file's base name: full build paths make messages unreadable.
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (used < sizeof error_message - 1)
        snprintf(error_message + used, sizeof error_message - used, "\n  at %s:%d", base, line);
}

void snp_error_clear(void) { error_message[0] = '\0'; }

const char *snp_status_name(snp_status status) {
    static const char *const names[] = {
        [SNP_OK] = "ok",
        [SNP_ERR_IO] = "I/O error",
        [SNP_ERR_FORMAT] = "format error",
        [SNP_ERR_UNSUPPORTED] = "unsupported",
        [SNP_ERR_ARGUMENT] = "invalid argument",
        [SNP_ERR_MEMORY] = "out of memory",
        [SNP_ERR_UTF8] = "invalid UTF-8",
        [SNP_ERR_COMM] = "communication error",
        [SNP_ERR_DEVICE] = "device error",
        [SNP_ERR_INTERNAL] = "internal error",
        [SNP_ERR_BUSY] = "busy",
    };
    _Static_assert(sizeof names / sizeof names[0] == SNP_STATUS_COUNT, "one name per status");
    if ((unsigned)status >= SNP_STATUS_COUNT) return "unknown status";
    return names[status];
}
