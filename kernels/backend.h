// backend: the op table every device implements (kernels/cpu, kernels/cuda) and
// the registry that opens one by name. The model is written once against these
// ops; a backend never calls back into the model. Activation buffers are opaque
// device memory holding `act_bytes`-sized elements (fp32 on CPU, bf16 on CUDA);
// KV-cache buffers hold the backend's KV type instead (kv_type: f16 or fp32 on
// CPU, bf16 on CUDA); integer arrays (token ids, positions) are always host memory.
#ifndef SNAPTP_BACKEND_H
#define SNAPTP_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/status.h"
#include "dtype.h"

// A weight as the loader found it on the host (usually inside an mmap): a matrix
// of `rows` x `cols` elements, row-major, rows `row_stride_bytes` apart (a
// tensor-parallel slice of a larger matrix has a stride wider than its row).
// 1-D weights (norm gains, biases) have rows == 1.
#ifdef __cplusplus
extern "C" {
#endif

typedef struct weight_src {
    const char *name; // tensor name, for messages
    dtype type;
    uint64_t rows, cols;
    uint64_t row_stride_bytes;
    const void *data;
    // 1: data is a read-only file mapping that stays valid until the model is freed,
    // so a host-memory backend may use it in place instead of copying (zero-copy
    // load: no second copy of the weights, and ranks on one host share the page
    // cache). 0: the caller may unmap data as soon as weight_load returns.
    int persistent;
} weight_src;

// A weight resident on the backend, in whatever layout the backend prefers.
typedef struct bk_weight bk_weight;

typedef enum rope_mode {
    ROPE_MODE_NEOX,  // rotate halves: (x[i], x[i + D/2]); HF rotate_half, GGUF qwen2/3
    ROPE_MODE_PAIRS, // rotate adjacent pairs: (x[2i], x[2i+1]); GGUF llama (permuted q/k)
    ROPE_MODE_COUNT
} rope_mode;

typedef struct rope_params {
    rope_mode mode;
    const float *inv_freq; // host, [n_rot/2]; scaling (llama3, yarn, dynamic) applied by the caller
    // Partial rotary embeddings (GLM-4: partial_rotary_factor 0.5): only the first n_rot
    // dims of each head rotate, paired within them (NEOX: i, i + n_rot/2; PAIRS: 2i,
    // 2i+1); dims n_rot .. D-1 pass through. 0, what a zero-initialised rope_params
    // holds, means D (every dim).
    int n_rot;
    // Multiplies cos and sin (YaRN's attention temperature, HF's attention_scaling),
    // so q.k grows by its square. 0, what a zero-initialised rope_params holds, means 1.
    float cs_scale;
} rope_params;

// Dual Chunk Attention (Qwen2.5-1M's dual_chunk_attention_config; README, "Dual
// Chunk Attention"). The sequence is cut into chunks of chunk_len positions. Keys
// are rotated at (position mod chunk_len); each query, at position i in chunk
// c = i / chunk_len, comes rotated three ways, and the one that meets key j
// depends on j's chunk:
//   j >= c * chunk_len                     q        (intra: the query's own chunk)
//   (c - 1) * chunk_len <= j < c * chunk_len q_succ  (the previous chunk)
//   j < (c - 1) * chunk_len                q_inter  (every earlier chunk)
// One softmax runs over all the keys a query sees, whichever query met them.
// Positions of the key rows: row r < n_pos_rows of KV head h is at pos[h * pos_cap
// + r] (SnapKV's kept positions; int32, backend memory), every later row r at
// r + pos_offset. Rows hold ascending positions (SnapKV keeps its positions in
// order, and later rows are appended in order). Query t is row q_offset + t, so
// its position is q_offset + t + pos_offset. Under SnapKV's votes (snapkv_shape)
// q_succ and q_inter are the window's queries [w, H, D], and the full K's row r
// is position r (pos NULL, n_pos_rows 0, pos_offset 0).
typedef struct attn_dca {
    int chunk_len;
    const void *q_succ, *q_inter; // activations laid out as q
    const int32_t *pos;           // [Hkv, pos_cap] backend memory, or NULL when n_pos_rows == 0
    int pos_cap, n_pos_rows;
    int pos_offset;
} attn_dca;

// Geometry of one attention call. K/V live head-major: [Hkv][S_cap][D], the
// first n_keys rows of each head valid. Query t (0..T-1) may see key j when
// j <= q_offset + t (causal); q_offset >= n_keys - 1 with T == 1 sees every key.
typedef struct attn_shape {
    int T, H, Hkv, D;
    int S_cap;     // rows allocated per KV head
    int n_keys;    // valid rows per KV head
    int q_offset;  // index of the key at query 0's own position
    float scale;   // usually 1/sqrt(D)
    const attn_dca *dca; // NULL: one query per row (every model but Dual Chunk Attention's)
} attn_shape;

// attn_dca_position_of_row: the position of key row r of KV head h (the pos array
// is read on the host, so only host-memory backends call this).
static inline int attn_dca_position_of_row(const attn_dca *d, int h, int r) {
    return r < d->n_pos_rows ? d->pos[(size_t)h * (size_t)d->pos_cap + (size_t)r]
                             : r + d->pos_offset;
}

// attn_dca_part: which of a query's rotations meets key position j, for a query
// in chunk qc: 0 its own (q), 1 the previous chunk's (q_succ), 2 earlier (q_inter).
static inline int attn_dca_part(int chunk_len, int qc, int j) {
    const int kc = j / chunk_len;
    return kc >= qc ? 0 : kc == qc - 1 ? 1 : 2;
}

typedef enum snapkv_pooling {
    SNAPKV_POOL_AVG, // avg_pool1d, count_include_pad=True: edges divide by k too
    SNAPKV_POOL_MAX, // max_pool1d: padding ignored
    SNAPKV_POOL_COUNT
} snapkv_pooling;

// Geometry of SnapKV's selection on one layer (../shared/SNAPKV.md). L keys per
// KV head, the last w of them the observation window; P = L - w prefix keys;
// `budget` C > w rows are kept per KV head (C - w prefix positions + the window).
typedef struct snapkv_shape {
    int H, Hkv, D;
    int S_cap;     // rows allocated per KV head in the layer's full K buffer
    int L, w;      // prompt keys, window
    int budget;    // C
    int kernel;    // pooling kernel, odd, >= 1
    snapkv_pooling pooling;
    float scale;   // 1/sqrt(D)
    const attn_dca *dca; // Dual Chunk Attention: the window's other two rotations; else NULL
} snapkv_shape;

// The element type of K/V buffers (the decode cache, SnapKV's per-layer full K/V,
// what the KV store writes). DEFAULT is the backend's choice: f16 on the CPU (half
// the bytes a decode step reads, as llama.cpp's default cache), bf16 on CUDA.
typedef enum kv_dtype {
    KV_DTYPE_DEFAULT,
    KV_DTYPE_F32,
    KV_DTYPE_F16,
    KV_DTYPE_BF16,
    KV_DTYPE_COUNT
} kv_dtype;

// kv_dtype_parse: "f32", "f16", "bf16" (and "default"); -1 for anything else.
int kv_dtype_parse(const char *s);
const char *kv_dtype_name(kv_dtype t);

typedef struct backend_options {
    int n_threads; // CPU threads; <= 0: the cores this process may run on
    int device;    // CUDA device ordinal (the local rank picks it)
    // CPU: copy weights out of the checkpoint's mapping even when they could be used
    // in place (--no-mmap: for files on network filesystems, or to pin them in
    // anonymous memory).
    int copy_weights;
    kv_dtype kv_type; // K/V element type; a type the backend lacks is an init error
} backend_options;

typedef struct backend_ops {
    const char *name;
    size_t act_bytes; // bytes of one activation element
    int host_memory;  // 1: buffers are plain host memory (fp32), usable by MPI directly

    snp_status (*init)(const backend_options *opt, void **out_ctx);
    void (*free)(void *ctx);

    // Memory. alloc'd buffers are zero-filled. Copies to/from host convert between
    // the host's fp32 and the backend's activation type; n counts elements.
    snp_status (*alloc)(void *ctx, size_t n_bytes, void **out_ptr);
    void (*dealloc)(void *ctx, void *ptr); // NULL is a no-op
    snp_status (*to_host_f32)(void *ctx, float *dst, const void *src, size_t n);
    snp_status (*from_host_f32)(void *ctx, void *dst, const float *src, size_t n);

    // Weights: converted from src (host) into backend storage. The backend keeps no
    // pointer into src after returning unless src->persistent says it may.
    snp_status (*weight_load)(void *ctx, const weight_src *src, bk_weight **out);
    void (*weight_free)(void *ctx, bk_weight *w); // NULL is a no-op

    // x[t,:] = table[ids[t],:]   x: [T,C]; table: [V,C]; ids host [T], checked < V
    snp_status (*embed)(void *ctx, void *x, const bk_weight *table, const int32_t *ids, int T);

    // y[t,:] = x[t,:] * rsqrt(mean(x[t,:]^2) + eps) * w   x,y: [T,C]; w: [C]; y may alias x
    snp_status (*rms_norm)(void *ctx, void *y, const void *x, const bk_weight *w, float eps,
                           int T, int C);

    // y = x W^T (+ bias)   x: [T,K]; W: [N,K]; bias: [N] or NULL; y: [T,N]; no aliasing
    snp_status (*matmul)(void *ctx, void *y, const void *x, const bk_weight *W,
                         const bk_weight *bias, int T);

    // In place rotary embedding of x: [T,H,D] at host positions pos[T].
    snp_status (*rope)(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                       const rope_params *rp);

    // The element type of this context's K/V buffers (DTYPE_F32, DTYPE_F16 or
    // DTYPE_BF16): every op below that takes k, v or a cache reads and writes it.
    dtype (*kv_type)(void *ctx);

    // cache[h, row0 + t, :] = src[t, h, :]   src: [T,Hkv,D] activations; cache:
    // [Hkv,S_cap,D] K/V elements (rounded to nearest even when narrower)
    snp_status (*kv_store)(void *ctx, void *cache, const void *src, int T, int Hkv, int D,
                           int S_cap, int row0);

    // cache[h, row0 + t, :] *= factor for t < T   cache: [Hkv,S_cap,D] K/V elements
    // (rounded back to the KV type). Dual Chunk Attention's length scaling of keys a
    // KV store wrote for a prompt of another length.
    snp_status (*kv_scale)(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                           float factor);

    // Causal attention, flash-style (online softmax over key blocks, no T x n_keys
    // matrix). q, out: [T,H,D]; k, v: [Hkv,S_cap,D]; query head h reads KV head
    // h / (H / Hkv).
    snp_status (*attention)(void *ctx, void *out, const void *q, const void *k, const void *v,
                            const attn_shape *s);

    // y = silu(gate) * up, elementwise over n; y may alias gate or up
    snp_status (*swiglu)(void *ctx, void *y, const void *gate, const void *up, size_t n);

    // y += x over n elements
    snp_status (*add)(void *ctx, void *y, const void *x, size_t n);

    // SnapKV scoring, step 1 (SNAPKV.md steps 2-5): for each query head h, the
    // window queries q_win [w,H,D] attend to all L keys of k [Hkv,S_cap,D] with
    // softmax in fp32 (window keys causally masked); votes[h, p] = sum over the w
    // rows of the probability of prefix key p. votes: fp32 [H, P] backend memory.
    // With s->dca each window query meets each key with the rotation its chunk
    // asks for (attn_dca), as attention gave it during the prefill.
    snp_status (*snapkv_votes)(void *ctx, float *votes, const void *q_win, const void *k,
                               const snapkv_shape *s);

    // Step 6-7: pool votes along positions (kernel k, stride 1, padding k/2, avg or
    // max), then average the G = H/Hkv query heads of each KV head.
    // votes: fp32 [H, P]; pooled: fp32 [Hkv, P]; both backend memory.
    snp_status (*snapkv_pool)(void *ctx, float *pooled, const float *votes,
                              const snapkv_shape *s);

    // Step 8: per KV head, the C - w prefix positions of highest pooled vote (ties
    // to the lower position), ascending, then the window positions P..L-1.
    // idx: int32 [Hkv, C] backend memory.
    snp_status (*snapkv_select)(void *ctx, int32_t *idx, const float *pooled,
                                const snapkv_shape *s);

    // dst[h, row0 + i, :] = src[h, idx[h, i], :] for i < n_idx   (step 9's gather)
    // src: [Hkv, src_cap, D]; dst: [Hkv, dst_cap, D]; idx: int32 [Hkv, n_idx] backend.
    snp_status (*kv_gather)(void *ctx, void *dst, const void *src, const int32_t *idx,
                            int Hkv, int D, int n_idx, int src_cap, int dst_cap, int row0);

    // dst = src, n_bytes, both backend memory of this context (no overlap), queued
    // in order with the other ops.
    snp_status (*copy)(void *ctx, void *dst, const void *src, size_t n_bytes);

    // Raw byte copies between host and backend memory (indices, fp32 scores).
    snp_status (*download)(void *ctx, void *dst_host, const void *src, size_t n_bytes);
    snp_status (*upload)(void *ctx, void *dst, const void *src_host, size_t n_bytes);

    // upload_side: the same copy, for a host thread other than the one driving the
    // context (the KV store's prefetcher): on a stream of its own, so it neither waits
    // for nor delays the ops queued by the driving thread, through pinned memory, and
    // it returns when the bytes are on the backend. One side thread per context.
    snp_status (*upload_side)(void *ctx, void *dst, const void *src_host, size_t n_bytes);

    // Wait for queued work (no-op on CPU).
    snp_status (*sync)(void *ctx);

    // The stream this context's ops are queued on (a cudaStream_t), for work that must
    // run in order with them, such as an NCCL all-reduce of an activation buffer.
    // The op is NULL on backends without streams (CPU).
    void *(*stream)(void *ctx);

    // The device ordinal this context actually runs on (backend_options.device after
    // the backend wrapped it around the devices it sees), for whoever must use the
    // same device (the NCCL communicator). NULL on host-memory backends.
    int (*device)(void *ctx);
} backend_ops;

typedef struct backend {
    const backend_ops *ops;
    void *ctx;
} backend;

// attn_shape_check / snapkv_shape_check: the preconditions every backend checks for
// its attention and SnapKV ops (non-NULL buffers, positive sizes, H % Hkv == 0,
// n_keys within S_cap, w < L <= S_cap, w < budget, odd kernel, finite scale); the
// message names the backend and op. Backends add their own limits after these.
snp_status attn_shape_check(const char *backend, const void *out, const void *q, const void *k,
                            const void *v, const attn_shape *s);
snp_status snapkv_shape_check(const char *backend, const snapkv_shape *s, const char *op);

// backend_kv_type_for: the K/V element type backend `name` uses when asked for
// `asked` (DEFAULT: the backend's choice), or -1 when it cannot keep that type.
// The backends' init and the memory plans (made before a backend opens) share it.
int backend_kv_type_for(const char *name, kv_dtype asked);

// backend_kv_bytes: bytes of one K/V element of an open backend.
size_t backend_kv_bytes(const backend *b);

// backend_open: opens the backend called `name` ("cpu", "cuda"); a name this build
// lacks is an error that lists the ones it has.
snp_status backend_open(const char *name, const backend_options *opt, backend **out);
void backend_close(backend *b); // NULL is a no-op

// backend_names: the backends compiled into this build, comma separated.
const char *backend_names(void);

#ifdef __cplusplus
}
#endif

#endif
