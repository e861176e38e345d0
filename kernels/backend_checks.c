// backend_checks: the preconditions of the attention and SnapKV ops that every
// backend enforces the same way (kernels/backend.h); a backend adds only its own
// limits (alignment, launch sizes) on top.
#include <math.h>

#include "backend.h"

// dca_check: a Dual Chunk Attention block's own fields (backend.h, attn_dca);
// n_keys: rows the call reads (the window's L under SnapKV's votes).
static snp_status dca_check(const char *backend, const char *op, const attn_dca *d, int n_keys) {
    if (d->chunk_len <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: dual chunk attention chunk length %d must be "
                        "positive", backend, op, d->chunk_len);
    if (!d->q_succ || !d->q_inter)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: dual chunk attention needs q_succ and q_inter",
                        backend, op);
    if (d->n_pos_rows < 0 || d->n_pos_rows > n_keys || d->n_pos_rows > d->pos_cap ||
        (d->n_pos_rows > 0 && !d->pos))
        return snp_fail(SNP_ERR_ARGUMENT,
                        "%s: %s: %d key rows with stored positions (pos_cap %d, %d keys, pos %s)",
                        backend, op, d->n_pos_rows, d->pos_cap, n_keys, d->pos ? "set" : "NULL");
    if (d->pos_offset < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: position offset %d is negative", backend, op,
                        d->pos_offset);
    return SNP_OK;
}

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
    if (s->dca) return dca_check(backend, "attention", s->dca, s->n_keys);
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
    if (s->dca) {
        if (s->dca->n_pos_rows != 0 || s->dca->pos_offset != 0)
            return snp_fail(SNP_ERR_ARGUMENT, "%s: %s: the full K's rows are its positions "
                            "(no stored positions, offset 0)", backend, op);
        return dca_check(backend, op, s->dca, s->L);
    }
    return SNP_OK;
}
