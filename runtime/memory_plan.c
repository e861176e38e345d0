// memory_plan: per-rank memory arithmetic for a request, and its limit check.
#include "memory_plan.h"

#include "kv_store.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

void memory_plan_compute(const model_config *c, int tp_size, uint64_t weight_bytes,
                         size_t act_bytes, size_t kv_bytes, int L, int max_new, int chunk,
                         kv_policy policy, const snapkv_params *snap, memory_plan *out) {
    memset(out, 0, sizeof *out);
    const uint64_t A = act_bytes, KV = kv_bytes, C = (uint64_t)c->n_embd, D = (uint64_t)c->head_dim;
    const uint64_t Hl = (uint64_t)(c->n_heads / tp_size);
    const uint64_t Hkvl = (uint64_t)(c->n_kv_heads >= tp_size ? c->n_kv_heads / tp_size : 1);
    const uint64_t Fl = (uint64_t)(c->n_ff / tp_size), V = (uint64_t)c->n_vocab;
    const uint64_t n_layers = (uint64_t)c->n_layers, n_new = max_new > 0 ? (uint64_t)max_new : 1;
    const uint64_t T = (uint64_t)(chunk < L ? chunk : L);
    out->prompt_tokens = L;
    out->max_new_tokens = max_new;
    out->chunk = chunk;
    out->tp_size = tp_size;
    out->policy = policy;
    out->weights = weight_bytes;
    out->hidden = (uint64_t)L * C * A;
    const uint64_t per_row = n_layers * 2 * Hkvl * D * KV; // one cache row, all layers
    out->kv_cache_full = per_row * ((uint64_t)L + n_new);
    // Chunk buffers: xn, proj (C each), q, att (Hl*D), k, v (Hkvl*D), gate, up (Fl),
    // and up to 16 rows of logits (forward.c).
    const uint64_t logit_rows = T < 16 ? T : 16;
    out->workspace = T * A * (2 * C + 2 * Hl * D + 2 * Hkvl * D + 2 * Fl) + logit_rows * V * A;
    // Dual Chunk Attention: each chunk's two more query rotations (forward.c).
    const int dca = model_config_dca_chunk_len(c) > 0;
    if (dca) out->workspace += T * A * 2 * Hl * D;
    if (policy == KV_POLICY_SNAPKV) {
        const uint64_t kept = (uint64_t)snapkv_rows_kept(snap, L);
        const uint64_t P = L > snap->window ? (uint64_t)(L - snap->window) : 0;
        out->layer_kv = 2 * Hkvl * (uint64_t)L * D * KV;
        out->kv_cache = per_row * (kept + n_new);
        out->workspace += P * (Hl + Hkvl) * 4 + kept * Hkvl * 4 * 2 +
                          (uint64_t)snap->window * Hl * D * (A + 4);
        // DCA: the window's two more rotations, and each cache row's position.
        if (dca)
            out->workspace += (uint64_t)snap->window * Hl * D * A * 2 +
                              n_layers * Hkvl * (kept + n_new) * 4;
    } else {
        out->kv_cache = out->kv_cache_full;
    }
    out->total = out->weights + out->hidden + out->layer_kv + out->kv_cache + out->workspace;
    memory_plan_set_store(out, c, tp_size, kv_bytes, L);
}

void memory_plan_set_store(memory_plan *p, const model_config *c, int tp_size, size_t kv_bytes,
                           int n_prefix) {
    const int Hl = c->n_heads / tp_size;
    const int Hkvl = c->n_kv_heads >= tp_size ? c->n_kv_heads / tp_size : 1;
    p->store_prefix_tokens = n_prefix;
    p->store_bytes = kv_store_data_bytes(c->n_layers, Hl, Hkvl, c->head_dim, (int)kv_bytes, n_prefix);
    // Per document token: K and V of every layer; the query tail is a fixed cost.
    p->store_bytes_per_token = (uint64_t)c->n_layers * 2 * (uint64_t)Hkvl *
                               (uint64_t)c->head_dim * (uint64_t)kv_bytes;
    const uint64_t rows = (uint64_t)Hkvl * (uint64_t)n_prefix;
    const uint64_t staging = rows * (2 * (uint64_t)c->head_dim * kv_bytes + 4);
    if (p->store_staging_counted) p->total = p->total - p->store_staging + staging;
    p->store_staging = staging;
}

void memory_plan_add_store_staging(memory_plan *p) {
    if (p->store_staging_counted) return;
    p->total += p->store_staging;
    p->store_staging_counted = 1;
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

snp_status memory_plan_check(const memory_plan *p, uint64_t limit_bytes, const char *limit_source) {
    if (limit_bytes == 0 || p->total <= limit_bytes) return SNP_OK;
    return snp_fail(SNP_ERR_MEMORY,
                    "memory plan: %d prompt tokens with --kv-policy %s need %.1f MiB per rank "
                    "(weights %.1f, hidden states %.1f, layer K/V %.1f, KV cache %.1f, workspace "
                    "%.1f), over the limit of %.1f MiB (%s)",
                    p->prompt_tokens, kv_policy_name(p->policy), mib(p->total), mib(p->weights),
                    mib(p->hidden), mib(p->layer_kv), mib(p->kv_cache), mib(p->workspace),
                    mib(limit_bytes), limit_source);
}

void memory_plan_print(FILE *out, const memory_plan *p) {
    fprintf(out, "# memory plan per rank: %d prompt + %d new tokens, kv policy %s, tp %d, chunk %d\n",
            p->prompt_tokens, p->max_new_tokens, kv_policy_name(p->policy), p->tp_size, p->chunk);
    fprintf(out, "# %-22s %12s\n", "item", "MiB");
    fprintf(out, "  %-22s %12.1f\n", "weights", mib(p->weights));
    fprintf(out, "  %-22s %12.1f\n", "hidden states", mib(p->hidden));
    fprintf(out, "  %-22s %12.1f\n", "one layer's K/V", mib(p->layer_kv));
    fprintf(out, "  %-22s %12.1f\n", "KV cache (decode)", mib(p->kv_cache));
    fprintf(out, "  %-22s %12.1f\n", "workspace", mib(p->workspace));
    fprintf(out, "  %-22s %12.1f\n", "total", mib(p->total));
    fprintf(out, "  %-22s %12.1f\n", "(full KV cache would be)", mib(p->kv_cache_full));
    fprintf(out, "# KV store on disk (qa --kv-store), per rank: %.1f MiB for a %d-token document, "
                 "%llu bytes per token\n",
            mib(p->store_bytes), p->store_prefix_tokens,
            (unsigned long long)p->store_bytes_per_token);
    fprintf(out, "# reading it on a GPU stages one layer on the device: %.1f MiB%s\n",
            mib(p->store_staging), p->store_staging_counted ? " (in the total)" : "");
}

uint64_t memory_machine_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

snp_status memory_parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    uint64_t unit = 1;
    if (*end == 'K' || *end == 'k') unit = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') unit = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') unit = 1ull << 30, end++;
    else if (*end == 'T' || *end == 't') unit = 1ull << 40, end++;
    if (*end == 'i' || *end == 'B') end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (end == s || *end || !(v >= 0) || v * (double)unit > 1.8e19)
        return snp_fail(SNP_ERR_ARGUMENT, "--mem-limit '%s' is not a size like 8G or 512M", s);
    *out = (uint64_t)(v * (double)unit);
    return SNP_OK;
}

uint64_t memory_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; // Linux reports KiB
}
