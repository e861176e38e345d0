// gguf_internal: the parsed GGUF file shared by gguf.c (mapping and validation) and
// gguf_meta.c (metadata lookups and typed getters). Not for use outside those two.
#ifndef SNAPTP_GGUF_INTERNAL_H
#define SNAPTP_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

enum { GGUF_MAX_DIMS = 4 };

typedef struct gguf_kv {
    char *key;
    gguf_value_type type;
    gguf_value_type arr_type; // arrays only
    uint64_t n;               // arrays: element count
    const uint8_t *data;      // scalar value or first array element (mapping or copy)
    void *copy;               // numeric arrays misaligned in the file: an aligned copy
    gguf_str str;             // STRING values
    gguf_str *strs;           // arrays of strings: n entries, so element i is O(1)
} gguf_kv;

struct gguf_file {
    char *path;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t n_kv;
    gguf_kv *kv;
    const gguf_kv **kv_sorted; // by key, for bsearch
    uint64_t n_tensors;
    gguf_tensor *tensors;
    const gguf_tensor **tensors_sorted; // by name, for bsearch
};

// gguf_value_size: bytes of a scalar value of type t (0 for STRING, ARRAY or invalid).
size_t gguf_value_size(gguf_value_type t);

#endif
