// fuzz_gguf: the GGUF reader (runtime/gguf.c) on arbitrary bytes, then what reads
// its metadata: every key through the typed getters, the model config and the
// vocabulary (model_config_from_gguf, tokenizer_load_gguf), and every tensor's data
// range touched, so a range the reader wrongly accepted is caught by ASan.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f = NULL;
    if (gguf_open(fuzz_file("model.gguf", data, size), &f) != SNP_OK) return 0;
    volatile uint64_t sink = gguf_version(f) + gguf_alignment(f);
    for (uint64_t k = 0; k < gguf_n_keys(f); k++) {
        const char *name = gguf_key_name(f, (int64_t)k);
        uint32_t u32;
        int64_t i64;
        float f32;
        int b;
        gguf_str s;
        gguf_value_type type;
        uint64_t n = 0;
        const void *arr = NULL;
        if (gguf_get_u32(f, name, &u32) == SNP_OK) sink += u32;
        if (gguf_get_i64(f, name, &i64) == SNP_OK) sink += (uint64_t)i64;
        if (gguf_get_f32(f, name, &f32) == SNP_OK) sink += f32 == f32;
        if (gguf_get_bool(f, name, &b) == SNP_OK) sink += (uint64_t)b;
        if (gguf_get_str(f, name, &s) == SNP_OK && s.len) sink += (uint8_t)s.ptr[s.len - 1];
        if (gguf_get_arr(f, name, &type, &n) == SNP_OK) {
            if (type == GGUF_TYPE_STRING) {
                // First and last: both ends of the array must lie in the file.
                if (n && gguf_get_arr_str(f, name, n - 1, &s) == SNP_OK && s.len)
                    sink += (uint8_t)s.ptr[s.len - 1];
                if (gguf_get_arr_str(f, name, 0, &s) == SNP_OK && s.len) sink += (uint8_t)s.ptr[0];
            } else if (n && gguf_get_arr_data(f, name, &arr) == SNP_OK) {
                sink += ((const uint8_t *)arr)[0];
            }
        }
        if (gguf_find_key(f, name) < 0) __builtin_trap(); // a listed key must be found
    }
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->n_bytes) {
            const uint8_t *p = t->data;
            sink += p[0] + p[t->n_bytes - 1];
        }
        if (gguf_find_tensor(f, t->name) == NULL) __builtin_trap();
    }
    model_config cfg;
    if (model_config_from_gguf(f, &cfg) == SNP_OK) (void)model_config_validate(&cfg, "fuzz");
    tokenizer *tok = NULL;
    if (tokenizer_load_gguf(f, &tok) == SNP_OK) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        static const char text[] = "Hello world, <|im_start|>user\n123 \xc3\xa9t\xc3\xa9!";
        if (tokenizer_encode(tok, text, sizeof text - 1, -1, &ids, &n_ids) == SNP_OK) {
            char *back = NULL;
            size_t n_back = 0;
            if (tokenizer_decode(tok, ids, n_ids, &back, &n_back) == SNP_OK) free(back);
            free(ids);
        }
        tokenizer_free(tok);
    }
    (void)sink;
    gguf_close(f);
    return 0;
}
