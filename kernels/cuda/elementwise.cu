// elementwise: the memory-bound pointwise ops on bf16 activations: SwiGLU and the
// residual add. Both compute in fp32 and round once to bf16.
#include "cuda_device.h"
#include "cuda_internal.h"

enum { EW_THREADS = 256, EW_BLOCKS_PER_SM = 8 };

// Grid-stride loops with a grid of a few blocks per SM: enough to saturate
// memory, and one launch geometry for every n.
static int ew_grid(const cuda_ctx *c, size_t n_items) {
    size_t want = (n_items + EW_THREADS - 1) / EW_THREADS;
    size_t cap = (size_t)c->n_sm * EW_BLOCKS_PER_SM;
    return (int)(want < cap ? (want > 0 ? want : 1) : cap);
}

// 8-wide when every pointer is 16-byte aligned and n % 8 == 0; else element-wise.
static int ew_vec(size_t n, const void *a, const void *b, const void *c) {
    uintptr_t u = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c;
    return n % 8 == 0 && (u & 15u) == 0 ? 8 : 1;
}

// swiglu: y = silu(gate) * up with silu(g) = g / (1 + exp(-g)), as torch and the CPU
// backend compute it, in fp32. y, gate, up: [n] bf16; y may alias gate or up (each
// element is read before it is written, by the same thread).
// grid (<= 8 per SM), block 256, grid-stride over n / VEC vectors of VEC elements.
template <int VEC>
__global__ void __launch_bounds__(EW_THREADS)
    swiglu_kernel(bf16 *y, const bf16 *gate, const bf16 *up, size_t n_vec) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_vec;
         i += (size_t)gridDim.x * blockDim.x) {
        if (VEC == 8) {
            float g[8], u[8], r[8];
            bf16x8_to_f32(reinterpret_cast<const uint4 *>(gate)[i], g);
            bf16x8_to_f32(reinterpret_cast<const uint4 *>(up)[i], u);
#pragma unroll
            for (int j = 0; j < 8; j++)
                r[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
            reinterpret_cast<uint4 *>(y)[i] = f32_to_bf16x8(r);
        } else {
            float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]);
            y[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
        }
    }
}

// add: y += x (the residual), fp32 sum rounded once. y, x: [n] bf16; x may alias y.
// grid (<= 8 per SM), block 256, grid-stride over n / VEC vectors.
template <int VEC>
__global__ void __launch_bounds__(EW_THREADS) add_kernel(bf16 *y, const bf16 *x, size_t n_vec) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_vec;
         i += (size_t)gridDim.x * blockDim.x) {
        if (VEC == 8) {
            float a[8], b[8];
            bf16x8_to_f32(reinterpret_cast<const uint4 *>(y)[i], a);
            bf16x8_to_f32(reinterpret_cast<const uint4 *>(x)[i], b);
#pragma unroll
            for (int j = 0; j < 8; j++)
                a[j] += b[j];
            reinterpret_cast<uint4 *>(y)[i] = f32_to_bf16x8(a);
        } else {
            y[i] = __float2bfloat16_rn(__bfloat162float(y[i]) + __bfloat162float(x[i]));
        }
    }
}

snp_status cuda_swiglu(void *ctx, void *y, const void *gate, const void *up, size_t n) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !y || !gate || !up)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: swiglu: NULL %s",
                        !c      ? "ctx"
                        : !y    ? "y"
                        : !gate ? "gate"
                                : "up");
    if (n == 0) return snp_fail(SNP_ERR_ARGUMENT, "cuda: swiglu: n = 0 elements");
    TRY(cuda_ctx_enter(c));
    if (ew_vec(n, y, gate, up) == 8) {
        swiglu_kernel<8><<<ew_grid(c, n / 8), EW_THREADS, 0, c->stream>>>(
            (bf16 *)y, (const bf16 *)gate, (const bf16 *)up, n / 8);
        CUDA_LAUNCHED("swiglu_kernel<8>");
    } else {
        swiglu_kernel<1><<<ew_grid(c, n), EW_THREADS, 0, c->stream>>>((bf16 *)y, (const bf16 *)gate,
                                                                      (const bf16 *)up, n);
        CUDA_LAUNCHED("swiglu_kernel<1>");
    }
    return SNP_OK;
}

snp_status cuda_add(void *ctx, void *y, const void *x, size_t n) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !y || !x)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: add: NULL %s", !c ? "ctx" : !y ? "y" : "x");
    if (n == 0) return snp_fail(SNP_ERR_ARGUMENT, "cuda: add: n = 0 elements");
    TRY(cuda_ctx_enter(c));
    if (ew_vec(n, y, x, x) == 8) {
        add_kernel<8>
            <<<ew_grid(c, n / 8), EW_THREADS, 0, c->stream>>>((bf16 *)y, (const bf16 *)x, n / 8);
        CUDA_LAUNCHED("add_kernel<8>");
    } else {
        add_kernel<1><<<ew_grid(c, n), EW_THREADS, 0, c->stream>>>((bf16 *)y, (const bf16 *)x, n);
        CUDA_LAUNCHED("add_kernel<1>");
    }
    return SNP_OK;
}
