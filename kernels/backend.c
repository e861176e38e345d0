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

static const char *const kv_dtype_names[KV_DTYPE_COUNT] = {
    [KV_DTYPE_DEFAULT] = "default",
    [KV_DTYPE_F32] = "f32",
    [KV_DTYPE_F16] = "f16",
    [KV_DTYPE_BF16] = "bf16",
};

int kv_dtype_parse(const char *s) {
    for (int i = 0; s && i < KV_DTYPE_COUNT; i++)
        if (strcmp(s, kv_dtype_names[i]) == 0) return i;
    return -1;
}

const char *kv_dtype_name(kv_dtype t) {
    return t >= 0 && t < KV_DTYPE_COUNT ? kv_dtype_names[t] : "?";
}

size_t backend_kv_bytes(const backend *b) {
    return dtype_block_bytes(b->ops->kv_type(b->ctx));
}

int backend_kv_type_for(const char *name, kv_dtype asked) {
    if (name && strcmp(name, "cuda") == 0)
        return asked == KV_DTYPE_DEFAULT || asked == KV_DTYPE_BF16 ? DTYPE_BF16 : -1;
    switch (asked) { // the CPU
    case KV_DTYPE_DEFAULT:
    case KV_DTYPE_F16: return DTYPE_F16;
    case KV_DTYPE_F32: return DTYPE_F32;
    default: return -1;
    }
}
