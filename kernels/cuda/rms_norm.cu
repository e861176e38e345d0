// rms_norm: RMS normalization of bf16 rows with an fp32 gain, one block per row.
// The gain is the weight's fp32 copy (cuda_weights.c keeps one for 1-row weights).
#include "cuda_device.h"
#include "cuda_internal.h"

enum { RMS_THREADS = 256 };

// rms_norm: y[t,:] = (x[t,:] * rsqrt(mean(x[t,:]^2) + eps)) * w
// x, y: [T, C] bf16 row-major; w: [C] fp32; fp32 sum of squares (warp shuffles,
// then one value per warp through shared memory), 1 / sqrtf as the CPU backend.
// grid (T), block 256; VEC = 8 needs C % 8 == 0 and 16-byte aligned x, y (the
// launcher picks VEC = 1 otherwise). y may alias x: each thread reads its own
// elements (twice) before writing them, and no thread touches another's.
template <int VEC>
__global__ void __launch_bounds__(RMS_THREADS)
    rms_norm_kernel(bf16 *y, const bf16 *x, const float *w, float eps, int C) {
    __shared__ float part[RMS_THREADS / 32];
    const bf16 *xr = x + (size_t)blockIdx.x * C;
    bf16 *yr = y + (size_t)blockIdx.x * C;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    float ss = 0.0f;
    for (int i = threadIdx.x * VEC; i < C; i += RMS_THREADS * VEC) {
        float v[VEC];
        if (VEC == 8)
            bf16x8_to_f32(*reinterpret_cast<const uint4 *>(xr + i), v);
        else
            v[0] = __bfloat162float(xr[i]);
#pragma unroll
        for (int j = 0; j < VEC; j++)
            ss += v[j] * v[j];
    }
    ss = warp_sum(ss);
    if (lane == 0) part[warp] = ss;
    __syncthreads(); // every warp's partial is in part[] before warp 0 adds them
    if (warp == 0) {
        float v = lane < RMS_THREADS / 32 ? part[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) part[0] = v;
    }
    __syncthreads(); // part[0] holds the total before any thread reads it
    const float r = 1.0f / sqrtf(part[0] / (float)C + eps);

    for (int i = threadIdx.x * VEC; i < C; i += RMS_THREADS * VEC) {
        if (VEC == 8) {
            float v[8];
            bf16x8_to_f32(*reinterpret_cast<const uint4 *>(xr + i), v);
            const float4 w0 = *reinterpret_cast<const float4 *>(w + i);
            const float4 w1 = *reinterpret_cast<const float4 *>(w + i + 4);
            const float g[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
            for (int j = 0; j < 8; j++)
                v[j] = (v[j] * r) * g[j];
            *reinterpret_cast<uint4 *>(yr + i) = f32_to_bf16x8(v);
        } else {
            yr[i] = __float2bfloat16_rn((__bfloat162float(xr[i]) * r) * w[i]);
        }
    }
}

snp_status cuda_rms_norm(void *ctx, void *y, const void *x, const bk_weight *w, float eps, int T,
                         int C) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !y || !x || !w)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: rms_norm: NULL %s",
                        !c   ? "ctx"
                        : !y ? "y"
                        : !x ? "x"
                             : "w");
    if (T <= 0 || C <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: rms_norm: T = %d, C = %d must be positive", T, C);
    if (w->rows != 1 || w->cols != C || !w->data_f32)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: rms_norm: weight '%s' is %lld x %lld, expected 1 x %d", w->name,
                        (long long)w->rows, (long long)w->cols, C);
    if (!(eps >= 0.0f) || isinf(eps))
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: rms_norm: eps = %g is not a finite value >= 0",
                        (double)eps);
    TRY(cuda_ctx_enter(c));
    const int vec = C % 8 == 0 && (((uintptr_t)x | (uintptr_t)y) & 15u) == 0;
    if (vec) {
        rms_norm_kernel<8>
            <<<T, RMS_THREADS, 0, c->stream>>>((bf16 *)y, (const bf16 *)x, w->data_f32, eps, C);
        CUDA_LAUNCHED("rms_norm_kernel<8>");
    } else {
        rms_norm_kernel<1>
            <<<T, RMS_THREADS, 0, c->stream>>>((bf16 *)y, (const bf16 *)x, w->data_f32, eps, C);
        CUDA_LAUNCHED("rms_norm_kernel<1>");
    }
    return SNP_OK;
}
