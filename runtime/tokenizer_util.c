// tokenizer_util: the small containers the tokenizer is built from (byte buffer, id
// vector, bytes->id hash map, pair->merge hash map), the GPT-2 byte alphabet and the
// UTF-8 helpers. No tokenization logic lives here.
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

snp_status tok_buf_reserve(tok_buf *b, size_t extra) {
    if (b->cap - b->n >= extra) return SNP_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
    return SNP_OK;
}

snp_status tok_buf_append(tok_buf *b, const void *src, size_t n) {
    TRY(tok_buf_reserve(b, n + 1));
    memcpy(b->p + b->n, src, n);
    b->n += n;
    b->p[b->n] = '\0'; // keeps every buffer usable as a C string
    return SNP_OK;
}

snp_status tok_ids_push(tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 1024;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (%zu ids)", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return SNP_OK;
}

// A multiply-xorshift hash over 8-byte words: keys are short (a word, a token), so
// per-byte loops like FNV cost more than the table probe.
uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)s[i] << (8 * i);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    return h;
}

snp_status tok_map_init(tok_map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t n_slots = 64;
    while (n_slots < expected * 2)
        n_slots *= 2;
    m->slots = calloc(n_slots, sizeof *m->slots);
    if (!m->slots) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (hash map)");
    m->mask = (uint32_t)(n_slots - 1);
    return SNP_OK;
}

static snp_status map_grow(tok_map *m) {
    size_t n_slots = ((size_t)m->mask + 1) * 2;
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (hash map)");
    uint32_t mask = (uint32_t)(n_slots - 1);
    for (uint32_t e = 0; e < m->n; e++) {
        uint32_t i = m->ents[e].hash & mask;
        while (slots[i])
            i = (i + 1) & mask;
        slots[i] = e + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = mask;
    return SNP_OK;
}

snp_status tok_map_put(tok_map *m, const char *key, size_t n, int32_t val) {
    uint32_t h = (uint32_t)(tok_hash(key, n) >> 32);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t e = m->slots[i];
        if (!e) break;
        tok_map_entry *en = &m->ents[e - 1];
        if (en->hash == h && en->len == n && memcmp(m->keys.p + en->off, key, n) == 0) {
            en->val = val;
            return SNP_OK;
        }
    }
    if ((size_t)(m->n + 1) * 2 > (size_t)m->mask + 1) TRY(map_grow(m));
    if (m->n == m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 256;
        tok_map_entry *ents = realloc(m->ents, cap * sizeof *ents);
        if (!ents) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (hash map)");
        m->ents = ents;
        m->cap = cap;
    }
    if (m->keys.n + n > UINT32_MAX)
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: hash map keys exceed 4 GiB");
    tok_map_entry *en = &m->ents[m->n];
    en->hash = h;
    en->off = (uint32_t)m->keys.n;
    en->len = (uint32_t)n;
    en->val = val;
    TRY(tok_buf_append(&m->keys, key, n));
    uint32_t i = h & m->mask;
    while (m->slots[i])
        i = (i + 1) & m->mask;
    m->slots[i] = ++m->n;
    return SNP_OK;
}

int32_t tok_map_get(const tok_map *m, const char *key, size_t n) {
    if (!m->slots) return -1;
    uint32_t h = (uint32_t)(tok_hash(key, n) >> 32);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t e = m->slots[i];
        if (!e) return -1;
        const tok_map_entry *en = &m->ents[e - 1];
        if (en->hash == h && en->len == n && memcmp(m->keys.p + en->off, key, n) == 0)
            return en->val;
    }
}

void tok_map_free(tok_map *m) {
    free(m->slots);
    free(m->ents);
    free(m->keys.p);
    memset(m, 0, sizeof *m);
}

snp_status tok_merges_init(tok_merges *m, size_t expected) {
    size_t n_slots = 64;
    while (n_slots < expected * 2)
        n_slots *= 2;
    m->keys = malloc(n_slots * sizeof *m->keys);
    m->vals = malloc(n_slots * sizeof *m->vals);
    if (!m->keys || !m->vals) {
        tok_merges_free(m);
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (%zu merge slots)", n_slots);
    }
    memset(m->keys, 0xff, n_slots * sizeof *m->keys);
    m->mask = (uint32_t)(n_slots - 1);
    m->n = 0;
    return SNP_OK;
}

snp_status tok_merges_put(tok_merges *m, int32_t left, int32_t right, uint32_t rank, int32_t id) {
    if ((size_t)(m->n + 1) * 2 > (size_t)m->mask + 1) {
        tok_merges old = *m;
        TRY(tok_merges_init(m, (size_t)old.mask + 1));
        for (uint32_t i = 0; i <= old.mask; i++)
            if (old.keys[i] != UINT64_MAX)
                TRY(tok_merges_put(m, (int32_t)(old.keys[i] >> 32), (int32_t)(uint32_t)old.keys[i],
                                   (uint32_t)(old.vals[i] >> 32), (int32_t)(uint32_t)old.vals[i]));
        tok_merges_free(&old);
    }
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & m->mask;
    while (m->keys[i] != UINT64_MAX && m->keys[i] != key)
        i = (i + 1) & m->mask;
    if (m->keys[i] == UINT64_MAX) m->n++;
    m->keys[i] = key;
    m->vals[i] = ((uint64_t)rank << 32) | (uint32_t)id;
    return SNP_OK;
}

void tok_merges_free(tok_merges *m) {
    free(m->keys);
    free(m->vals);
    m->keys = m->vals = NULL;
    m->mask = m->n = 0;
}

// GPT-2 bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68
// bytes (controls, space, 0x7F-0xA0, 0xAD) take code points 256.. in byte order.
static int byte_is_printable(uint8_t b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

// The 68 stand-ins, in byte order: 0x00-0x20 (33), 0x7F-0xA0 (34), 0xAD (1).
uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (b - 0x7Fu);
    return 256u + 67u; // 0xAD
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable((uint8_t)cp) ? (int)cp : -1;
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + k - 33);
    if (k == 67) return 0xAD;
    return -1;
}

int tok_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

// Length of the valid sequence starting at s (1..4), or 0 if s does not start one;
// the checks are those of RFC 3629 (no overlongs, surrogates or code points > 0x10FFFF).
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int len = tok_utf8_len(c);
    if (!len || (size_t)len > n) return 0;
    unsigned char c1 = s[1];
    if ((c1 & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && c1 < 0xA0) return 0;
    if (c == 0xED && c1 > 0x9F) return 0;
    if (c == 0xF0 && c1 < 0x90) return 0;
    if (c == 0xF4 && c1 > 0x8F) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return (size_t)len;
}

size_t tok_utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        // ASCII runs dominate real text: skip them eight bytes at a time.
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        size_t len = utf8_seq(s + i, n - i);
        if (!len) return i;
        i += len;
    }
    return n;
}

snp_status tok_bytelevel_decode(const char *s, size_t n, tok_buf *out) {
    size_t start = out->n;
    TRY(tok_buf_reserve(out, n + 1));
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int len = tok_utf8_len(u[i]);
        if (!len || i + (size_t)len > n) goto raw;
        uint32_t cp = len == 1   ? u[i]
                      : len == 2 ? ((u[i] & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu)
                                 : 0x110000; // 3- and 4-byte characters are never in the alphabet
        int b = tok_cp_to_byte(cp);
        if (b < 0) goto raw;
        out->p[out->n++] = (char)b;
        i += (size_t)len;
    }
    out->p[out->n] = '\0';
    return SNP_OK;
raw:
    out->n = start;
    return tok_buf_append(out, s, n);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

snp_status tok_spm_piece(const char *s, size_t n, int meta, int bytes, tok_buf *out) {
    // HF's ByteFallback decoder turns exactly "<0xNN>" into one byte.
    if (bytes && n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' &&
        hex_digit(s[3]) >= 0 && hex_digit(s[4]) >= 0) {
        char b = (char)(hex_digit(s[3]) * 16 + hex_digit(s[4]));
        return tok_buf_append(out, &b, 1);
    }
    TRY(tok_buf_reserve(out, n + 1));
    for (size_t i = 0; i < n;) {
        if (meta && i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) { // U+2581 '▁'
            out->p[out->n++] = ' ';
            i += 3;
        } else {
            out->p[out->n++] = s[i++];
        }
    }
    out->p[out->n] = '\0';
    return SNP_OK;
}

snp_status tok_decode_piece(const tokenizer *t, const char *s, size_t n, tok_buf *out) {
    if (t->model == TOK_MODEL_BYTE_BPE) return tok_bytelevel_decode(s, n, out);
    return tok_spm_piece(s, n, t->dec_meta, t->dec_bytes, out);
}
