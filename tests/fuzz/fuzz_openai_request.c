// fuzz_openai_request: the request body of snaptp serve's completion endpoints on
// arbitrary bytes (api_request_parse; the first byte picks completions or chat), and
// for a body that parses, its stop strings run over its own prompt text cut into
// pieces of 1 to 8 bytes (stop_text, which holds back a partial stop string).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai_request.h"
#include "server/stop_text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const api_kind kind = (data[0] & 1) ? API_CHAT : API_COMPLETIONS;
    api_request r;
    api_error err;
    if (api_request_parse((const char *)data + 1, size - 1, kind, &r, &err) == SNP_OK && r.n_stop) {
        const char *text = r.prompt ? r.prompt : r.user ? r.user : "";
        const size_t n = strlen(text);
        stop_text st;
        stop_text_init(&st, r.stop, r.n_stop);
        size_t released = 0;
        for (size_t at = 0, step = 1; at < n; at += step, step = step % 8 + 1) {
            const char *out;
            size_t m;
            const size_t k = n - at < step ? n - at : step;
            if (stop_text_feed(&st, text + at, k, &out, &m) != SNP_OK) break;
            // What is released is always a prefix of the text, in order.
            if (released + m > n || memcmp(out, text + released, m) != 0) abort();
            released += m;
        }
        const char *out;
        size_t m;
        stop_text_flush(&st, &out, &m);
        if (released + m > n || memcmp(out, text + released, m) != 0) abort();
        stop_text_free(&st);
    }
    api_request_free(&r);
    return 0;
}
