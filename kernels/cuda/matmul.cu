// matmul: y = x W^T (+ bias) through cuBLAS (bf16 in and out, fp32 accumulation),
// and the bias add. Weight conversion happened at load (cuda_weights.c).
#include "cuda_device.h"
#include "cuda_internal.h"

enum { BIAS_THREADS = 256, BIAS_BLOCKS_PER_SM = 8 };

// bias_add: y[t, n] += b[n], fp32 add rounded once to bf16 (the GEMM already
// rounded y once; the bias costs a second rounding, at most 1 bf16 ulp).
// y: [T, N] bf16; b: [N] fp32. grid (<= 8 per SM), block 256, grid-stride.
__global__ void __launch_bounds__(BIAS_THREADS)
    bias_add_kernel(bf16 *y, const float *b, int N, size_t n) {
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x)
        y[e] = __float2bfloat16_rn(__bfloat162float(y[e]) + b[e % N]);
}

snp_status cuda_matmul(void *ctx, void *y, const void *x, const bk_weight *W, const bk_weight *bias,
                       int T) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !y || !x || !W)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: matmul: NULL %s",
                        !c   ? "ctx"
                        : !y ? "y"
                        : !x ? "x"
                             : "W");
    if (T <= 0) return snp_fail(SNP_ERR_ARGUMENT, "cuda: matmul '%s': T = %d", W->name, T);
    if (y == x)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: matmul '%s': y and x are the same buffer",
                        W->name);
    if (bias && (bias->rows != 1 || bias->cols != W->rows || !bias->data_f32))
        return snp_fail(
            SNP_ERR_ARGUMENT, "cuda: matmul '%s': bias '%s' is %lld x %lld, expected 1 x %lld",
            W->name, bias->name, (long long)bias->rows, (long long)bias->cols, (long long)W->rows);
    const int64_t N = W->rows, K = W->cols;
    // cuBLAS takes int dimensions; weight_load keeps rows and cols within int.
    TRY(cuda_ctx_enter(c));
    // Row-major y[T,N] = x[T,K] W[N,K]^T. cuBLAS is column-major, and a row-major
    // [R,C] array is the column-major [C,R] array of its transpose, so:
    //   W (row-major [N,K]) is column-major K x N, ld K; op T makes it N x K;
    //   x (row-major [T,K]) is column-major K x T, ld K, used as is;
    //   y (row-major [T,N]) is column-major N x T, ld N.
    // y^T (N x T) = W (N x K) * x^T (K x T): m = N, n = T, k = K with (OP_T, OP_N).
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_TRY(cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, T, (int)K, &one, W->data,
                            CUDA_R_16BF, (int)K, x, CUDA_R_16BF, (int)K, &zero, y, CUDA_R_16BF,
                            (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias) {
        const size_t n = (size_t)T * (size_t)N;
        size_t blocks = (n + BIAS_THREADS - 1) / BIAS_THREADS;
        const size_t cap = (size_t)c->n_sm * BIAS_BLOCKS_PER_SM;
        if (blocks > cap) blocks = cap;
        bias_add_kernel<<<(int)blocks, BIAS_THREADS, 0, c->stream>>>((bf16 *)y, bias->data_f32,
                                                                     (int)N, n);
        CUDA_LAUNCHED("bias_add_kernel");
    }
    return SNP_OK;
}
