// fuzz_tokenizer_json: tokenizer.json loading (runtime/tokenizer_json.c: the model,
// vocabulary, merges, added tokens, pre-tokenizer and normalizer sections) on
// arbitrary bytes; a tokenizer it accepts then encodes and decodes a fixed text
// with special tokens, bytes and multi-byte characters.
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_support.h"
#include "runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tokenizer *t = NULL;
    if (tokenizer_load_json(fuzz_file("tokenizer.json", data, size), &t) != SNP_OK) return 0;
    static const char text[] =
        "Hello world, <|im_start|>user\n  12345 \xc3\xa9t\xc3\xa9 \xe2\x96\x81x!";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (tokenizer_encode(t, text, sizeof text - 1, -1, &ids, &n_ids) == SNP_OK) {
        char *back = NULL;
        size_t n_back = 0;
        if (tokenizer_decode(t, ids, n_ids, &back, &n_back) == SNP_OK) free(back);
        free(ids);
    }
    if (tokenizer_encode_plain(t, text, sizeof text - 1, &ids, &n_ids) == SNP_OK) free(ids);
    // Every id's piece, and the stream decoder fed the first ids of the vocabulary
    // (byte tokens among them, so characters split over tokens are reassembled).
    tokenizer_stream s;
    tokenizer_stream_init(&s, t);
    const int32_t n_vocab = tokenizer_n_vocab(t);
    const char *out;
    size_t n_out;
    for (int32_t id = 0; id < n_vocab && id < 4096; id++) {
        size_t n = 0;
        (void)tokenizer_piece(t, id, &n);
        if (tokenizer_stream_feed(&s, id, &out, &n_out) != SNP_OK) break;
    }
    (void)tokenizer_stream_flush(&s, &out, &n_out);
    tokenizer_stream_free(&s);
    tokenizer_free(t);
    return 0;
}
