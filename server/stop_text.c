// stop_text: stop strings with a held-back tail.
#include "stop_text.h"

#include <stdlib.h>
#include <string.h>

void stop_text_init(stop_text *s, char *const *stops, int n_stops) {
    memset(s, 0, sizeof *s);
    s->stops = stops;
    s->n_stops = n_stops;
}

void stop_text_free(stop_text *s) {
    free(s->held);
    memset(s, 0, sizeof *s);
}

// partial_tail: the length of the longest tail of t[0..n) that is a proper prefix of
// some stop string (a stop string that may still complete).
static size_t partial_tail(const stop_text *s, const char *t, size_t n) {
    size_t best = 0;
    for (int i = 0; i < s->n_stops; i++) {
        const size_t len = strlen(s->stops[i]);
        for (size_t k = len - 1 < n ? len - 1 : n; k > best; k--)
            if (memcmp(t + n - k, s->stops[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

// The released bytes are moved to the front of `held` past the kept tail, so *out
// stays valid until the next call: the buffer keeps [released | tail] laid out as
// released first.
snp_status stop_text_feed(stop_text *s, const char *piece, size_t n, const char **out,
                          size_t *out_n) {
    *out = "";
    *out_n = 0;
    if (s->stopped) return SNP_OK;
    if (s->n_stops == 0) { // nothing to watch for: pass through
        *out = piece;
        *out_n = n;
        return SNP_OK;
    }
    // Room for the held tail, the piece, and a copy of the released text after them.
    const size_t need = 2 * (s->n_held + n) + 1;
    if (need > s->cap) {
        char *h = realloc(s->held, need);
        if (!h) return snp_fail(SNP_ERR_MEMORY, "out of memory for stop strings");
        s->held = h;
        s->cap = need;
    }
    memcpy(s->held + s->n_held, piece, n);
    const size_t total = s->n_held + n;
    size_t cut = total; // earliest start of a complete stop string
    for (int i = 0; i < s->n_stops; i++) {
        const size_t len = strlen(s->stops[i]);
        for (size_t p = 0; p + len <= total && p < cut; p++)
            if (memcmp(s->held + p, s->stops[i], len) == 0) {
                cut = p;
                break;
            }
    }
    char *release = s->held + total; // the copy area
    if (cut < total) {
        s->stopped = 1;
        memcpy(release, s->held, cut);
        *out = release;
        *out_n = cut;
        s->n_held = 0;
        return SNP_OK;
    }
    const size_t keep = partial_tail(s, s->held, total);
    memcpy(release, s->held, total - keep);
    *out = release;
    *out_n = total - keep;
    memmove(s->held, s->held + total - keep, keep);
    // The released copy sits after the old end; keep it intact by not touching the
    // copy area until the next call (which rebuilds the layout).
    s->n_held = keep;
    return SNP_OK;
}

void stop_text_flush(stop_text *s, const char **out, size_t *out_n) {
    *out = s->held ? s->held : "";
    *out_n = s->stopped ? 0 : s->n_held;
    s->n_held = 0;
}
