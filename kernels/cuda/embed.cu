// embed: token embedding lookup, rows of the bf16 table copied into activations.
// Token ids are checked on the host (they arrive there) and staged to the device.
#include "cuda_device.h"
#include "cuda_internal.h"

enum { EMBED_THREADS = 256 };

// embed: x[t,:] = table[ids[t],:]   x: [T, C] bf16; table: [V, C] bf16; ids: [T]
// int32 device copy, each < V (checked by the launcher).
// grid (T), block 256; VEC = 8 when C % 8 == 0 and x is 16-byte aligned (the table
// is a cudaMalloc base), else element copies.
template <int VEC>
__global__ void __launch_bounds__(EMBED_THREADS)
    embed_kernel(bf16 *x, const bf16 *table, const int32_t *ids, int C) {
    const bf16 *src = table + (size_t)ids[blockIdx.x] * C;
    bf16 *dst = x + (size_t)blockIdx.x * C;
    for (int i = threadIdx.x * VEC; i < C; i += EMBED_THREADS * VEC) {
        if (VEC == 8)
            *reinterpret_cast<uint4 *>(dst + i) = *reinterpret_cast<const uint4 *>(src + i);
        else
            dst[i] = src[i];
    }
}

snp_status cuda_embed(void *ctx, void *x, const bk_weight *table, const int32_t *ids, int T) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c || !x || !table || !ids)
        return snp_fail(SNP_ERR_ARGUMENT, "cuda: embed: NULL %s",
                        !c       ? "ctx"
                        : !x     ? "x"
                        : !table ? "table"
                                 : "ids");
    if (T <= 0) return snp_fail(SNP_ERR_ARGUMENT, "cuda: embed: T = %d must be positive", T);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= table->rows)
            return snp_fail(SNP_ERR_ARGUMENT,
                            "cuda: embed: token id %d at position %d is outside the %lld rows of "
                            "'%s'",
                            (int)ids[t], t, (long long)table->rows, table->name);
    TRY(cuda_ctx_enter(c));
    void *d_ids = NULL;
    TRY(cuda_stage(c, ids, sizeof(int32_t) * (size_t)T, &d_ids));
    const int C = (int)table->cols;
    if (C % 8 == 0 && ((uintptr_t)x & 15u) == 0) {
        embed_kernel<8><<<T, EMBED_THREADS, 0, c->stream>>>((bf16 *)x, (const bf16 *)table->data,
                                                            (const int32_t *)d_ids, C);
        CUDA_LAUNCHED("embed_kernel<8>");
    } else {
        embed_kernel<1><<<T, EMBED_THREADS, 0, c->stream>>>((bf16 *)x, (const bf16 *)table->data,
                                                            (const int32_t *)d_ids, C);
        CUDA_LAUNCHED("embed_kernel<1>");
    }
    return SNP_OK;
}
