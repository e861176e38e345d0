#define _GNU_SOURCE // sched_getaffinity, CPU_COUNT
// cpu_backend: the CPU op table, its context, memory and weight storage, and
// embed. The arithmetic ops live in one file per family (cpu_matmul.c,
// cpu_attention.c, cpu_norm_rope.c, cpu_elementwise.c, cpu_snapkv.c).
#include "cpu_backend.h"
#include "cpu_snapkv.h"

#include <cblas.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { CPU_ALIGN = 64 };

static void cpu_free(void *ctx) {
    cpu_ctx *c = ctx;
    if (!c) return;
    cpu_pool_free(c->pool);
    for (int i = 0; c->scratch && i < c->n_threads; i++)
        free(c->scratch[i]);
    free(c->scratch);
    free(c->scratch_bytes);
    free(c);
}

float *cpu_scratch(cpu_ctx *c, int tid, size_t n_bytes) {
    if (tid < 0 || tid >= c->n_threads) return NULL;
    if (c->scratch_bytes[tid] >= n_bytes) return c->scratch[tid];
    free(c->scratch[tid]);
    size_t rounded = (n_bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    c->scratch[tid] = aligned_alloc(CPU_ALIGN, rounded);
    c->scratch_bytes[tid] = c->scratch[tid] ? rounded : 0;
    return c->scratch[tid];
}

// default_threads: the cores this process may run on (mpirun's binding and
// cgroup limits included), else every online core.
static int default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static snp_status cpu_init(const backend_options *opt, void **out_ctx) {
    if (!out_ctx) return snp_fail(SNP_ERR_ARGUMENT, "cpu: init: out_ctx is NULL");
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return snp_fail(SNP_ERR_MEMORY, "cpu: init: out of memory for the context");
    c->n_threads = opt && opt->n_threads > 0 ? opt->n_threads : default_threads();
    if (c->n_threads > CPU_MAX_THREADS) {
        int n = c->n_threads;
        free(c);
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: %d threads: at most %d are supported", n,
                        CPU_MAX_THREADS);
    }
    c->scratch = calloc((size_t)c->n_threads, sizeof *c->scratch);
    c->scratch_bytes = calloc((size_t)c->n_threads, sizeof *c->scratch_bytes);
    if (!c->scratch || !c->scratch_bytes) {
        int n = c->n_threads;
        cpu_free(c);
        return snp_fail(SNP_ERR_MEMORY, "cpu: init: out of memory for %d threads", n);
    }
    snp_status st = cpu_pool_create(c->n_threads, &c->pool);
    if (st != SNP_OK) {
        cpu_free(c);
        return st;
    }
    // Opt-in until backend_options carries it: the int8 decode path is not the
    // fp32 reference (see cpu_q8_quantize).
    const char *q8 = getenv("SNAPTP_CPU_MATVEC_Q8");
    c->matvec_q8 = q8 && q8[0] == '1';
    c->copy_weights = opt ? opt->copy_weights : 0;
    const kv_dtype kv = opt ? opt->kv_type : KV_DTYPE_DEFAULT;
    const int kv_type = backend_kv_type_for("cpu", kv);
    if (kv_type < 0) {
        cpu_free(c);
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "cpu: KV cache type '%s' is not supported here (f16 or f32)",
                        kv_dtype_name(kv));
    }
    c->kv_type = (dtype)kv_type;
    // Every op splits its work over the pool and calls BLAS on small panels from
    // inside it; a threaded OpenBLAS on top would oversubscribe the cores and its
    // spinning threads fight ours. Process-wide, which is what we want.
    openblas_set_num_threads(1);
    *out_ctx = c;
    return SNP_OK;
}

static snp_status cpu_alloc(void *ctx, size_t n_bytes, void **out_ptr) {
    if (!out_ptr) return snp_fail(SNP_ERR_ARGUMENT, "cpu: alloc: out_ptr is NULL");
    *out_ptr = NULL;
    if (n_bytes == 0) return snp_fail(SNP_ERR_ARGUMENT, "cpu: alloc: size is 0 bytes");
    size_t rounded = (n_bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (rounded < n_bytes)
        return snp_fail(SNP_ERR_MEMORY, "cpu: alloc: %zu bytes overflows", n_bytes);
    void *p = NULL;
    if (posix_memalign(&p, CPU_ALIGN, rounded) != 0)
        return snp_fail(SNP_ERR_MEMORY, "cpu: alloc: out of memory for %zu bytes", n_bytes);
    memset(p, 0, rounded);
    *out_ptr = p;
    return SNP_OK;
}

static void cpu_dealloc(void *ctx, void *ptr) {
    free(ptr);
}

static snp_status cpu_to_host_f32(void *ctx, float *dst, const void *src, size_t n) {
    if (n == 0) return SNP_OK;
    if (!dst || !src)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: to_host_f32: NULL %s for %zu elements",
                        !dst ? "dst" : "src", n);
    memmove(dst, src, n * sizeof(float));
    return SNP_OK;
}

static snp_status cpu_from_host_f32(void *ctx, void *dst, const float *src, size_t n) {
    if (n == 0) return SNP_OK;
    if (!dst || !src)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: from_host_f32: NULL %s for %zu elements",
                        !dst ? "dst" : "src", n);
    memmove(dst, src, n * sizeof(float));
    return SNP_OK;
}

static void cpu_weight_free(void *ctx, bk_weight *w) {
    if (!w) return;
    if (!w->borrowed) free(w->data);
    free(w);
}

// prefault_mapping: reads the pages of a borrowed weight now, so the disk reads
// land in the load phase (where the progress and timings expect them) instead of
// in the first prefill; MADV_WILLNEED lets the kernel read ahead in large chunks.
static void prefault_mapping(const void *data, size_t n_bytes) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)data / page * page;
    uintptr_t hi = (uintptr_t)data + n_bytes;
    (void)madvise((void *)lo, hi - lo, MADV_WILLNEED); // advice only: failure is harmless
    volatile const unsigned char *p = data;
    unsigned char sink = 0;
    for (size_t off = 0; off < n_bytes; off += page)
        sink ^= p[off];
    if (n_bytes) sink ^= p[n_bytes - 1];
    (void)sink;
}

static snp_status cpu_weight_load(void *ctx, const weight_src *src, bk_weight **out) {
    cpu_ctx *c = ctx;
    if (!out) return snp_fail(SNP_ERR_ARGUMENT, "cpu: weight_load: out is NULL");
    *out = NULL;
    if (!src) return snp_fail(SNP_ERR_ARGUMENT, "cpu: weight_load: src is NULL");
    const char *name = src->name ? src->name : "(unnamed)";
    if ((unsigned)src->type >= DTYPE_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: weight_load: tensor '%s': unknown dtype %d", name,
                        (int)src->type);
    if (!src->data)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: weight_load: tensor '%s': data is NULL", name);
    if (src->rows == 0 || src->cols == 0 || src->rows > INT32_MAX || src->cols > INT32_MAX)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: weight_load: tensor '%s': shape %llu x %llu is empty or too large",
                        name, (unsigned long long)src->rows, (unsigned long long)src->cols);
    uint64_t src_row_bytes;
    snp_status st = dtype_row_bytes(src->type, src->cols, name, &src_row_bytes);
    if (st != SNP_OK) return st;
    if (src->rows > 1 && src->row_stride_bytes < src_row_bytes)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cpu: weight_load: tensor '%s': row stride %llu bytes is shorter than "
                        "its %llu-byte rows",
                        name, (unsigned long long)src->row_stride_bytes,
                        (unsigned long long)src_row_bytes);

    // 1-row weights are read per element by norms and bias adds: store them as F32.
    dtype store = src->rows == 1 ? DTYPE_F32 : src->type;
    uint64_t row_bytes = store == src->type ? src_row_bytes : src->cols * sizeof(float);
    if (row_bytes > SIZE_MAX / src->rows)
        return snp_fail(SNP_ERR_MEMORY, "cpu: weight_load: tensor '%s' is too large", name);
    bk_weight *w = calloc(1, sizeof *w);
    if (!w) return snp_fail(SNP_ERR_MEMORY, "cpu: weight_load: out of memory for '%s'", name);
    w->type = store;
    w->rows = (int64_t)src->rows;
    w->cols = (int64_t)src->cols;
    w->row_bytes = (size_t)row_bytes;
    snprintf(w->name, sizeof w->name, "%s", name);
    size_t n_bytes = w->row_bytes * (size_t)w->rows;
    // In place when the mapping outlives the weight and already is our layout: the
    // source format with dense rows (a row-sliced shard is; a column slice is not).
    // 4-byte alignment keeps fp32 and block reads well defined (GGUF aligns tensors to
    // 32 bytes; safetensors only to its header, usually 8).
    int dense = src->rows == 1 || src->row_stride_bytes == row_bytes;
    int aligned = (uintptr_t)src->data % 4 == 0;
    if (src->persistent && !c->copy_weights && store == src->type && dense && aligned) {
        w->data = (void *)src->data;
        w->borrowed = 1;
        prefault_mapping(src->data, n_bytes);
        *out = w;
        return SNP_OK;
    }
    if (cpu_alloc(ctx, n_bytes, &w->data) != SNP_OK) {
        free(w);
        return snp_fail(SNP_ERR_MEMORY, "cpu: weight_load: out of memory for '%s' (%zu bytes)",
                        name, n_bytes);
    }
    const char *s = src->data;
    char *d = w->data;
    for (int64_t r = 0; r < w->rows; r++) {
        const char *srow = s + (size_t)r * src->row_stride_bytes;
        char *drow = d + (size_t)r * w->row_bytes;
        if (store == src->type)
            memcpy(drow, srow, w->row_bytes);
        else
            dtype_to_f32(src->type, srow, (float *)drow, (size_t)w->cols);
    }
    *out = w;
    return SNP_OK;
}

snp_status cpu_embed(void *ctx, void *x, const bk_weight *table, const int32_t *ids, int T) {
    if (!x || !table || !ids)
        return snp_fail(SNP_ERR_ARGUMENT, "cpu: embed: NULL %s",
                        !x       ? "x"
                        : !table ? "table"
                                 : "ids");
    if (T <= 0) return snp_fail(SNP_ERR_ARGUMENT, "cpu: embed: T = %d must be positive", T);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= table->rows)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "cpu: embed: token id %d at position %d is outside the %lld rows of "
                            "'%s'",
                            (int)ids[t], t, (long long)table->rows, table->name);
    float *y = x;
    for (int t = 0; t < T; t++)
        cpu_rows_to_f32(table, ids[t], 1, y + (size_t)t * table->cols);
    return SNP_OK;
}

static dtype cpu_kv_type(void *ctx) {
    return ((const cpu_ctx *)ctx)->kv_type;
}

static snp_status cpu_sync(void *ctx) {
    return SNP_OK;
}

const backend_ops cpu_backend_ops = {
    .name = "cpu",
    .host_memory = 1,
    .act_bytes = sizeof(float),
    .init = cpu_init,
    .free = cpu_free,
    .alloc = cpu_alloc,
    .dealloc = cpu_dealloc,
    .to_host_f32 = cpu_to_host_f32,
    .from_host_f32 = cpu_from_host_f32,
    .weight_load = cpu_weight_load,
    .weight_free = cpu_weight_free,
    .embed = cpu_embed,
    .rms_norm = cpu_rms_norm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .kv_type = cpu_kv_type,
    .kv_store = cpu_kv_store,
    .kv_scale = cpu_kv_scale,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .snapkv_votes = cpu_snapkv_votes, // cpu_snapkv.c
    .snapkv_pool = cpu_snapkv_pool,
    .snapkv_select = cpu_snapkv_select,
    .kv_gather = cpu_kv_gather,
    .copy = cpu_copy,
    .download = cpu_download,
    .upload = cpu_upload,
    .upload_side = cpu_upload, // a memcpy: host memory, and the caller's own thread
    .sync = cpu_sync,
};
