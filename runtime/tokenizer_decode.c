// tokenizer_decode: ids back to text, whole or streamed one id at a time. Pieces are
// pre-decoded per id at load (byte-level alphabet, '▁', <0xNN>); this file joins them,
// strips the SentencePiece leading space and repairs invalid UTF-8 as Rust's
// String::from_utf8_lossy does (one U+FFFD per maximal invalid subpart).
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; // U+FFFD

// Appends the valid UTF-8 of s[0..n) to out, invalid subparts replaced. When !final, an
// incomplete sequence at the very end is left alone; returns how many bytes were used.
static snp_status utf8_lossy(const unsigned char *s, size_t n, int final, tok_buf *out,
                             size_t *used) {
    size_t i = 0;
    TRY(tok_buf_reserve(out, n * 3 + 1));
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            out->p[out->n++] = (char)c;
            i++;
            continue;
        }
        int len = tok_utf8_len(c);
        if (!len) {
            memcpy(out->p + out->n, replacement, 3);
            out->n += 3;
            i++;
            continue;
        }
        unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        size_t k = 1;
        while (k < (size_t)len && i + k < n) {
            unsigned char d = s[i + k];
            if (k == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) break;
            k++;
        }
        if (k == (size_t)len) {
            memcpy(out->p + out->n, s + i, k);
            out->n += k;
        } else if (i + k == n && !final) {
            break; // may still be completed by the next token
        } else {
            memcpy(out->p + out->n, replacement, 3);
            out->n += 3;
        }
        i += k;
    }
    out->p[out->n] = '\0';
    *used = i;
    return SNP_OK;
}

// Appends id's piece; for the first token under a Metaspace decoder without the spaces
// its '▁' became (vocabulary pieces hold no other spaces; a <0x20> byte token keeps its).
static snp_status append_piece(const tokenizer *t, int32_t id, int first, tok_buf *raw) {
    if (id < 0 || id >= t->n_vocab)
        return snp_fail(SNP_ERR_ARGUMENT, "tokenizer: id %d is outside the vocabulary (0..%d)", id,
                        t->n_vocab - 1);
    const char *p = t->pieces.p + t->piece_off[id];
    size_t n = t->piece_len[id];
    int byte_token = n == 1 && t->dec_bytes && t->byte_id[(uint8_t)p[0]] == id;
    if (!first || !t->dec_first_drop || byte_token) return tok_buf_append(raw, p, n);
    TRY(tok_buf_reserve(raw, n + 1));
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ') raw->p[raw->n++] = p[i];
    raw->p[raw->n] = '\0';
    return SNP_OK;
}

snp_status tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n_ids, char **out_text,
                            size_t *out_n) {
    *out_text = NULL;
    *out_n = 0;
    snp_status st = SNP_OK;
    tok_buf raw = {0}, out = {0};
    TRY_GOTO(st, tok_buf_reserve(&raw, 1), done);
    raw.p[0] = '\0';
    for (size_t i = 0; i < n_ids; i++)
        TRY_GOTO(st, append_piece(t, ids[i], i == 0, &raw), done);
    size_t skip = 0;
    while (skip < (size_t)t->dec_strip_space && skip < raw.n && raw.p[skip] == ' ')
        skip++;
    size_t used = 0;
    TRY_GOTO(st, utf8_lossy((const unsigned char *)raw.p + skip, raw.n - skip, 1, &out, &used),
             done);
    *out_text = out.p;
    *out_n = out.n;
    out.p = NULL;
done:
    free(raw.p);
    free(out.p);
    return st;
}

void tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t) {
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->strip_left = t->dec_strip_space;
}

void tokenizer_stream_free(tokenizer_stream *s) {
    if (!s) return;
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
}

// Runs pending + piece through the lossy decoder, keeps an incomplete tail.
static snp_status stream_emit(tokenizer_stream *s, const char *piece, size_t n, int final,
                              const char **out, size_t *out_n) {
    snp_status st = SNP_OK;
    tok_buf in = {0};
    tok_buf o = {s->buf, 0, s->cap};
    TRY_GOTO(st, tok_buf_append(&in, s->pending, (size_t)s->n_pending), done);
    TRY_GOTO(st, tok_buf_append(&in, piece, n), done);
    size_t skip = 0; // HF strips leading spaces of the whole text, i.e. of its first bytes
    while (s->strip_left > 0 && skip < in.n && in.p[skip] == ' ') {
        skip++;
        s->strip_left--;
    }
    if (skip < in.n) s->strip_left = 0;
    size_t used = 0;
    TRY_GOTO(st, utf8_lossy((const unsigned char *)in.p + skip, in.n - skip, final, &o, &used),
             done);
    s->n_pending = (int)(in.n - skip - used); // at most 3 bytes: an incomplete sequence
    memcpy(s->pending, in.p + skip + used, (size_t)s->n_pending);
    *out = o.p;
    *out_n = o.n;
done:
    s->buf = o.p;
    s->cap = o.cap;
    free(in.p);
    return st;
}

snp_status tokenizer_stream_feed(tokenizer_stream *s, int32_t id, const char **out, size_t *out_n) {
    const tokenizer *t = s->tok;
    *out = "";
    *out_n = 0;
    // Every id a stream decodes enters here: one from a sampler, a file or stdin that
    // the vocabulary lacks is refused before it indexes the piece table.
    if (id < 0 || id >= t->n_vocab)
        return snp_fail(SNP_ERR_ARGUMENT,
                        "tokenizer: token id %d is outside the vocabulary of %d tokens (ids 0 to "
                        "%d)",
                        id, t->n_vocab, t->n_vocab - 1);
    int first = s->n_fed == 0;
    s->n_fed = 1;
    if (!first || !t->dec_first_drop)
        return stream_emit(s, t->pieces.p + t->piece_off[id], t->piece_len[id], 0, out, out_n);
    tok_buf piece = {0};
    snp_status st = append_piece(t, id, 1, &piece);
    if (st == SNP_OK) st = stream_emit(s, piece.p ? piece.p : "", piece.n, 0, out, out_n);
    free(piece.p);
    return st;
}

snp_status tokenizer_stream_flush(tokenizer_stream *s, const char **out, size_t *out_n) {
    *out = "";
    *out_n = 0;
    if (!s->n_pending) return SNP_OK;
    return stream_emit(s, "", 0, 1, out, out_n);
}
