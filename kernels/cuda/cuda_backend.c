// cuda_backend: the CUDA op table, its context (device, stream, cuBLAS handle,
// pinned staging, workspace), memory, host transfers and sync. The arithmetic ops
// live in one .cu file per family; weights in cuda_weights.c.
#include "cuda_checked.h"
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CUDA_SMEM_DEFAULT = 48 << 10 }; // dynamic shared memory a block gets without opting in

snp_status cuda_ctx_enter(cuda_ctx *c) {
    CUDA_TRY(cudaSetDevice(c->device));
    return SNP_OK;
}

static void cuda_free_ctx(void *ctx) {
    cuda_ctx *c = ctx;
    if (!c) return;
    // Teardown is best effort: errors here have no caller left to act on them.
    if (cudaSetDevice(c->device) == cudaSuccess && c->stream) cudaStreamSynchronize(c->stream);
    for (int i = 0; i < CUDA_RING_SLOTS; i++) {
        if (c->ring[i].host) cudaFreeHost(c->ring[i].host);
        if (c->ring[i].dev) cudaFree(c->ring[i].dev);
        if (c->ring[i].done) cudaEventDestroy(c->ring[i].done);
    }
    cuda_param_cache *caches[] = {&c->rope_freq, &c->rope_pos};
    for (int i = 0; i < 2; i++) {
        if (caches[i]->host) cudaFreeHost(caches[i]->host);
        if (caches[i]->dev) cudaFree(caches[i]->dev);
        if (caches[i]->done) cudaEventDestroy(caches[i]->done);
    }
    for (int i = 0; i < 2; i++)
        if (c->xfer_done[i]) cudaEventDestroy(c->xfer_done[i]);
    if (c->xfer_host) cudaFreeHost(c->xfer_host);
    if (c->side_stream) cudaStreamSynchronize(c->side_stream);
    for (int i = 0; i < 2; i++)
        if (c->side_done[i]) cudaEventDestroy(c->side_done[i]);
    if (c->side_host) cudaFreeHost(c->side_host);
    if (c->side_stream) cudaStreamDestroy(c->side_stream);
    if (c->ws) cudaFree(c->ws);
    if (c->d_err) cudaFree(c->d_err);
    if (c->cublas) cublasDestroy(c->cublas);
    if (c->stream) cudaStreamDestroy(c->stream);
    cudaGetLastError(); // leave no sticky error behind for the next context
    free(c);
}

static snp_status cuda_setup(cuda_ctx *c) {
    CUDA_TRY(cudaSetDevice(c->device));
    int major = 0, minor = 0, optin = 0;
    CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device));
    CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, c->device));
    if (major < 8)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "cuda: init: device %d is sm_%d%d; the bf16 kernels need sm_80 or newer",
                        c->device, major, minor);
    CUDA_TRY(cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, c->device));
    CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
    c->smem_optin = (size_t)optin;
    // Non-blocking: the legacy default stream (which other libraries may use) does
    // not serialize against ours.
    CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_TRY(cublasCreate(&c->cublas));
    CUBLAS_TRY(cublasSetStream(c->cublas, c->stream));
    // Parity runs (SNAPTP_CUDA_STRICT_REDUCTION=1, set by test_cuda_ops,
    // test_backend_parity and run_bench.py) forbid cuBLAS from summing split-K
    // partials in bf16: the comparison with the CPU then measures our kernels, not
    // which split cuBLAS's heuristic picked for a shape.
    const char *strict = getenv("SNAPTP_CUDA_STRICT_REDUCTION");
    if (strict && strcmp(strict, "1") == 0)
        CUBLAS_TRY(cublasSetMathMode(
            c->cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                      CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    CUDA_TRY(cudaMallocHost(&c->xfer_host, 2 * (size_t)CUDA_XFER_HALF));
    for (int i = 0; i < 2; i++)
        CUDA_TRY(cudaEventCreateWithFlags(&c->xfer_done[i], cudaEventDisableTiming));
    for (int i = 0; i < CUDA_RING_SLOTS; i++)
        CUDA_TRY(cudaEventCreateWithFlags(&c->ring[i].done, cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&c->rope_freq.done, cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&c->rope_pos.done, cudaEventDisableTiming));
    CUDA_TRY(cudaMalloc((void **)&c->d_err, CUDA_ERR_WORDS * sizeof(int)));
    CUDA_TRY(cudaMemsetAsync(c->d_err, 0, CUDA_ERR_WORDS * sizeof(int), c->stream));
    const char *att = getenv("SNAPTP_CUDA_ATTENTION"); // "rows": the SIMT kernel only
    c->attn_force_rows = att && strcmp(att, "rows") == 0;
    c->attn_q_smem = att && strcmp(att, "qsmem") == 0;
    // SNAPTP_CUDA_SYNC=1: a fault is reported against the op that caused it, with its
    // shapes (cuda_checked.c), at the cost of one stream sync per op.
    const char *sync = getenv("SNAPTP_CUDA_SYNC");
    c->sync_each_op = sync && strcmp(sync, "1") == 0;
    return SNP_OK;
}

static snp_status cuda_init(const backend_options *opt, void **out_ctx) {
    if (!out_ctx) return snp_fail(SNP_ERR_ARGUMENT, "cuda: init: out_ctx is NULL");
    *out_ctx = NULL;
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0) {
        cudaGetLastError();
        return snp_fail(SNP_ERR_DEVICE, "cuda: init: no CUDA device (cudaGetDeviceCount: %s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    // The launcher passes the local rank: wrapping it around the visible devices
    // serves both one GPU per rank (CUDA_VISIBLE_DEVICES unset) and ranks sharing a
    // GPU (tests; the host-staged all-reduce then joins them).
    const kv_dtype kv = opt ? opt->kv_type : KV_DTYPE_DEFAULT;
    if (backend_kv_type_for("cuda", kv) < 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "cuda: KV cache type '%s' is not supported here (bf16, the activation "
                        "type)",
                        kv_dtype_name(kv));
    int dev = opt ? opt->device : 0;
    if (dev < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: init: device %d is negative", dev);
    dev %= n_dev;
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return snp_fail(SNP_ERR_MEMORY, "cuda: init: out of memory for the context");
    c->device = dev;
    snp_status st = cuda_setup(c);
    if (st != SNP_OK) {
        cuda_free_ctx(c);
        return st;
    }
    *out_ctx = c;
    return SNP_OK;
}

static snp_status cuda_alloc(void *ctx, size_t n_bytes, void **out_ptr) {
    cuda_ctx *c = ctx;
    if (!c || !out_ptr)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: alloc: NULL %s", !c ? "ctx" : "out_ptr");
    *out_ptr = NULL;
    if (n_bytes == 0) return snp_fail(SNP_ERR_ARGUMENT, "cuda: alloc: size is 0 bytes");
    TRY(cuda_ctx_enter(c));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n_bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return snp_fail(SNP_ERR_MEMORY,
                        "cuda: alloc: %zu bytes on device %d failed (%s; %zu of %zu bytes free)",
                        n_bytes, c->device, cudaGetErrorString(e), free_b, total_b);
    }
    // Zero-filled in stream order: every later op on this context sees the zeros.
    e = cudaMemsetAsync(p, 0, n_bytes, c->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        return snp_fail(SNP_ERR_DEVICE, "cuda: alloc: zero-filling %zu bytes failed: %s", n_bytes,
                        cudaGetErrorString(e));
    }
    *out_ptr = p;
    return SNP_OK;
}

static void cuda_dealloc(void *ctx, void *ptr) {
    cuda_ctx *c = ctx;
    if (!c || !ptr) return;
    // Queued kernels may still read ptr; cudaFree alone does not order against a
    // non-blocking stream.
    if (cudaSetDevice(c->device) == cudaSuccess) cudaStreamSynchronize(c->stream);
    cudaFree(ptr);
}

// Bulk host -> device copies go through the two pinned halves of xfer_host: the
// host fills one half while the DMA engine drains the other.
snp_status cuda_xfer_to_device(cuda_ctx *c, void *dst, size_t n_bytes, size_t unit_bytes,
                               cuda_xfer_fill_fn fill, const void *user) {
    const size_t chunk = CUDA_XFER_HALF / unit_bytes * unit_bytes;
    if (chunk == 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "cuda: a %zu-byte row is larger than the %d-byte staging buffer",
                        unit_bytes, CUDA_XFER_HALF);
    int half = 0;
    for (size_t off = 0; off < n_bytes; off += chunk, half ^= 1) {
        size_t n = n_bytes - off < chunk ? n_bytes - off : chunk;
        char *stage = (char *)c->xfer_host + (size_t)half * CUDA_XFER_HALF;
        CUDA_TRY(cudaEventSynchronize(c->xfer_done[half])); // its previous copy has left
        fill(stage, off, n, user);
        CUDA_TRY(cudaMemcpyAsync((char *)dst + off, stage, n, cudaMemcpyHostToDevice, c->stream));
        CUDA_TRY(cudaEventRecord(c->xfer_done[half], c->stream));
    }
    return SNP_OK;
}

// Device -> host: the copy of chunk i + 1 runs while the host drains chunk i.
typedef void (*xfer_drain_fn)(const void *stage, size_t off, size_t n_bytes, void *user);

static snp_status xfer_to_host(cuda_ctx *c, const void *src, size_t n_bytes, xfer_drain_fn drain,
                               void *user) {
    const size_t chunk = CUDA_XFER_HALF; // units are 1, 2 or 4 bytes: a half holds whole units
    size_t n_chunks = (n_bytes + chunk - 1) / chunk;
    for (size_t i = 0; i <= n_chunks; i++) {
        if (i < n_chunks) { // issue chunk i into half i & 1, drained two steps ago
            size_t off = i * chunk, n = n_bytes - off < chunk ? n_bytes - off : chunk;
            char *stage = (char *)c->xfer_host + (i & 1) * (size_t)CUDA_XFER_HALF;
            CUDA_TRY(cudaMemcpyAsync(stage, (const char *)src + off, n, cudaMemcpyDeviceToHost,
                                     c->stream));
            CUDA_TRY(cudaEventRecord(c->xfer_done[i & 1], c->stream));
        }
        if (i > 0) { // drain chunk i - 1
            size_t j = i - 1, off = j * chunk, n = n_bytes - off < chunk ? n_bytes - off : chunk;
            CUDA_TRY(cudaEventSynchronize(c->xfer_done[j & 1]));
            drain((char *)c->xfer_host + (j & 1) * (size_t)CUDA_XFER_HALF, off, n, user);
        }
    }
    return SNP_OK;
}

static void fill_bf16_from_f32(void *stage, size_t off, size_t n_bytes, const void *user) {
    cuda_host_f32_to_bf16((const float *)user + off / 2, stage, n_bytes / 2);
}
static void fill_bytes(void *stage, size_t off, size_t n_bytes, const void *user) {
    memcpy(stage, (const char *)user + off, n_bytes);
}
static void drain_bf16_to_f32(const void *stage, size_t off, size_t n_bytes, void *user) {
    cuda_host_bf16_to_f32(stage, (float *)user + off / 2, n_bytes / 2);
}
static void drain_bytes(const void *stage, size_t off, size_t n_bytes, void *user) {
    memcpy((char *)user + off, stage, n_bytes);
}

static snp_status check_copy(cuda_ctx *c, const void *dst, const void *src, size_t n,
                             const char *op) {
    if (!c || !dst || !src)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: %s: NULL %s for %zu elements", op,
                        !c     ? "ctx"
                        : !dst ? "dst"
                               : "src",
                        n);
    if (n > SIZE_MAX / 4) return snp_fail(SNP_ERR_ARGUMENT, "cuda: %s: n = %zu overflows", op, n);
    return cuda_ctx_enter(c);
}

static snp_status cuda_to_host_f32(void *ctx, float *dst, const void *src, size_t n) {
    if (n == 0) return SNP_OK;
    TRY(check_copy(ctx, dst, src, n, "to_host_f32"));
    return xfer_to_host(ctx, src, n * 2, drain_bf16_to_f32, dst);
}

static snp_status cuda_from_host_f32(void *ctx, void *dst, const float *src, size_t n) {
    if (n == 0) return SNP_OK;
    TRY(check_copy(ctx, dst, src, n, "from_host_f32"));
    return cuda_xfer_to_device(ctx, dst, n * 2, 2, fill_bf16_from_f32, src);
}

static snp_status cuda_download(void *ctx, void *dst_host, const void *src, size_t n_bytes) {
    if (n_bytes == 0) return SNP_OK;
    TRY(check_copy(ctx, dst_host, src, n_bytes, "download"));
    return xfer_to_host(ctx, src, n_bytes, drain_bytes, dst_host);
}

static snp_status cuda_copy(void *ctx, void *dst, const void *src, size_t n_bytes) {
    if (n_bytes == 0) return SNP_OK;
    TRY(check_copy(ctx, dst, src, n_bytes, "copy"));
    cuda_ctx *c = ctx;
    CUDA_TRY(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, c->stream));
    return SNP_OK;
}

static snp_status cuda_upload(void *ctx, void *dst, const void *src_host, size_t n_bytes) {
    if (n_bytes == 0) return SNP_OK;
    TRY(check_copy(ctx, dst, src_host, n_bytes, "upload"));
    return cuda_xfer_to_device(ctx, dst, n_bytes, 1, fill_bytes, src_host);
}

// upload_side: the prefetcher's copies (backend.h). The side thread fills one pinned
// half while the copy engine drains the other, on side_stream, which is
// non-blocking: kernels queued on `stream` by the driving thread run meanwhile.
static snp_status cuda_upload_side(void *ctx, void *dst, const void *src_host, size_t n_bytes) {
    cuda_ctx *c = ctx;
    if (n_bytes == 0) return SNP_OK;
    if (!c || !dst || !src_host)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: upload_side: NULL %s for %zu bytes",
                        !c ? "ctx" : !dst ? "dst" : "src", n_bytes);
    TRY(cuda_ctx_enter(c)); // this thread's current device
    if (!c->side_stream) {
        CUDA_TRY(cudaStreamCreateWithFlags(&c->side_stream, cudaStreamNonBlocking));
        CUDA_TRY(cudaMallocHost(&c->side_host, 2 * (size_t)CUDA_XFER_HALF));
        for (int i = 0; i < 2; i++)
            CUDA_TRY(cudaEventCreateWithFlags(&c->side_done[i], cudaEventDisableTiming));
    }
    int half = 0;
    for (size_t off = 0; off < n_bytes; off += CUDA_XFER_HALF, half ^= 1) {
        const size_t n = n_bytes - off < CUDA_XFER_HALF ? n_bytes - off : CUDA_XFER_HALF;
        char *stage = (char *)c->side_host + (size_t)half * CUDA_XFER_HALF;
        CUDA_TRY(cudaEventSynchronize(c->side_done[half])); // its previous copy has left
        memcpy(stage, (const char *)src_host + off, n);
        CUDA_TRY(cudaMemcpyAsync((char *)dst + off, stage, n, cudaMemcpyHostToDevice,
                                 c->side_stream));
        CUDA_TRY(cudaEventRecord(c->side_done[half], c->side_stream));
    }
    CUDA_TRY(cudaStreamSynchronize(c->side_stream));
    return SNP_OK;
}

snp_status cuda_stage(cuda_ctx *c, const void *host, size_t n_bytes, void **out_dev) {
    cuda_stage_slot *s = &c->ring[c->ring_next];
    c->ring_next = (c->ring_next + 1) % CUDA_RING_SLOTS;
    CUDA_TRY(cudaEventSynchronize(s->done)); // the slot's previous copy has left the host half
    if (s->cap < n_bytes) {
        // The device half may still be read by queued kernels: drain before freeing.
        CUDA_TRY(cudaStreamSynchronize(c->stream));
        if (s->host) CUDA_TRY(cudaFreeHost(s->host));
        if (s->dev) CUDA_TRY(cudaFree(s->dev));
        s->host = s->dev = NULL;
        s->cap = 0;
        size_t cap = 4096;
        while (cap < n_bytes)
            cap *= 2;
        CUDA_TRY(cudaMallocHost(&s->host, cap));
        CUDA_TRY(cudaMalloc(&s->dev, cap));
        s->cap = cap;
    }
    memcpy(s->host, host, n_bytes);
    CUDA_TRY(cudaMemcpyAsync(s->dev, s->host, n_bytes, cudaMemcpyHostToDevice, c->stream));
    CUDA_TRY(cudaEventRecord(s->done, c->stream));
    *out_dev = s->dev;
    return SNP_OK;
}

snp_status cuda_param_upload(cuda_ctx *c, cuda_param_cache *pc, const void *host, size_t n_bytes,
                             const void **out_dev) {
    *out_dev = NULL;
    if (n_bytes == 0) return snp_fail(SNP_ERR_ARGUMENT, "cuda: parameter upload of 0 bytes");
    // `host` is pinned memory the host only reads here: comparing it while its last
    // copy is still in flight is safe.
    if (pc->dev && pc->n_bytes == n_bytes && memcmp(pc->host, host, n_bytes) == 0) {
        *out_dev = pc->dev;
        return SNP_OK;
    }
    if (pc->cap < n_bytes) {
        // Queued kernels may still read the old device copy: drain before freeing.
        CUDA_TRY(cudaStreamSynchronize(c->stream));
        if (pc->host) CUDA_TRY(cudaFreeHost(pc->host));
        if (pc->dev) CUDA_TRY(cudaFree(pc->dev));
        pc->host = pc->dev = NULL;
        pc->cap = pc->n_bytes = 0;
        size_t cap = 4096;
        while (cap < n_bytes)
            cap *= 2;
        CUDA_TRY(cudaMallocHost(&pc->host, cap));
        CUDA_TRY(cudaMalloc(&pc->dev, cap));
        pc->cap = cap;
    } else {
        CUDA_TRY(cudaEventSynchronize(pc->done)); // the last copy has left the host half
    }
    memcpy(pc->host, host, n_bytes);
    // In stream order: kernels enqueued before still read the old contents.
    CUDA_TRY(cudaMemcpyAsync(pc->dev, pc->host, n_bytes, cudaMemcpyHostToDevice, c->stream));
    CUDA_TRY(cudaEventRecord(pc->done, c->stream));
    pc->n_bytes = n_bytes;
    *out_dev = pc->dev;
    return SNP_OK;
}

snp_status cuda_workspace(cuda_ctx *c, size_t n_bytes, void **out) {
    if (c->ws_bytes < n_bytes) {
        CUDA_TRY(cudaStreamSynchronize(c->stream)); // queued kernels may use the old one
        if (c->ws) CUDA_TRY(cudaFree(c->ws));
        c->ws = NULL;
        c->ws_bytes = 0;
        size_t want = n_bytes + n_bytes / 2; // headroom: shapes grow chunk by chunk
        cudaError_t e = cudaMalloc(&c->ws, want);
        if (e != cudaSuccess) {
            cudaGetLastError();
            return snp_fail(SNP_ERR_MEMORY, "cuda: workspace of %zu bytes on device %d: %s", want,
                            c->device, cudaGetErrorString(e));
        }
        c->ws_bytes = want;
    }
    *out = c->ws;
    return SNP_OK;
}

snp_status cuda_shared_optin(cuda_ctx *c, const void *kernel, size_t n_bytes, const char *op) {
    if (n_bytes > c->smem_optin)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "cuda: %s needs %zu bytes of shared memory per block; device %d allows %zu",
                        op, n_bytes, c->device, c->smem_optin);
    if (n_bytes > CUDA_SMEM_DEFAULT)
        CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)n_bytes));
    return SNP_OK;
}

// sync: waits for the stream, then reports what a kernel found wrong on the device
// (kv_gather indices), which no launcher could check on the host.
static snp_status cuda_sync(void *ctx) {
    cuda_ctx *c = ctx;
    if (!c) return snp_fail(SNP_ERR_ARGUMENT, "cuda: sync: NULL ctx");
    TRY(cuda_ctx_enter(c));
    int err[CUDA_ERR_WORDS] = {0};
    CUDA_TRY(cudaMemcpyAsync(err, c->d_err, sizeof err, cudaMemcpyDeviceToHost, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    if (err[0] == 0) return SNP_OK;
    CUDA_TRY(cudaMemsetAsync(c->d_err, 0, sizeof err, c->stream));
    if (err[0] == CUDA_ERR_KV_GATHER_INDEX)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: kv_gather: idx[h = %d][%d] = %d is outside the source rows (found "
                        "on the device; the row was left unchanged)",
                        err[1], err[2], err[3]);
    return snp_fail(SNP_ERR_INTERNAL, "cuda: sync: unknown device error record %d", err[0]);
}

// stream: for collectives that must be ordered with the ops (NCCL in forward.c).
static void *cuda_stream(void *ctx) {
    return ctx ? (void *)((cuda_ctx *)ctx)->stream : NULL;
}

// device: the ordinal init chose (the local rank modulo the visible devices).
static int cuda_device(void *ctx) {
    return ctx ? ((cuda_ctx *)ctx)->device : -1;
}

// kv_type: the cache is kept in the activation type, so K/V rows move between
// activations and the cache without a conversion kernel.
static dtype cuda_kv_type(void *ctx) {
    return DTYPE_BF16;
}

const backend_ops cuda_backend_ops = {
    .name = "cuda",
    .act_bytes = 2, // bf16
    .init = cuda_init,
    .free = cuda_free_ctx,
    .alloc = cuda_alloc,
    .dealloc = cuda_dealloc,
    .to_host_f32 = cuda_to_host_f32,
    .from_host_f32 = cuda_from_host_f32,
    .weight_load = cuda_weight_load,
    .weight_free = cuda_weight_free,
    .embed = cuda_checked_embed,
    .rms_norm = cuda_checked_rms_norm,
    .matmul = cuda_checked_matmul,
    .rope = cuda_checked_rope,
    .kv_type = cuda_kv_type,
    .kv_store = cuda_checked_kv_store,
    .kv_scale = cuda_checked_kv_scale,
    .attention = cuda_checked_attention,
    .swiglu = cuda_checked_swiglu,
    .add = cuda_checked_add,
    .snapkv_votes = cuda_checked_snapkv_votes,
    .snapkv_pool = cuda_checked_snapkv_pool,
    .snapkv_select = cuda_checked_snapkv_select,
    .kv_gather = cuda_checked_kv_gather,
    .copy = cuda_copy,
    .download = cuda_download,
    .upload = cuda_upload,
    .upload_side = cuda_upload_side,
    .sync = cuda_sync,
    .stream = cuda_stream,
    .device = cuda_device,
};
