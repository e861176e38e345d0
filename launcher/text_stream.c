// text_stream: streamed and accumulated output text of generate and qa.
#include "text_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void text_stream_init(text_stream *s, const tokenizer *t, int print) {
    memset(s, 0, sizeof *s);
    s->print = print;
    tokenizer_stream_init(&s->ts, t);
}

static snp_status append(text_stream *s, const char *p, size_t n) {
    if (s->print) {
        fwrite(p, 1, n, stdout);
        fflush(stdout);
    }
    if (s->n + n + 1 > s->cap) {
        size_t cap = (s->cap + n + 1) * 2;
        char *t = realloc(s->text, cap);
        if (!t) return snp_fail(SNP_ERR_MEMORY, "out of memory for the generated text");
        s->text = t;
        s->cap = cap;
    }
    memcpy(s->text + s->n, p, n);
    s->n += n;
    s->text[s->n] = '\0';
    return SNP_OK;
}

int text_stream_token(void *user, int32_t token) {
    text_stream *s = user;
    const char *p;
    size_t n;
    s->st = tokenizer_stream_feed(&s->ts, token, &p, &n);
    if (s->st == SNP_OK) s->st = append(s, p, n);
    return s->st != SNP_OK;
}

snp_status text_stream_finish(text_stream *s) {
    const char *p;
    size_t n;
    TRY(tokenizer_stream_flush(&s->ts, &p, &n));
    return append(s, p, n);
}

void text_stream_free(text_stream *s) {
    if (s->ts.tok) tokenizer_stream_free(&s->ts);
    free(s->text);
    memset(s, 0, sizeof *s);
}
