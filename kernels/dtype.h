// dtype: the element and block formats weights arrive in (GGUF and safetensors),
// their sizes, and the reference conversion of a row to fp32. Part of the backend
// interface: loaders describe weights with it, backends convert from it.
#ifndef SNAPTP_DTYPE_H
#define SNAPTP_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dtype {
    DTYPE_F32,
    DTYPE_F16,
    DTYPE_BF16,
    DTYPE_Q8_0, // blocks of 32: f16 scale d, 32 x int8;          x = d * q
    DTYPE_Q4_0, // blocks of 32: f16 scale d, 16 bytes of nibbles; x = d * (q - 8)
    DTYPE_Q4_1, // blocks of 32: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m
    DTYPE_COUNT
} dtype;

// Quantized block layouts, byte-compatible with GGML's.
enum { QK_BLOCK = 32 };
typedef struct block_q8_0 { uint16_t d; int8_t qs[QK_BLOCK]; } block_q8_0;
typedef struct block_q4_0 { uint16_t d; uint8_t qs[QK_BLOCK / 2]; } block_q4_0;
typedef struct block_q4_1 { uint16_t d; uint16_t m; uint8_t qs[QK_BLOCK / 2]; } block_q4_1;
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block is 20 bytes");

const char *dtype_name(dtype t);

// dtype_block_elems: elements per block (1 for plain floats, 32 for Q*).
size_t dtype_block_elems(dtype t);

// dtype_block_bytes: bytes per block (element size for plain floats).
size_t dtype_block_bytes(dtype t);

// dtype_row_bytes: bytes of a row of n elements; fails (naming `what`) when n is
// not a multiple of the block size or the size overflows.
snp_status dtype_row_bytes(dtype t, uint64_t n, const char *what, uint64_t *out_n_bytes);

// dtype_to_f32: converts n elements (n a multiple of the block size) starting at
// src to fp32. The reference every backend's conversion is tested against.
void dtype_to_f32(dtype t, const void *src, float *dst, size_t n);

float dtype_f16_to_f32(uint16_t h);
float dtype_bf16_to_f32(uint16_t h);
uint16_t dtype_f32_to_f16(float f);
uint16_t dtype_f32_to_bf16(float f); // round to nearest even; NaN stays NaN

#ifdef __cplusplus
}
#endif

#endif
