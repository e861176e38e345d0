// cuda_host: the CUDA backend's host-only logic (argument checks, launch plans,
// weight rows to bf16), kept free of CUDA headers so tests run it without a GPU.
// The kernels that follow these plans live in the .cu files.
#include "cuda_host.h"

#include <math.h>
#include <string.h>

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}
static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}
static int64_t ceil_div64(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

static int misaligned16(const void *p) {
    return ((uintptr_t)p & 15u) != 0;
}

snp_status cuda_attn_check(const void *out, const void *q, const void *k, const void *v,
                           const attn_shape *s) {
    TRY(attn_shape_check("cuda", out, q, k, v, s));
    if (s->D % 8 != 0 || s->D > CUDA_ATTN_MAX_D)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: attention: head dim D = %d must be a multiple of 8 and at most %d",
                        s->D, CUDA_ATTN_MAX_D);
    if ((int64_t)s->q_offset + s->T > INT32_MAX)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: attention: q_offset = %d overflows with T = %d",
                        s->q_offset, s->T);
    // Grid limits: y (heads) and z (splits) are 65535 at most; x is 2^31 - 1.
    if (s->H > 65535 || (int64_t)s->T * s->H > INT32_MAX)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: attention: H = %d, T = %d exceed the launch grid's limits", s->H,
                        s->T);
    // 16-byte vector loads (cp.async) and bf16x2 stores need aligned rows; buffers
    // from alloc are 256-byte aligned and D % 8 == 0 keeps every row aligned.
    if (misaligned16(out) || misaligned16(q) || misaligned16(k) || misaligned16(v))
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: attention: %s pointer %p is not 16-byte aligned",
                        misaligned16(out) ? "out"
                        : misaligned16(q) ? "q"
                        : misaligned16(k) ? "k"
                                          : "v",
                        misaligned16(out) ? out
                        : misaligned16(q) ? q
                        : misaligned16(k) ? k
                                          : v);
    if (s->dca) {
        const attn_dca *d = s->dca;
        if (misaligned16(d->q_succ) || misaligned16(d->q_inter))
            return snp_fail(SNP_ERR_ARGUMENT,
                            "cuda: attention: dual chunk attention's %s pointer %p is not 16-byte "
                            "aligned",
                            misaligned16(d->q_succ) ? "q_succ" : "q_inter",
                            misaligned16(d->q_succ) ? d->q_succ : d->q_inter);
        // The kernels compute positions (row + pos_offset) and their chunks in int.
        const int64_t last = max64(s->n_keys, (int64_t)s->q_offset + s->T) + d->pos_offset;
        if (last > INT32_MAX)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "cuda: attention: position offset %d puts row %lld at a position "
                            "past 2^31 - 1",
                            d->pos_offset, (long long)(last - d->pos_offset));
    }
    return SNP_OK;
}

void cuda_attn_plan_make(const attn_shape *s, int n_sm, int prefer_rows, cuda_attn_plan *p) {
    memset(p, 0, sizeof *p);
    const int G = s->H / s->Hkv;
    // Dual Chunk Attention's tensor-core variant keeps Q in registers, which D = 256
    // cannot (attention_mma.cu): there the row kernel runs it.
    const int mma_d = s->D == 64 || s->D == 128 || (s->D == 256 && !s->dca);
    p->kernel = !prefer_rows && mma_d && s->T >= CUDA_ATTN_MMA_MIN_T ? CUDA_ATTN_KERNEL_MMA
                                                                     : CUDA_ATTN_KERNEL_ROWS;
    int64_t tile, target;
    if (p->kernel == CUDA_ATTN_KERNEL_MMA) {
        p->grid_x = (int)ceil_div64(s->T, CUDA_ATTN_MMA_BR);
        p->grid_y = s->H;
        tile = CUDA_ATTN_MMA_BC;
        // D = 128 with Q in registers: 68 KiB and 173 registers per thread (ptxas),
        // so 2 blocks per SM on sm_80 and sm_90.
        target = 2 * (int64_t)n_sm;
    } else {
        p->grid_x = (int)ceil_div64((int64_t)s->T * G, CUDA_ATTN_ROWS_NW);
        p->grid_y = s->Hkv;
        tile = CUDA_ATTN_ROWS_BC;
        target = 4 * (int64_t)n_sm; // small blocks: several per SM hide the key loads
    }
    p->kend = min64(s->n_keys, (int64_t)s->q_offset + s->T);
    int64_t base = (int64_t)p->grid_x * p->grid_y;
    int64_t n_split = 1;
    if (base < target) {
        // Too few blocks to fill the device (decode, short chunks): split the keys.
        n_split = ceil_div64(target, base);
        n_split = min64(n_split, max64(1, p->kend / CUDA_ATTN_MIN_SPLIT_KEYS));
        n_split = min64(n_split, 65535);
    }
    int64_t chunk = ceil_div64(ceil_div64(p->kend, n_split), tile) * tile;
    p->chunk = chunk;
    p->n_split = (int)ceil_div64(p->kend, chunk);
    if (p->n_split > 1)
        p->ws_bytes =
            sizeof(float) * (size_t)p->n_split * (size_t)s->T * (size_t)s->H * (size_t)(s->D + 2);
}

snp_status cuda_snapkv_check(const snapkv_shape *s, const char *op, int stage) {
    TRY(snapkv_shape_check("cuda", s, op));
    if (s->H > 65535 || s->Hkv > 65535)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: %s: H = %d exceeds the launch grid's limit", op,
                        s->H);
    if (stage == 0) {
        if (s->D > CUDA_ATTN_MAX_D)
            return snp_fail(SNP_ERR_ARGUMENT, "cuda: %s: head dim D = %d is over %d", op, s->D,
                            CUDA_ATTN_MAX_D);
        if (!isfinite(s->scale))
            return snp_fail(SNP_ERR_ARGUMENT, "cuda: %s: scale = %g is not finite", op,
                            (double)s->scale);
        if ((int64_t)s->w * (s->H / s->Hkv) > 4096)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "cuda: %s: w = %d window rows times %d query heads per KV head is "
                            "over 4096",
                            op, s->w, s->H / s->Hkv);
    }
    if (stage == 1 && (s->kernel < 1 || s->kernel % 2 == 0 || s->kernel > 1023 ||
                       (unsigned)s->pooling >= SNAPKV_POOL_COUNT))
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: %s: pooling kernel %d must be odd in 1 .. 1023 (pooling mode %d)",
                        op, s->kernel, (int)s->pooling);
    if (stage == 2 && (s->budget <= s->w || s->budget >= s->L))
        return snp_fail(SNP_ERR_ARGUMENT,
                        "cuda: %s: budget C = %d must satisfy w = %d < C < L = %d (L <= C keeps "
                        "every key, which the caller does without selecting)",
                        op, s->budget, s->w, s->L);
    return SNP_OK;
}

void cuda_snapkv_plan_make(const snapkv_shape *s, int n_sm, cuda_snapkv_plan *p) {
    memset(p, 0, sizeof *p);
    p->G = s->H / s->Hkv;
    p->R = p->G * s->w;
    p->P = s->L - s->w;
    int64_t n_split = ceil_div64(2 * (int64_t)n_sm, s->Hkv);
    n_split = min64(n_split, max64(1, s->L / CUDA_SNAPKV_MIN_SPLIT_KEYS));
    n_split = min64(n_split, 65535);
    int64_t chunk = ceil_div64(ceil_div64(s->L, n_split), CUDA_SNAPKV_BK) * CUDA_SNAPKV_BK;
    p->chunk = chunk;
    p->n_split = (int)ceil_div64(s->L, chunk);
    // Partials [n_split][H * w] (m, l), then the merged [H * w] (m, 1 / l).
    p->ws_bytes = sizeof(float) * 2 * (size_t)(p->n_split + 1) * (size_t)s->H * (size_t)s->w;
}

void cuda_host_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = dtype_f32_to_bf16(src[i]);
}

void cuda_host_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = dtype_bf16_to_f32(src[i]);
}

void cuda_host_rows_to_bf16(const weight_src *src, uint64_t r0, uint64_t n_rows, uint16_t *dst,
                            float *tmp) {
    const size_t cols = (size_t)src->cols;
    for (uint64_t r = 0; r < n_rows; r++) {
        const char *srow = (const char *)src->data + (size_t)(r0 + r) * src->row_stride_bytes;
        uint16_t *drow = dst + (size_t)r * cols;
        if (src->type == DTYPE_BF16) {
            memcpy(drow, srow, cols * sizeof(uint16_t));
        } else { // through the reference dequantization, then one rounding to bf16
            dtype_to_f32(src->type, srow, tmp, cols);
            cuda_host_f32_to_bf16(tmp, drow, cols);
        }
    }
}
