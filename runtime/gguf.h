// gguf: a reader for GGUF v2/v3 files, memory-mapped. It validates the header,
// every metadata value and every tensor info (dims, type, offset, size, alignment)
// against the file before anything is handed out; it does not interpret metadata
// (model_config and the tokenizer do that).
#ifndef SNAPTP_GGUF_H
#define SNAPTP_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "../kernels/dtype.h"
#include "status.h"

typedef struct gguf_file gguf_file;

typedef enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_value_type;

// A string inside the mapped file: not NUL-terminated.
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_tensor {
    const char *name; // NUL-terminated copy owned by the gguf_file
    int n_dims;       // 1..4
    uint64_t ne[4];   // GGML order: ne[0] is the contiguous (row) dimension; ne[n_dims..3] = 1
    dtype type;
    uint64_t offset;  // from the start of the data section (a multiple of the alignment)
    uint64_t n_bytes; // checked to lie inside the file
    const void *data; // inside the mapping; aligned to the file's alignment
} gguf_tensor;

// gguf_open: maps and validates `path`. On success *out owns the mapping; on
// failure *out is NULL and the message names the file, the key or tensor and the
// values. Unsupported tensor types (e.g. Q5_K) are reported naming the tensor and type.
snp_status gguf_open(const char *path, gguf_file **out);
void gguf_close(gguf_file *f); // NULL is a no-op

const char *gguf_path(const gguf_file *f);
uint32_t gguf_version(const gguf_file *f);

uint32_t gguf_alignment(const gguf_file *f); // general.alignment, 32 when absent

// Metadata lookup by key. gguf_find_key returns -1 when the key is absent. Key ids
// are 0..gguf_n_keys()-1 in file order; gguf_key_type gives GGUF_TYPE_COUNT and
// gguf_key_name NULL for an id out of range.
int64_t gguf_find_key(const gguf_file *f, const char *key);
gguf_value_type gguf_key_type(const gguf_file *f, int64_t key_id);
uint64_t gguf_n_keys(const gguf_file *f);
const char *gguf_key_name(const gguf_file *f, int64_t key_id); // NUL-terminated, owned by f

// gguf_type_name: "UINT32", "STRING", ... ("?" for an invalid type).
const char *gguf_type_name(gguf_value_type t);

// Typed getters: fail with SNP_ERR_FORMAT (naming the file, key, expected and actual
// type) when the key is absent or of another type. Integer getters accept any integer
// type whose value fits the result; gguf_get_f32 also takes FLOAT64 (rounded);
// gguf_get_bool refuses a byte other than 0 or 1.
snp_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
snp_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
snp_status gguf_get_f32(const gguf_file *f, const char *key, float *out);
snp_status gguf_get_bool(const gguf_file *f, const char *key, int *out);
snp_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

// Arrays: element type and count, then element access. For string arrays use
// gguf_get_arr_str (fails naming the key when i >= count); for numeric and bool
// arrays gguf_get_arr_data gives a pointer to the packed little-endian elements,
// aligned to the element size (inside the mapping, or a copy owned by f when the
// file has them misaligned), valid until gguf_close.
snp_status gguf_get_arr(const gguf_file *f, const char *key, gguf_value_type *out_type,
                        uint64_t *out_n);
snp_status gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out);
snp_status gguf_get_arr_data(const gguf_file *f, const char *key, const void **out_data);

// Tensors.
uint64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); // NULL if absent

#endif
