// dtype: sizes of the weight formats and their reference conversion to fp32.
#include "dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t block_elems;
    size_t block_bytes;
} dtype_info[] = {
    [DTYPE_F32] = {"F32", 1, 4},
    [DTYPE_F16] = {"F16", 1, 2},
    [DTYPE_BF16] = {"BF16", 1, 2},
    [DTYPE_Q8_0] = {"Q8_0", QK_BLOCK, sizeof(block_q8_0)},
    [DTYPE_Q4_0] = {"Q4_0", QK_BLOCK, sizeof(block_q4_0)},
    [DTYPE_Q4_1] = {"Q4_1", QK_BLOCK, sizeof(block_q4_1)},
};
_Static_assert(sizeof dtype_info / sizeof dtype_info[0] == DTYPE_COUNT, "one entry per dtype");

const char *dtype_name(dtype t) { return (unsigned)t < DTYPE_COUNT ? dtype_info[t].name : "?"; }
size_t dtype_block_elems(dtype t) { return dtype_info[t].block_elems; }
size_t dtype_block_bytes(dtype t) { return dtype_info[t].block_bytes; }

snp_status dtype_row_bytes(dtype t, uint64_t n, const char *what, uint64_t *out_n_bytes) {
    uint64_t be = dtype_info[t].block_elems;
    if (n % be != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: %llu elements per row is not a multiple of the %s block size %llu",
                        what, (unsigned long long)n, dtype_info[t].name, (unsigned long long)be);
    uint64_t blocks = n / be;
    if (blocks > UINT64_MAX / dtype_info[t].block_bytes)
        return snp_fail(SNP_ERR_FORMAT, "%s: row of %llu elements overflows", what,
                        (unsigned long long)n);
    *out_n_bytes = blocks * dtype_info[t].block_bytes;
    return SNP_OK;
}

float dtype_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { // subnormal: value = mant * 2^-24
            float f = (float)mant * 0x1p-24f;
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float dtype_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t dtype_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

uint16_t dtype_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t sign = (bits >> 16) & 0x8000u;
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // rounds to >= 65520: inf
    if (abs < 0x38800000u) {                                   // below 2^-14: subnormal
        float a;
        memcpy(&a, &abs, sizeof a);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 0x1p24f));
    }
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return (uint16_t)(sign | ((rounded - 0x38000000u) >> 13));
}

void dtype_to_f32(dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = dtype_f16_to_f32(s[i]);
        break;
    }
    case DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = dtype_bf16_to_f32(s[i]);
        break;
    }
    case DTYPE_Q8_0: {
        const block_q8_0 *b = src;
        for (size_t i = 0; i < n / QK_BLOCK; i++) {
            float d = dtype_f16_to_f32(b[i].d);
            for (int j = 0; j < QK_BLOCK; j++) dst[i * QK_BLOCK + j] = d * (float)b[i].qs[j];
        }
        break;
    }
    case DTYPE_Q4_0: {
        // GGML order: low nibbles are elements 0..15, high nibbles 16..31.
        const block_q4_0 *b = src;
        for (size_t i = 0; i < n / QK_BLOCK; i++) {
            float d = dtype_f16_to_f32(b[i].d);
            for (int j = 0; j < QK_BLOCK / 2; j++) {
                dst[i * QK_BLOCK + j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
                dst[i * QK_BLOCK + j + QK_BLOCK / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case DTYPE_Q4_1: {
        const block_q4_1 *b = src;
        for (size_t i = 0; i < n / QK_BLOCK; i++) {
            float d = dtype_f16_to_f32(b[i].d);
            float m = dtype_f16_to_f32(b[i].m);
            for (int j = 0; j < QK_BLOCK / 2; j++) {
                dst[i * QK_BLOCK + j] = d * (float)(b[i].qs[j] & 0x0f) + m;
                dst[i * QK_BLOCK + j + QK_BLOCK / 2] = d * (float)(b[i].qs[j] >> 4) + m;
            }
        }
        break;
    }
    case DTYPE_COUNT:
        break;
    }
}
