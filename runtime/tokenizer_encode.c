// tokenizer_encode: text to ids in HF's order: UTF-8 check, added tokens found on the
// raw text (with lstrip/rstrip/single_word), the normalizer (NFC via utf8proc,
// prepend, replace), added tokens found on normalized text, the pre-tokenizer regex
// splits (PCRE2, UTF + UCP), and each word to tokenizer_bpe.c.
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct enc_ctx {
    const tokenizer *t;
    tok_ids *out;
    pcre2_match_data *md[TOK_MAX_SPLITS];
    tok_buf norm;   // the normalized segment
    tok_buf prefix; // a segment with the ByteLevel prefix space
    tok_buf meta;   // a segment after the Metaspace rewrite
    int seg_first;  // the current segment starts at byte 0 of the input (Metaspace "first")
    int plain;      // special added tokens spelled in the text are plain text
    tok_bpe_ctx bpe;
} enc_ctx;

// ---- normalizer ---------------------------------------------------------------------

// NFC, run only where it can change something. An ASCII character never composes with
// what precedes it, so the text splits into independent chunks just before each ASCII
// byte; a chunk whose code points are all below U+0300 (lead bytes < 0xCC) is already
// NFC. A non-ASCII run is normalized together with the ASCII character before it,
// which may be its base ("e" + U+0301).
static snp_status nfc_append(const char *s, size_t n, tok_buf *out) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        int unstable = 0;
        while (j < n && (uint8_t)s[j] >= 0x80)
            unstable |= (uint8_t)s[j++] >= 0xCC;
        if (j == i) { // ASCII run
            while (j < n && (uint8_t)s[j] < 0x80)
                j++;
            TRY(tok_buf_append(out, s + i, j - i));
        } else if (!unstable) {
            TRY(tok_buf_append(out, s + i, j - i));
        } else {
            size_t start = i;
            if (i > 0 && (uint8_t)s[i - 1] < 0x80) { // take back the base character
                start = i - 1;
                out->n--;
            }
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t m =
                utf8proc_map((const utf8proc_uint8_t *)s + start, (utf8proc_ssize_t)(j - start),
                             &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0)
                return snp_fail(SNP_ERR_UTF8, "tokenizer: NFC failed at byte %zu: %s", start,
                                utf8proc_errmsg(m));
            snp_status st = tok_buf_append(out, dst, (size_t)m);
            free(dst);
            TRY(st);
        }
        i = j;
    }
    return SNP_OK;
}

static snp_status replace_all(const char *s, size_t n, const char *from, const char *to,
                              tok_buf *out) {
    size_t fl = strlen(from), tl = strlen(to);
    size_t i = 0;
    while (i < n) {
        const char *hit = fl <= n - i ? memchr(s + i, from[0], n - i) : NULL;
        while (hit && (size_t)(s + n - hit) >= fl && memcmp(hit, from, fl) != 0)
            hit = memchr(hit + 1, from[0], (size_t)(s + n - hit - 1));
        if (!hit || (size_t)(s + n - hit) < fl) {
            TRY(tok_buf_append(out, s + i, n - i));
            break;
        }
        TRY(tok_buf_append(out, s + i, (size_t)(hit - (s + i))));
        TRY(tok_buf_append(out, to, tl));
        i = (size_t)(hit - s) + fl;
    }
    return SNP_OK;
}

snp_status tok_normalize(const tokenizer *t, const char *s, size_t n, tok_buf *out) {
    if (t->n_norm == 0) return tok_buf_append(out, s, n);
    snp_status st = SNP_OK;
    tok_buf a = {0}, b = {0};
    TRY_GOTO(st, tok_buf_append(&a, s, n), done);
    for (int k = 0; k < t->n_norm; k++) {
        const tok_norm_op *op = &t->norm[k];
        b.n = 0;
        if (op->kind == TOK_NORM_NFC) {
            TRY_GOTO(st, tok_buf_reserve(&b, a.n + 1), done);
            TRY_GOTO(st, nfc_append(a.p, a.n, &b), done);
        } else if (op->kind == TOK_NORM_PREPEND) {
            if (a.n == 0) continue; // HF prepends only to non-empty text
            TRY_GOTO(st, tok_buf_append(&b, op->to, strlen(op->to)), done);
            TRY_GOTO(st, tok_buf_append(&b, a.p, a.n), done);
        } else {
            TRY_GOTO(st, tok_buf_reserve(&b, a.n + 1), done);
            TRY_GOTO(st, replace_all(a.p, a.n, op->from, op->to, &b), done);
        }
        tok_buf tmp = a;
        a = b;
        b = tmp;
    }
    st = tok_buf_append(out, a.p ? a.p : "", a.n);
done:
    free(a.p);
    free(b.p);
    return st;
}

// ---- pre-tokenizer --------------------------------------------------------------------

// A SentencePiece text cut before each '▁' that follows another character (only when
// tokenizer.spm_cut_words says no merge crosses such a cut).
static snp_status spm_words(enc_ctx *c, const char *s, size_t n) {
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        if (memcmp(s + i, "\xE2\x96\x81", 3) != 0) continue;
        if (i >= 3 && memcmp(s + i - 3, "\xE2\x96\x81", 3) == 0) continue;
        TRY(tok_bpe_word(c->t, &c->bpe, s + start, i - start, c->out));
        start = i;
        i += 2;
    }
    return tok_bpe_word(c->t, &c->bpe, s + start, n - start, c->out);
}

static snp_status split_step(enc_ctx *c, int step, const char *s, size_t n) {
    const tokenizer *t = c->t;
    if (n == 0) return SNP_OK;
    if (step == t->n_splits)
        return t->spm_cut_words ? spm_words(c, s, n) : tok_bpe_word(t, &c->bpe, s, n, c->out);
    const tok_split *sp = &t->splits[step];
    pcre2_match_data *md = c->md[step];
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t pos = 0, last = 0;
    while (pos < n) {
        int rc = sp->jit ? pcre2_jit_match(sp->re, (PCRE2_SPTR)s, n, pos, 0, md, NULL)
                         : pcre2_match(sp->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return snp_fail(SNP_ERR_INTERNAL, "tokenizer: pre-tokenizer regex failed: %s",
                            (const char *)msg);
        }
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { // an empty match splits nothing: step over one character
            int len = tok_utf8_len((uint8_t)s[ms]);
            pos = ms + (len ? (size_t)len : 1);
            continue;
        }
        if (ms > last) TRY(split_step(c, step + 1, s + last, ms - last));
        if (!sp->removed) TRY(split_step(c, step + 1, s + ms, me - ms));
        last = pos = me;
    }
    if (last < n) TRY(split_step(c, step + 1, s + last, n - last));
    return SNP_OK;
}

// Metaspace: ' ' -> '▁', '▁' prepended per the scheme, then (split) cut before every
// '▁' ("MergedWithNext": "a▁▁b" -> "a", "▁", "▁b").
static snp_status metaspace(enc_ctx *c, const char *s, size_t n) {
    const tokenizer *t = c->t;
    c->meta.n = 0;
    int prepend =
        t->meta_prepend == TOK_META_ALWAYS || (t->meta_prepend == TOK_META_FIRST && c->seg_first);
    // HF replaces first, then prepends unless the text now starts with '▁'.
    if (prepend && !(n >= 3 && memcmp(s, "\xE2\x96\x81", 3) == 0) && s[0] != ' ')
        TRY(tok_buf_append(&c->meta, "\xE2\x96\x81", 3));
    TRY(tok_buf_reserve(&c->meta, n + 1));
    TRY(replace_all(s, n, " ", "\xE2\x96\x81", &c->meta));
    s = c->meta.p;
    n = c->meta.n;
    if (!t->meta_split) return split_step(c, 0, s, n);
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        if (memcmp(s + i, "\xE2\x96\x81", 3) != 0) continue;
        TRY(split_step(c, 0, s + start, i - start));
        start = i;
        i += 2;
    }
    return split_step(c, 0, s + start, n - start);
}

static snp_status pretokenize(enc_ctx *c, const char *s, size_t n) {
    if (n == 0) return SNP_OK;
    if (c->t->meta_pretok) return metaspace(c, s, n);
    if (c->t->add_prefix_space && s[0] != ' ') {
        c->prefix.n = 0;
        TRY(tok_buf_append(&c->prefix, " ", 1));
        TRY(tok_buf_append(&c->prefix, s, n));
        s = c->prefix.p;
        n = c->prefix.n;
    }
    return split_step(c, 0, s, n);
}

// ---- added tokens ----------------------------------------------------------------------

static uint32_t decode_at(const char *s, size_t n, size_t i) {
    const unsigned char *u = (const unsigned char *)s + i;
    int len = tok_utf8_len(u[0]);
    if (len <= 1 || i + (size_t)len > n) return u[0];
    uint32_t cp = u[0] & (0xFF >> (len + 1));
    for (int k = 1; k < len; k++)
        cp = (cp << 6) | (u[k] & 0x3F);
    return cp;
}

static size_t char_start_before(const char *s, size_t i) {
    do
        i--;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80);
    return i;
}

// Rust's char::is_whitespace (Unicode White_Space).
static int is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// Rust regex's Unicode \w, which HF's single_word check uses: Alphabetic, marks,
// decimal digits, connector punctuation, ZWNJ/ZWJ. Alphabetic is the letters, Nl and
// Other_Alphabetic (mostly marks; the circled/squared letters spelled out).
static int is_word_char(uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ME) || // L*, M*
           cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL ||
           cat == UTF8PROC_CATEGORY_PC || c == 0x200C || c == 0x200D ||
           (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
           (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

// Longest added token starting at s[i], or -1; *end is where it stops.
static int32_t trie_match(const tok_trie *tr, const char *s, size_t n, size_t i, size_t *end) {
    int32_t best = -1, node = 0;
    for (size_t k = i; k < n; k++) {
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != (uint8_t)s[k])
            ch = tr->nodes[ch].sibling;
        if (ch < 0) break;
        node = ch;
        if (tr->nodes[node].added >= 0) {
            best = tr->nodes[node].added;
            *end = k + 1;
        }
    }
    return best;
}

static snp_status encode_normalized(enc_ctx *c, const char *s, size_t n);

// HF's AddedVocabulary::find_matches (leftmost-longest), then each gap of plain text
// goes on to `next` (normalization for the raw stage, the pre-tokenizer after it).
static snp_status split_added(enc_ctx *c, const tok_trie *tr, const char *s, size_t n, int raw) {
    const tokenizer *t = c->t;
    size_t start_off = 0, i = 0;
    int outer_first = raw || c->seg_first; // does s itself start the input?
    while (i < n) {
        if (!tr->first[(uint8_t)s[i]]) {
            i++;
            continue;
        }
        size_t end = 0;
        int32_t k = trie_match(tr, s, n, i, &end);
        if (k < 0) {
            i++;
            continue;
        }
        const tok_added *a = &t->added[k];
        if (c->plain && a->special) { // HF split_special_tokens=True: spelled, not matched
            i++;
            continue;
        }
        size_t start = i, stop = end;
        if (a->single_word) {
            int left_ok = start == 0 || !is_word_char(decode_at(s, n, char_start_before(s, start)));
            int right_ok = stop == n || !is_word_char(decode_at(s, n, stop));
            if (!left_ok || !right_ok) {
                i++;
                continue;
            }
        }
        if (a->lstrip)
            while (start > start_off && is_ws(decode_at(s, n, char_start_before(s, start))))
                start = char_start_before(s, start);
        if (a->rstrip)
            while (stop < n && is_ws(decode_at(s, n, stop))) {
                int len = tok_utf8_len((uint8_t)s[stop]);
                stop += len ? (size_t)len : 1;
            }
        c->seg_first = outer_first && start_off == 0;
        if (start > start_off)
            TRY(raw ? encode_normalized(c, s + start_off, start - start_off)
                    : pretokenize(c, s + start_off, start - start_off));
        TRY(tok_ids_push(c->out, a->id));
        start_off = i = stop;
    }
    c->seg_first = outer_first && start_off == 0;
    if (start_off < n)
        TRY(raw ? encode_normalized(c, s + start_off, n - start_off)
                : pretokenize(c, s + start_off, n - start_off));
    return SNP_OK;
}

// One segment between raw-matched added tokens: normalize, then look for normalized
// added tokens, then pre-tokenize.
static snp_status encode_normalized(enc_ctx *c, const char *s, size_t n) {
    const tokenizer *t = c->t;
    if (t->n_norm) {
        c->norm.n = 0;
        TRY(tok_normalize(t, s, n, &c->norm));
        s = c->norm.p;
        n = c->norm.n;
    }
    if (t->trie_norm.nodes) return split_added(c, &t->trie_norm, s, n, 0);
    return pretokenize(c, s, n);
}

static snp_status encode(const tokenizer *t, const char *text, size_t n_bytes, int add_bos,
                         int plain, int32_t **out_ids, size_t *out_n) {
    *out_ids = NULL;
    *out_n = 0;
    size_t valid = tok_utf8_valid_prefix((const unsigned char *)text, n_bytes);
    if (valid != n_bytes)
        return snp_fail(SNP_ERR_UTF8,
                        "tokenizer: input is not valid UTF-8: byte 0x%02X at byte offset %zu",
                        (unsigned)(uint8_t)text[valid], valid);
    snp_status st = SNP_OK;
    tok_ids out = {0};
    enc_ctx c = {.t = t, .out = &out, .seg_first = 1, .plain = plain};
    for (int k = 0; k < t->n_splits; k++) {
        c.md[k] = pcre2_match_data_create_from_pattern(t->splits[k].re, NULL);
        if (!c.md[k]) {
            st = snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (match data)");
            goto done;
        }
    }
    if (add_bos < 0) add_bos = tokenizer_add_bos_default(t);
    if (add_bos && t->bos_id >= 0) TRY_GOTO(st, tok_ids_push(&out, t->bos_id), done);
    if (t->trie_raw.nodes)
        TRY_GOTO(st, split_added(&c, &t->trie_raw, text, n_bytes, 1), done);
    else
        TRY_GOTO(st, encode_normalized(&c, text, n_bytes), done);
    *out_ids = out.v;
    *out_n = out.n;
    out.v = NULL;
done:
    free(out.v);
    for (int k = 0; k < t->n_splits; k++)
        pcre2_match_data_free(c.md[k]);
    free(c.norm.p);
    free(c.prefix.p);
    free(c.meta.p);
    tok_bpe_ctx_free(&c.bpe);
    return st;
}

snp_status tokenizer_encode(const tokenizer *t, const char *text, size_t n_bytes, int add_bos,
                            int32_t **out_ids, size_t *out_n) {
    return encode(t, text, n_bytes, add_bos, 0, out_ids, out_n);
}

snp_status tokenizer_encode_plain(const tokenizer *t, const char *text, size_t n_bytes,
                                  int32_t **out_ids, size_t *out_n) {
    return encode(t, text, n_bytes, 0, 1, out_ids, out_n);
}
