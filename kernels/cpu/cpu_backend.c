// cpu_backend: the CPU op table, its context, memory and weight storage, and
// embed. The arithmetic ops live in one file per family (cpu_matmul.c,
// cpu_attention.c, cpu_norm_rope.c, cpu_elementwise.c, cpu_snapkv.c).
#include "cpu_backend.h"
#include "cpu_snapkv.h"

#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CPU_ALIGN = 64 };

static void cpu_free(void *ctx) {
    cpu_ctx *c = ctx;
    if (!c) return;
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

static snp_status cpu_init(const backend_options *opt, void **out_ctx) {
    if (!out_ctx) return snp_fail(SNP_ERR_ARGUMENT, "cpu: init: out_ctx is NULL");
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return snp_fail(SNP_ERR_MEMORY, "cpu: init: out of memory for the context");
    c->n_threads = opt && opt->n_threads > 0 ? opt->n_threads : omp_get_max_threads();
    c->scratch = calloc((size_t)c->n_threads, sizeof *c->scratch);
    c->scratch_bytes = calloc((size_t)c->n_threads, sizeof *c->scratch_bytes);
    if (!c->scratch || !c->scratch_bytes) {
        int n = c->n_threads;
        cpu_free(c);
        return snp_fail(SNP_ERR_MEMORY, "cpu: init: out of memory for %d threads", n);
    }
    // Opt-in until backend_options carries it: the int8 decode path is not the
    // fp32 reference (see cpu_q8_quantize).
    const char *q8 = getenv("SNAPTP_CPU_MATVEC_Q8");
    c->matvec_q8 = q8 && q8[0] == '1';
    // Every op splits its work over an OpenMP team and calls BLAS on small panels
    // from inside it; a threaded OpenBLAS on top would oversubscribe the cores and
    // its spinning pool fights OpenMP's. Process-wide, which is what we want.
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
    free(w->data);
    free(w);
}

static snp_status cpu_weight_load(void *ctx, const weight_src *src, bk_weight **out) {
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
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .snapkv_votes = cpu_snapkv_votes, // cpu_snapkv.c
    .snapkv_pool = cpu_snapkv_pool,
    .snapkv_select = cpu_snapkv_select,
    .kv_gather = cpu_kv_gather,
    .download = cpu_download,
    .upload = cpu_upload,
    .sync = cpu_sync,
};
