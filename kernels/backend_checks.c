// backend_checks: the preconditions of the attention and SnapKV ops that every
// backend enforces the same way (kernels/backend.h); a backend adds only its own
// limits (alignment, launch sizes) on top.
#include <math.h>

#include "backend.h"

snp_status attn_shape_check(const char *backend, const void *out, const void *q, const void *k,
                            const void *v, const attn_shape *s) {
    if (!out || !q || !k || !v || !s)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: attention: NULL %s", backend,
                        !out ? "out" : !q ? "q" : !k ? "k" : !v ? "v" : "shape");
    if (s->T <= 0 || s->H <= 0 || s->Hkv <= 0 || s->D <= 0 || s->S_cap <= 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "%s: attention: T = %d, H = %d, Hkv = %d, D = %d, S_cap = %d must be "
                        "positive",
                        backend, s->T, s->H, s->Hkv, s->D, s->S_cap);
    if (s->H % s->Hkv != 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "%s: attention: H = %d query heads is not a multiple of Hkv = %d", backend,
                        s->H, s->Hkv);
    if (s->n_keys <= 0 || s->n_keys > s->S_cap)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: attention: n_keys = %d is outside 1 .. S_cap = %d",
                        backend, s->n_keys, s->S_cap);
    if (s->q_offset < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: attention: q_offset = %d is negative", backend,
                        s->q_offset);
    if (!isfinite(s->scale))
        return snp_fail(SNP_ERR_ARGUMENT, "%s: attention: scale = %g is not finite", backend,
                        (double)s->scale);
    return SNP_OK;
}

snp_status snapkv_shape_check(const char *backend, const snapkv_shape *s, const char *op) {
    if (!s) return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: NULL shape", backend, op);
    if (s->H <= 0 || s->Hkv <= 0 || s->D <= 0 || s->S_cap <= 0 || s->H % s->Hkv != 0)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "%s: %s: H = %d, Hkv = %d, D = %d, S_cap = %d must be positive with H a "
                        "multiple of Hkv",
                        backend, op, s->H, s->Hkv, s->D, s->S_cap);
    if (s->w < 1 || s->L <= s->w || s->L > s->S_cap)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "%s: %s: need 1 <= w < L <= S_cap, got w = %d, L = %d, S_cap = %d", backend,
                        op, s->w, s->L, s->S_cap);
    if (s->budget <= s->w)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: budget %d must exceed the window %d", backend,
                        op, s->budget, s->w);
    if (s->kernel < 1 || s->kernel % 2 == 0 || (unsigned)s->pooling >= SNAPKV_POOL_COUNT)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: pooling kernel %d must be odd and >= 1 (mode %d)",
                        backend, op, s->kernel, (int)s->pooling);
    if (!isfinite(s->scale))
        return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: scale = %g is not finite", backend, op,
                        (double)s->scale);
    return SNP_OK;
}
