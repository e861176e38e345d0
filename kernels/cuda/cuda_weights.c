// cuda_weights: weights converted on the host (dequantized with dtype_to_f32,
// rounded once to bf16) and copied to the device as dense row-major bf16; 1-row
// weights also as fp32. Kernels that read weights take them from here.
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rows_job {
    const weight_src *src;
    float *tmp;       // [cols]
    size_t row_bytes; // destination bytes per row (cols * 2)
} rows_job;

static void fill_rows(void *stage, size_t off, size_t n_bytes, const void *user) {
    const rows_job *j = user;
    cuda_host_rows_to_bf16(j->src, off / j->row_bytes, n_bytes / j->row_bytes, stage, j->tmp);
}

static void fill_floats(void *stage, size_t off, size_t n_bytes, const void *user) {
    memcpy(stage, (const char *)user + off, n_bytes);
}

void cuda_weight_free(void *ctx, bk_weight *w) {
    cuda_ctx *c = ctx;
    if (!w) return;
    // Queued kernels may still read the weight.
    if (c && cudaSetDevice(c->device) == cudaSuccess) cudaStreamSynchronize(c->stream);
    if (w->data) cudaFree(w->data);
    if (w->data_f32) cudaFree(w->data_f32);
    free(w);
}

static snp_status weight_check(const weight_src *src, const char *name) {
    if ((unsigned)src->type >= DTYPE_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: weight_load: tensor '%s': unknown dtype %d", name,
                        (int)src->type);
    if (!src->data)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: weight_load: tensor '%s': data is NULL", name);
    if (src->rows == 0 || src->cols == 0 || src->rows > INT32_MAX || src->cols > INT32_MAX)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: weight_load: tensor '%s': shape %llu x %llu is empty or too large",
                        name, (unsigned long long)src->rows, (unsigned long long)src->cols);
    uint64_t src_row_bytes;
    TRY(dtype_row_bytes(src->type, src->cols, name, &src_row_bytes));
    if (src->rows > 1 && src->row_stride_bytes < src_row_bytes)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: weight_load: tensor '%s': row stride %llu bytes is shorter than "
                        "its %llu-byte rows",
                        name, (unsigned long long)src->row_stride_bytes,
                        (unsigned long long)src_row_bytes);
    if (src->rows * src->cols > SIZE_MAX / 4)
        return snp_fail(SNP_ERR_MEMORY, "cuda: weight_load: tensor '%s' is too large", name);
    return SNP_OK;
}

snp_status cuda_weight_load(void *ctx, const weight_src *src, bk_weight **out) {
    cuda_ctx *c = ctx;
    if (!c || !out || !src)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: weight_load: NULL %s",
                        !c     ? "ctx"
                        : !out ? "out"
                               : "src");
    *out = NULL;
    const char *name = src->name ? src->name : "(unnamed)";
    TRY(weight_check(src, name));
    TRY(cuda_ctx_enter(c));
    snp_status st = SNP_OK;
    float *tmp = NULL;
    bk_weight *w = calloc(1, sizeof *w);
    if (!w) return snp_fail(SNP_ERR_MEMORY, "cuda: weight_load: out of memory for '%s'", name);
    w->rows = (int64_t)src->rows;
    w->cols = (int64_t)src->cols;
    snprintf(w->name, sizeof w->name, "%s", name);
    const size_t row_bytes = (size_t)w->cols * 2, n_bytes = row_bytes * (size_t)w->rows;
    tmp = malloc(sizeof(float) * (size_t)w->cols);
    if (!tmp) {
        st = snp_fail(SNP_ERR_MEMORY, "cuda: weight_load: out of memory for a row of '%s'", name);
        goto done;
    }
    cudaError_t e = cudaMalloc(&w->data, n_bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        w->data = NULL;
        st = snp_fail(SNP_ERR_MEMORY, "cuda: weight_load: '%s': %zu bytes on device %d: %s", name,
                      n_bytes, c->device, cudaGetErrorString(e));
        goto done;
    }
    rows_job job = {.src = src, .tmp = tmp, .row_bytes = row_bytes};
    TRY_GOTO(st, cuda_xfer_to_device(c, w->data, n_bytes, row_bytes, fill_rows, &job), done);
    if (w->rows == 1) {
        // Norm gains and biases: keep the source values exactly (a norm gain in F32
        // would lose 16 bits in bf16), as the CPU backend does.
        CUDA_TRY_GOTO(st, cudaMalloc((void **)&w->data_f32, sizeof(float) * (size_t)w->cols), done);
        dtype_to_f32(src->type, src->data, tmp, (size_t)w->cols);
        TRY_GOTO(st,
                 cuda_xfer_to_device(c, w->data_f32, sizeof(float) * (size_t)w->cols, 1,
                                     fill_floats, tmp),
                 done);
    }
done:
    // tmp has been consumed by the fills (the copies run from pinned staging).
    free(tmp);
    if (st != SNP_OK) {
        cuda_weight_free(c, w);
        return st;
    }
    *out = w;
    return SNP_OK;
}
