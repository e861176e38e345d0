// backend: the registry of the op tables compiled into this build and
// backend_open/backend_close. Each backend's ops live in its own folder.
#include "backend.h"

#include <stdlib.h>
#include <string.h>

extern const backend_ops cpu_backend_ops; // kernels/cpu/cpu_backend.c
#ifdef SNAPTP_HAVE_CUDA
extern const backend_ops cuda_backend_ops; // kernels/cuda
#endif

static const backend_ops *const backend_table[] = {
    &cpu_backend_ops,
#ifdef SNAPTP_HAVE_CUDA
    &cuda_backend_ops,
#endif
};
enum { BACKEND_COUNT = sizeof backend_table / sizeof backend_table[0] };

const char *backend_names(void) {
#ifdef SNAPTP_HAVE_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

snp_status backend_open(const char *name, const backend_options *opt, backend **out) {
    if (!out) return snp_fail(SNP_ERR_ARGUMENT, "backend: open: out is NULL");
    *out = NULL;
    if (!name) return snp_fail(SNP_ERR_ARGUMENT, "backend: open: name is NULL");
    const backend_ops *ops = NULL;
    for (int i = 0; i < BACKEND_COUNT; i++)
        if (strcmp(backend_table[i]->name, name) == 0) ops = backend_table[i];
    if (!ops)
        return snp_fail(SNP_ERR_UNSUPPORTED, "backend: '%s' is not in this build (have: %s)", name,
                        backend_names());
    backend *b = calloc(1, sizeof *b);
    if (!b) return snp_fail(SNP_ERR_MEMORY, "backend: open '%s': out of memory", name);
    b->ops = ops;
    snp_status st = ops->init(opt, &b->ctx);
    if (st != SNP_OK) {
        free(b);
        snp_error_trace(__FILE__, __LINE__);
        return st;
    }
    *out = b;
    return SNP_OK;
}

void backend_close(backend *b) {
    if (!b) return;
    if (b->ops && b->ctx) b->ops->free(b->ctx);
    free(b);
}
