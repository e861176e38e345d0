// cuda_internal: what the CUDA backend's files share: the context, the weight
// storage, the vendor-call macros, staging and workspace helpers, and each op
// family's entry points. Only kernels/cuda includes it; the model sees backend.h.
#ifndef SNAPTP_CUDA_INTERNAL_H
#define SNAPTP_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
// dtype.h (C11) uses _Static_assert, which C++ spells static_assert; backend.h and
// its headers have no extern "C" of their own.
#define _Static_assert static_assert
extern "C" {
#endif
#include "../backend.h"
#ifdef __cplusplus
}
#undef _Static_assert
#endif

#include "cuda_host.h"

// CUDA_VENDOR_TRY: evaluates `call` once; on failure writes the one message (the
// statement, the function, file:line and the library's own error string) and
// returns SNP_ERR_DEVICE. The rank is added by the caller's communicator layer.
#define CUDA_VENDOR_TRY(lib, type, ok, str_fn, call)                                               \
    do {                                                                                           \
        type vendor_rc_ = (call);                                                                  \
        if (vendor_rc_ != (ok))                                                                    \
            return snp_fail(SNP_ERR_DEVICE, "%s: '%s' failed in %s at %s:%d: %s", lib, #call,      \
                            __func__, __FILE__, __LINE__, str_fn(vendor_rc_));                     \
    } while (0)
#define CUDA_TRY(call) CUDA_VENDOR_TRY("cuda", cudaError_t, cudaSuccess, cudaGetErrorString, call)
#define CUBLAS_TRY(call)                                                                           \
    CUDA_VENDOR_TRY("cublas", cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString, call)

// CUDA_TRY_GOTO: as CUDA_TRY for functions with a cleanup label; the status goes
// into the caller's variable `st`.
#define CUDA_TRY_GOTO(st, call, label)                                                             \
    do {                                                                                           \
        cudaError_t vendor_rc_ = (call);                                                           \
        if (vendor_rc_ != cudaSuccess) {                                                           \
            (st) = snp_fail(SNP_ERR_DEVICE, "cuda: '%s' failed in %s at %s:%d: %s", #call,         \
                            __func__, __FILE__, __LINE__, cudaGetErrorString(vendor_rc_));         \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

// CUDA_LAUNCHED(kernel_name): the check after every launch. A launch error (bad
// geometry, too much shared memory) is reported here; a fault inside the kernel
// surfaces at the next synchronizing call.
#define CUDA_LAUNCHED(kernel_name)                                                                 \
    do {                                                                                           \
        cudaError_t vendor_rc_ = cudaGetLastError();                                               \
        if (vendor_rc_ != cudaSuccess)                                                             \
            return snp_fail(SNP_ERR_DEVICE, "cuda: launch of %s failed in %s at %s:%d: %s",        \
                            kernel_name, __func__, __FILE__, __LINE__,                             \
                            cudaGetErrorString(vendor_rc_));                                       \
    } while (0)

enum {
    CUDA_RING_SLOTS = 8,          // small host->device parameter copies in flight (ids, pos)
    CUDA_XFER_HALF = 4 << 20,     // bytes per half of the pinned transfer buffer
    CUDA_ERR_WORDS = 4,           // device-side error record: code, a, b, c
    CUDA_ERR_KV_GATHER_INDEX = 1, // kv_gather met an index outside the source rows
};

// One slot of the parameter ring: pinned host memory and a device buffer of the
// same size; `done` is recorded after the copy so the host half may be reused.
typedef struct cuda_stage_slot {
    void *host;
    void *dev;
    size_t cap;
    cudaEvent_t done;
} cuda_stage_slot;

// A small device array that is uploaded only when its contents change (rope's
// inv_freq: once per load; its positions: once per step, q and k share them).
// `host` is pinned and holds what `dev` holds (or will, once `done` fires).
typedef struct cuda_param_cache {
    void *host;
    void *dev;
    size_t n_bytes, cap;
    cudaEvent_t done; // recorded after the last upload: `host` may be rewritten after it
} cuda_param_cache;

// One context per backend_open, bound to one device and one stream. Every op
// enqueues on `stream` and returns without waiting unless it hands data to the
// host; a context is driven by one host thread at a time.
typedef struct cuda_ctx {
    int device;
    int n_sm;          // multiprocessors, for grid sizing
    size_t smem_optin; // largest dynamic shared memory a block may opt in to
    cudaStream_t stream;
    cublasHandle_t cublas; // bound to `stream`
    void *xfer_host;       // pinned, 2 * CUDA_XFER_HALF bytes: bulk conversions
    cudaEvent_t xfer_done[2];
    cuda_stage_slot ring[CUDA_RING_SLOTS];
    int ring_next;
    void *ws; // device workspace (attention partials, SnapKV stats)
    size_t ws_bytes;
    int *d_err;          // [CUDA_ERR_WORDS] sticky device-side error, checked by sync
    int attn_force_rows; // SNAPTP_CUDA_ATTENTION=rows: never use the tensor-core kernel
    int attn_q_smem;     // SNAPTP_CUDA_ATTENTION=qsmem: the mma kernel keeps Q in shared memory
    int sync_each_op;    // SNAPTP_CUDA_SYNC=1: sync and check after every op (cuda_checked.c)
    cuda_param_cache rope_freq, rope_pos;
    // upload_side's own lane (made by its first call, on the side thread): a
    // non-blocking stream and two pinned halves, so a prefetch never queues behind
    // compute on `stream` nor shares xfer_host with the driving thread.
    cudaStream_t side_stream;
    void *side_host;
    cudaEvent_t side_done[2];
} cuda_ctx;

// Weight storage: every weight as a dense bf16 matrix; 1-row weights (norm gains,
// biases) also as fp32, which is what norms and bias adds read.
struct bk_weight {
    int64_t rows, cols;
    void *data;      // bf16 [rows, cols], device
    float *data_f32; // fp32 [cols], device, rows == 1 only; else NULL
    char name[96];   // for messages, truncated
};

#ifdef __cplusplus
extern "C" {
#endif

// cuda_ctx_enter: makes the context's device current for this host thread (ops may
// be called from a thread other than the one that ran init).
snp_status cuda_ctx_enter(cuda_ctx *c);

// cuda_stage: copies n_bytes of host memory into a device buffer owned by the
// context, in stream order; *out_dev stays valid for the kernels enqueued next
// (CUDA_RING_SLOTS later stagings may reuse it, each after its own copy).
snp_status cuda_stage(cuda_ctx *c, const void *host, size_t n_bytes, void **out_dev);

// cuda_param_upload: *out_dev holds the n_bytes of `host` for the kernels enqueued
// next: the cached copy when the bytes equal the last upload's, else a fresh upload
// in stream order (after the kernels that read the old contents). The pointer stays
// valid until the next call on the same cache.
snp_status cuda_param_upload(cuda_ctx *c, cuda_param_cache *pc, const void *host, size_t n_bytes,
                             const void **out_dev);

// cuda_xfer_to_device: fills device bytes [0, n_bytes) of dst from the host in
// chunks of whole `unit_bytes` units through the context's pinned buffer: `fill`
// writes destination bytes [off, off + n) into stage. Returns once every byte has
// been produced (the copies may still be in flight; the source may be released).
typedef void (*cuda_xfer_fill_fn)(void *stage, size_t off, size_t n_bytes, const void *user);
snp_status cuda_xfer_to_device(cuda_ctx *c, void *dst, size_t n_bytes, size_t unit_bytes,
                               cuda_xfer_fill_fn fill, const void *user);

// cuda_workspace: a device buffer of at least n_bytes owned by the context, valid
// until the next call (growing it waits for the stream first).
snp_status cuda_workspace(cuda_ctx *c, size_t n_bytes, void **out);

// cuda_shared_optin: raises `kernel`'s dynamic shared memory limit to n_bytes when
// that is over the default 48 KiB; fails naming `op` when the device has less.
snp_status cuda_shared_optin(cuda_ctx *c, const void *kernel, size_t n_bytes, const char *op);

// Op entry points, one family per file (their contracts are in backend.h). C
// linkage: the table in cuda_backend.c is C.
// cuda_weights.c, embed.cu
snp_status cuda_weight_load(void *ctx, const weight_src *src, bk_weight **out);
void cuda_weight_free(void *ctx, bk_weight *w);
snp_status cuda_embed(void *ctx, void *x, const bk_weight *table, const int32_t *ids, int T);
// matmul.cu
snp_status cuda_matmul(void *ctx, void *y, const void *x, const bk_weight *W, const bk_weight *bias,
                       int T);
// rms_norm.cu, rope.cu, elementwise.cu
snp_status cuda_rms_norm(void *ctx, void *y, const void *x, const bk_weight *w, float eps, int T,
                         int C);
snp_status cuda_rope(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                     const rope_params *rp);
snp_status cuda_swiglu(void *ctx, void *y, const void *gate, const void *up, size_t n);
snp_status cuda_add(void *ctx, void *y, const void *x, size_t n);
// kv_rows.cu
snp_status cuda_kv_store(void *ctx, void *cache, const void *src, int T, int Hkv, int D, int S_cap,
                         int row0);
snp_status cuda_kv_scale(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                         float factor);
snp_status cuda_kv_gather(void *ctx, void *dst, const void *src, const int32_t *idx, int Hkv, int D,
                          int n_idx, int src_cap, int dst_cap, int row0);
// attention.cu (dispatch), attention_mma.cu, attention_rows.cu
snp_status cuda_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                          const attn_shape *s);
// snapkv_votes.cu, snapkv_pool.cu, snapkv_select.cu
snp_status cuda_snapkv_votes(void *ctx, float *votes, const void *q_win, const void *k,
                             const snapkv_shape *s);
snp_status cuda_snapkv_pool(void *ctx, float *pooled, const float *votes, const snapkv_shape *s);
snp_status cuda_snapkv_select(void *ctx, int32_t *idx, const float *pooled, const snapkv_shape *s);

#ifdef __cplusplus
}
#endif

#endif
