// stop_text: OpenAI's `stop` strings over streamed text. Generated text arrives in
// pieces; a stop string may straddle two of them, so the longest tail that could
// still begin a stop string is held back until the next piece decides it. The text
// before the first stop string is released; the stop string and all after it never
// are (as vLLM and OpenAI do).
#ifndef SNAPTP_STOP_TEXT_H
#define SNAPTP_STOP_TEXT_H

#include <stddef.h>

#include "../runtime/status.h"

typedef struct stop_text {
    char *const *stops; // borrowed, non-empty strings
    int n_stops;
    char *held;         // text received but not yet released
    size_t n_held, cap;
    int stopped;        // a stop string was seen: nothing more is released
} stop_text;

void stop_text_init(stop_text *s, char *const *stops, int n_stops);
void stop_text_free(stop_text *s);

// stop_text_feed: takes piece[0..n); *out / *out_n: what may be released now (valid
// until the next call). Sets s->stopped when a stop string completed.
snp_status stop_text_feed(stop_text *s, const char *piece, size_t n, const char **out,
                          size_t *out_n);

// stop_text_flush: the end of the text: releases what was held (unless stopped).
void stop_text_flush(stop_text *s, const char **out, size_t *out_n);

#endif
