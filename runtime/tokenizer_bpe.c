// tokenizer_bpe: one pre-tokenized word to ids. Initial symbols (bytes for byte-level
// BPE; characters with <0xNN> byte fallback or <unk> for SentencePiece-style BPE), then
// merges by rank, lowest rank first and leftmost among equals, exactly as HF's
// Word::merge_all; a per-call word cache. Splitting text into words is
// tokenizer_encode.c's job.
#include "tokenizer_internal.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

// Words up to this many symbols use a linear scan per merge (O(n^2), but no heap and
// the arrays stay in L1); longer ones (SentencePiece models see a whole text as one
// word) use the heap, O(n log n). Both orders are (rank, position), so they agree.
enum { BPE_LINEAR_MAX = 48, BPE_CACHE_MAX_BYTES = 64, BPE_CACHE_MAX_WORDS = 1 << 17 };

static snp_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (*cap >= need) return SNP_OK;
    size_t cap2 = *cap ? *cap : 256;
    while (cap2 < need)
        cap2 *= 2;
    void *q = realloc(*p, cap2 * elem);
    if (!q) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (%zu symbols)", cap2);
    *p = q;
    *cap = cap2;
    return SNP_OK;
}

void tok_bpe_ctx_free(tok_bpe_ctx *b) {
    free(b->id);
    free(b->prev);
    free(b->next);
    free(b->rank);
    free(b->merged);
    free(b->heap);
    tok_map_free(&b->cache);
    free(b->cache_ids.v);
    memset(b, 0, sizeof *b);
}

// Appends one initial symbol.
static inline snp_status sym_push(tok_bpe_ctx *b, int32_t id) {
    if (b->n == b->cap) {
        size_t need = b->n + 1;
        size_t cap = b->cap;
        TRY(grow((void **)&b->id, &cap, need, sizeof *b->id));
        cap = b->cap;
        TRY(grow((void **)&b->prev, &cap, need, sizeof *b->prev));
        cap = b->cap;
        TRY(grow((void **)&b->next, &cap, need, sizeof *b->next));
        cap = b->cap;
        TRY(grow((void **)&b->rank, &cap, need, sizeof *b->rank));
        cap = b->cap;
        TRY(grow((void **)&b->merged, &cap, need, sizeof *b->merged));
        b->cap = cap;
    }
    b->id[b->n++] = id;
    return SNP_OK;
}

// The initial symbols, as HF's BPE::merge_word: each character of the word is looked
// up; a miss falls back to <0xNN> byte tokens, else to <unk> (consecutive unknowns
// fused when fuse_unk). Byte-level models have one symbol per byte.
static snp_status initial_symbols(const tokenizer *t, tok_bpe_ctx *b, const char *s, size_t n) {
    b->n = 0;
    int unk_pending = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        int32_t id;
        if (t->model == TOK_MODEL_BYTE_BPE) {
            id = t->byte_id[(uint8_t)s[i]];
        } else {
            len = (size_t)tok_utf8_len((uint8_t)s[i]);
            if (!len || i + len > n) len = 1; // cannot happen on validated text
            id = tok_map_get(&t->vocab, s + i, len);
        }
        if (id >= 0) {
            if (unk_pending) TRY(sym_push(b, t->unk_id));
            unk_pending = 0;
            TRY(sym_push(b, id));
        } else {
            int all_bytes = t->byte_fallback;
            for (size_t k = 0; all_bytes && k < len; k++)
                all_bytes = t->byte_id[(uint8_t)s[i + k]] >= 0;
            if (all_bytes) {
                // As HF: a pending <unk> is not flushed before the byte tokens.
                for (size_t k = 0; k < len; k++)
                    TRY(sym_push(b, t->byte_id[(uint8_t)s[i + k]]));
            } else if (t->unk_id >= 0) {
                if (unk_pending && !t->fuse_unk) TRY(sym_push(b, t->unk_id));
                unk_pending = 1;
            } else {
                // HF drops such a character without a word; a prompt would then
                // silently lose text (or end up empty), so it is refused, named.
                char hex[16] = "";
                for (size_t k = 0; k < len && k < 4; k++)
                    snprintf(hex + 3 * k, sizeof hex - 3 * k, "%s%02X", k ? " " : "",
                             (uint8_t)s[i + k]);
                return snp_fail(SNP_ERR_UNSUPPORTED,
                                "tokenizer: the vocabulary has no token for the character '%.*s' "
                                "(bytes %s), and neither an unk_token nor byte fallback to use "
                                "instead (a vocabulary without single-character tokens or "
                                "merges to build words from?)",
                                (int)len, s + i, hex);
            }
        }
        i += len;
    }
    if (unk_pending) TRY(sym_push(b, t->unk_id));
    return SNP_OK;
}

static inline void pair_rank(const tokenizer *t, tok_bpe_ctx *b, int32_t i) {
    int32_t j = b->next[i];
    uint32_t r;
    int32_t id;
    if (j >= 0 && tok_merges_get(&t->merges, b->id[i], b->id[j], &r, &id)) {
        b->rank[i] = r;
        b->merged[i] = id;
    } else {
        b->rank[i] = UINT32_MAX;
    }
}

static void merge_linear(const tokenizer *t, tok_bpe_ctx *b) {
    int32_t n = (int32_t)b->n;
    for (int32_t i = 0; i < n; i++) {
        b->prev[i] = i - 1;
        b->next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int32_t i = 0; i < n; i++)
        pair_rank(t, b, i);
    for (;;) {
        uint32_t best = UINT32_MAX;
        int32_t bi = -1;
        for (int32_t i = 0; i >= 0; i = b->next[i])
            if (b->rank[i] < best) { // strict: the leftmost of equal ranks wins
                best = b->rank[i];
                bi = i;
            }
        if (bi < 0) break;
        int32_t j = b->next[bi];
        b->id[bi] = b->merged[bi];
        b->next[bi] = b->next[j];
        if (b->next[j] >= 0) b->prev[b->next[j]] = bi;
        pair_rank(t, b, bi);
        if (b->prev[bi] >= 0) pair_rank(t, b, b->prev[bi]);
    }
}

static inline int heap_less(const tok_bpe_heap_item *a, const tok_bpe_heap_item *c) {
    return a->rank < c->rank || (a->rank == c->rank && a->pos < c->pos);
}

static snp_status heap_push(tok_bpe_ctx *b, uint32_t rank, int32_t pos, int32_t id) {
    TRY(grow((void **)&b->heap, &b->heap_cap, b->heap_n + 1, sizeof *b->heap));
    tok_bpe_heap_item it = {rank, pos, id};
    size_t i = b->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&it, &b->heap[parent])) break;
        b->heap[i] = b->heap[parent];
        i = parent;
    }
    b->heap[i] = it;
    return SNP_OK;
}

static tok_bpe_heap_item heap_pop(tok_bpe_ctx *b) {
    tok_bpe_heap_item top = b->heap[0];
    tok_bpe_heap_item last = b->heap[--b->heap_n];
    size_t i = 0, n = b->heap_n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = l + 1 < n && heap_less(&b->heap[l + 1], &b->heap[l]) ? l + 1 : l;
        if (!heap_less(&b->heap[m], &last)) break;
        b->heap[i] = b->heap[m];
        i = m;
    }
    if (n) b->heap[i] = last;
    return top;
}

// HF's Word::merge_all: a stale heap entry is skipped when its left symbol is gone or
// the pair there no longer merges into the same token.
static snp_status merge_heap(const tokenizer *t, tok_bpe_ctx *b) {
    int32_t n = (int32_t)b->n;
    b->heap_n = 0;
    for (int32_t i = 0; i < n; i++) {
        b->prev[i] = i - 1;
        b->next[i] = i + 1 < n ? i + 1 : -1;
        b->rank[i] = 0; // 0 = alive, 1 = merged into its left neighbour
    }
    for (int32_t i = 0; i + 1 < n; i++) {
        uint32_t r;
        int32_t id;
        if (tok_merges_get(&t->merges, b->id[i], b->id[i + 1], &r, &id))
            TRY(heap_push(b, r, i, id));
    }
    while (b->heap_n) {
        tok_bpe_heap_item top = heap_pop(b);
        int32_t i = top.pos;
        if (b->rank[i] || b->next[i] < 0) continue;
        int32_t j = b->next[i];
        uint32_t r;
        int32_t id;
        if (!tok_merges_get(&t->merges, b->id[i], b->id[j], &r, &id) || id != top.id) continue;
        b->id[i] = id;
        b->rank[j] = 1;
        b->next[i] = b->next[j];
        if (b->next[j] >= 0) b->prev[b->next[j]] = i;
        int32_t p = b->prev[i];
        if (p >= 0 && tok_merges_get(&t->merges, b->id[p], id, &r, &id))
            TRY(heap_push(b, r, p, id));
        int32_t q = b->next[i];
        if (q >= 0 && tok_merges_get(&t->merges, b->id[i], b->id[q], &r, &id))
            TRY(heap_push(b, r, i, id));
    }
    return SNP_OK;
}

snp_status tok_bpe_word(const tokenizer *t, tok_bpe_ctx *b, const char *s, size_t n, tok_ids *out) {
    if (n == 0) return SNP_OK;
    if (t->ignore_merges) { // HF: a word that is itself a token skips the merges
        int32_t id = tok_map_get(&t->vocab, s, n);
        if (id >= 0) return tok_ids_push(out, id);
    }
    int cacheable = n <= BPE_CACHE_MAX_BYTES;
    if (cacheable && b->cache.slots) {
        int32_t off = tok_map_get(&b->cache, s, n);
        if (off >= 0) {
            int32_t cnt = b->cache_ids.v[off];
            for (int32_t k = 1; k <= cnt; k++)
                TRY(tok_ids_push(out, b->cache_ids.v[off + k]));
            return SNP_OK;
        }
    }
    TRY(initial_symbols(t, b, s, n));
    if (b->n == 0) return SNP_OK;
    if (b->n <= BPE_LINEAR_MAX)
        merge_linear(t, b);
    else
        TRY(merge_heap(t, b));
    size_t first = out->n;
    for (int32_t i = 0; i >= 0; i = b->next[i])
        TRY(tok_ids_push(out, b->id[i]));
    if (cacheable && b->cache.n < BPE_CACHE_MAX_WORDS) {
        if (!b->cache.slots) TRY(tok_map_init(&b->cache, 4096));
        int32_t off = (int32_t)b->cache_ids.n;
        TRY(tok_ids_push(&b->cache_ids, (int32_t)(out->n - first)));
        for (size_t k = first; k < out->n; k++)
            TRY(tok_ids_push(&b->cache_ids, out->v[k]));
        TRY(tok_map_put(&b->cache, s, n, off));
    }
    return SNP_OK;
}
