// cuda_device: device-side helpers the kernels share: bf16 vectors, warp
// reductions, cp.async, ldmatrix and the bf16 mma.sync of sm_80+. Included by .cu
// files only; every helper is a static inline device function (no state).
#ifndef SNAPTP_CUDA_DEVICE_H
#define SNAPTP_CUDA_DEVICE_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define CUDA_LOG2E     1.4426950408889634f
#define CUDA_FULL_MASK 0xffffffffu

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

// 8 bf16 in one 16-byte word, and back: the unit of every vectorized access.
static __device__ __forceinline__ void bf16x8_to_f32(uint4 v, float *f) {
    const bf162 *h = reinterpret_cast<const bf162 *>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 p = __bfloat1622float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

static __device__ __forceinline__ uint4 f32_to_bf16x8(const float *f) {
    uint4 v;
    bf162 *h = reinterpret_cast<bf162 *>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++)
        h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return v;
}

// lo goes to the low 16 bits: the element with the lower index in a fragment.
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    bf162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(CUDA_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(CUDA_FULL_MASK, v, o));
    return v;
}

// cp.async of 16 bytes global -> shared; src_bytes 0 writes 16 zero bytes (rows
// past the end are zero-filled so that 0 * garbage never makes a NaN). `gsrc` must
// still be a valid address; callers pass the tensor's base when src_bytes is 0.
static __device__ __forceinline__ void cp_async16(void *sdst, const void *gsrc, int src_bytes) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(sdst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gsrc),
                 "r"(src_bytes));
}

// cp.async of 4 bytes (.ca: .cg copies only 16): Dual Chunk Attention's key positions
// ride in the same commit group as their K/V tile.
static __device__ __forceinline__ void cp_async4(void *sdst, const void *gsrc) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(sdst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gsrc));
}

static __device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}

// Waits until at most `n` of this thread's most recent cp.async groups are pending.
template <int n> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
}

// ldmatrix.x4: lanes 8i .. 8i+7 give the row addresses of 8x8 b16 matrix i; lane l
// receives in r[i] row l/4, columns 2(l%4), 2(l%4)+1 of matrix i (.trans: column
// l/4, rows 2(l%4), 2(l%4)+1, i.e. the matrix transposed).
static __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *row_addr) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(row_addr);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const void *row_addr) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(row_addr);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

// d += a b with a: 16x16 bf16 (row), b: 16x8 bf16 (col), d: 16x8 fp32. Fragments
// (PTX ISA, mma.m16n8k16): g = lane / 4, q = lane % 4;
//   a[0] = A[g][2q..], a[1] = A[g+8][2q..], a[2] = A[g][2q+8..], a[3] = A[g+8][2q+8..]
//   b[0] = B[2q..][g], b[1] = B[2q+8..][g]
//   d[0..1] = D[g][2q, 2q+1], d[2..3] = D[g+8][2q, 2q+1]
static __device__ __forceinline__ void mma_bf16_16816(float *d, const uint32_t *a, uint32_t b0,
                                                      uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// dca_part: backend.h's attn_dca_part on chunk indices: the rotation of a query in
// chunk qc that meets a key in chunk kc: 0 its own (q), 1 the previous chunk's
// (q_succ), 2 every earlier chunk's (q_inter). Non-decreasing in qc and
// non-increasing in kc, which is what lets a kernel bound a whole tile's parts by
// its corners.
static __device__ __forceinline__ int dca_part(int qc, int kc) {
    return kc >= qc ? 0 : kc == qc - 1 ? 1 : 2;
}

static __device__ __forceinline__ int64_t ceil_div_d(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

#endif
