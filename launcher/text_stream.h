// text_stream: the generated text of a request, decoded token by token (UTF-8
// safe), printed as it comes when asked, and kept whole for --json reports.
#ifndef SNAPTP_TEXT_STREAM_H
#define SNAPTP_TEXT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/tokenizer.h"

typedef struct text_stream {
    tokenizer_stream ts;
    int print;       // write to stdout as tokens arrive
    snp_status st;   // first failure inside the token callback
    char *text;      // everything so far, NUL-terminated (NULL before any byte)
    size_t n, cap;
} text_stream;

void text_stream_init(text_stream *s, const tokenizer *t, int print);

// text_stream_token: an engine_token_fn (user = text_stream*); non-zero stops the
// request after a failure, kept in s->st.
int text_stream_token(void *user, int32_t token);

// text_stream_finish: flushes an incomplete character at the end.
snp_status text_stream_finish(text_stream *s);

void text_stream_free(text_stream *s);

#endif
