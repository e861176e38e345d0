// safetensors: a reader for Hugging Face safetensors files, single or sharded
// (model.safetensors.index.json), memory-mapped. The JSON header is parsed with
// cJSON and every tensor's dtype, shape and byte range is checked against the file.
#ifndef SNAPTP_SAFETENSORS_H
#define SNAPTP_SAFETENSORS_H

#include <stdint.h>

#include "../kernels/dtype.h"
#include "status.h"

typedef struct st_model st_model;

typedef struct st_tensor {
    const char *name;  // owned by the st_model
    const char *file;  // path of the shard that holds it
    int n_dims;        // 0..4 (0: a scalar)
    uint64_t shape[4]; // safetensors (row-major, PyTorch) order: shape[n_dims-1] contiguous;
                       // shape[n_dims..3] = 1
    dtype type;        // F32, F16 or BF16
    uint64_t n_bytes;  // = product of shape x element size
    const void *data;  // inside the mapping, aligned to the element size
} st_tensor;

// st_open: opens a model directory (model.safetensors.index.json and the shards it
// lists, else model.safetensors), an index .json file, or a single .safetensors file.
// A header over 100 MB, malformed JSON, an unknown dtype, a byte range outside the
// file, overlapping or disagreeing with the shape, a shard the index names that is
// missing or lacks a listed tensor, a name in two shards: each fails naming the file
// and tensor. On failure *out is NULL. Tensors are kept in header order, shard by shard.
snp_status st_open(const char *path, st_model **out);
void st_close(st_model *m); // NULL is a no-op

uint64_t st_n_tensors(const st_model *m);
const st_tensor *st_tensor_at(const st_model *m, uint64_t i);
const st_tensor *st_find_tensor(const st_model *m, const char *name); // NULL if absent

// st_metadata: the string `key` of the first shard's __metadata__ (safetensors
// metadata is a string-to-string map; st_open refuses other values), NULL if absent.
const char *st_metadata(const st_model *m, const char *key);

#endif
