// fuzz_safetensors: the safetensors reader (runtime/safetensors.c: the 8-byte length,
// the JSON header, dtypes, shapes and byte ranges) on arbitrary bytes as a single
// model.safetensors, touching both ends of every tensor it accepts.
#include <stdint.h>

#include "fuzz_support.h"
#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_model *m = NULL;
    if (st_open(fuzz_file("model.safetensors", data, size), &m) != SNP_OK) return 0;
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < st_n_tensors(m); i++) {
        const st_tensor *t = st_tensor_at(m, i);
        if (t->n_bytes) {
            const uint8_t *p = t->data;
            sink += p[0] + p[t->n_bytes - 1];
        }
        if (st_find_tensor(m, t->name) == NULL) __builtin_trap(); // listed means findable
    }
    const char *v = st_metadata(m, "format");
    if (v) sink += (uint8_t)v[0];
    (void)sink;
    st_close(m);
    return 0;
}
