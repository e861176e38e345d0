// cuda_host: the CUDA backend's pure host logic, in C with no CUDA headers, so a
// machine without a GPU can test it: argument checks of attention and SnapKV,
// the attention and SnapKV launch plans, and weight rows converted to bf16.
#ifndef SNAPTP_CUDA_HOST_H
#define SNAPTP_CUDA_HOST_H

#include <stddef.h>
#include <stdint.h>

// From C++ (the .cu files) cuda_internal.h includes backend.h first, behind the
// shim dtype.h needs there; this include is then a no-op.
#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// The kernels' fixed tile sizes, shared with the plans below.
enum {
    CUDA_ATTN_MMA_BR = 64,          // tensor-core kernel: query tokens per block (16 per warp)
    CUDA_ATTN_MMA_BC = 64,          // tensor-core kernel: keys per shared-memory tile
    CUDA_ATTN_ROWS_NW = 4,          // row kernel: warps per block, one query row each
    CUDA_ATTN_ROWS_BC = 32,         // row kernel: keys per tile, one per lane
    CUDA_ATTN_MMA_MIN_T = 16,       // fewer tokens leave most of a 64-row tile empty
    CUDA_ATTN_MIN_SPLIT_KEYS = 512, // a key split shorter than this costs more to merge
    CUDA_ATTN_MAX_D = 256,
    CUDA_SNAPKV_BK = 64, // SnapKV scoring: keys per tile
    CUDA_SNAPKV_BR = 16, // SnapKV scoring: window rows per chunk
    CUDA_SNAPKV_MIN_SPLIT_KEYS = 1024,
};

typedef enum cuda_attn_kernel {
    CUDA_ATTN_KERNEL_MMA,  // attention_mma.cu: bf16 mma.sync, D in {64, 128, 256} (DCA: 64, 128)
    CUDA_ATTN_KERNEL_ROWS, // attention_rows.cu: fp32 SIMT, any D % 8 == 0 up to 256
    CUDA_ATTN_KERNEL_COUNT
} cuda_attn_kernel;

// How one attention call is cut into blocks. Keys [0, kend) are split into
// n_split ranges of `chunk` keys; with n_split > 1 each block leaves a partial
// (m, l, O) per query row and attention.cu merges them (flash-decoding).
typedef struct cuda_attn_plan {
    cuda_attn_kernel kernel;
    int grid_x;      // row blocks: token tiles (MMA) or (token, head) row groups (ROWS)
    int grid_y;      // H (MMA: one query head per block) or Hkv (ROWS: one KV group)
    int n_split;     // grid_z
    int64_t chunk;   // keys per split, a multiple of the kernel's key tile
    int64_t kend;    // keys the last query sees: min(n_keys, q_offset + T)
    size_t ws_bytes; // workspace for the partials (0 when n_split == 1)
} cuda_attn_plan;

// cuda_attn_check: the preconditions of attention (those of backend.h plus
// D % 8 == 0, D <= 256 and 16-byte aligned pointers; with s->dca also aligned
// q_succ, q_inter and positions below 2^31); SNP_ERR_ARGUMENT naming the value
// otherwise.
snp_status cuda_attn_check(const void *out, const void *q, const void *k, const void *v,
                           const attn_shape *s);

// cuda_attn_plan_make: picks the kernel and the key split for a checked shape on
// a device with n_sm multiprocessors; prefer_rows forces the SIMT kernel. Dual
// Chunk Attention (s->dca) takes the tensor-core kernel only for D 64 and 128.
void cuda_attn_plan_make(const attn_shape *s, int n_sm, int prefer_rows, cuda_attn_plan *p);

// SnapKV plan: the first scoring pass (row max and sum over all L keys) splits the
// keys over n_split blocks per KV head; partial stats are merged before pass 2.
typedef struct cuda_snapkv_plan {
    int G;           // query heads per KV head
    int R;           // window rows per KV head: G * w
    int P;           // prefix keys: L - w
    int n_split;     // pass-1 key splits
    int64_t chunk;   // keys per split, a multiple of CUDA_SNAPKV_BK
    size_t ws_bytes; // partial and final (m, l) per row and split
} cuda_snapkv_plan;

// cuda_snapkv_check: the preconditions of snapkv_votes / _pool / _select (`op` names
// the caller); `stage` 0 votes, 1 pool, 2 select adds what each one needs.
snp_status cuda_snapkv_check(const snapkv_shape *s, const char *op, int stage);

// cuda_snapkv_plan_make: the pass-1 split for a checked shape.
void cuda_snapkv_plan_make(const snapkv_shape *s, int n_sm, cuda_snapkv_plan *p);

// cuda_host_rows_to_bf16: rows [r0, r0 + n_rows) of a host weight (any dtype,
// rows src->row_stride_bytes apart) into dst as dense bf16 [n_rows, cols]; tmp
// holds cols floats. Dequantization is dtype_to_f32's, rounding to nearest even.
void cuda_host_rows_to_bf16(const weight_src *src, uint64_t r0, uint64_t n_rows, uint16_t *dst,
                            float *tmp);

// cuda_host_f32_to_bf16 / cuda_host_bf16_to_f32: n elements, round to nearest even.
void cuda_host_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void cuda_host_bf16_to_f32(const uint16_t *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif

#endif
