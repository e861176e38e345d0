// cpu_rows: the per-dtype row kernels of the CPU backend in exact fp32: rows of a
// weight dequantized to fp32 (the input of the BLAS panels) and fused
// dequantize-dot products (the decode matvec). The int8 variant is cpu_q8.c.
#include "cpu_backend.h"

#include <stddef.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CPU_ROWS_AVX2 1
#else
#define CPU_ROWS_AVX2 0
#endif
// The 4-bit dots with AVX-512: a nibble indexes a 16-float table in one permute.
#if CPU_ROWS_AVX2 && defined(__AVX512F__) && !defined(SNAPTP_NO_AVX512)
#define CPU_ROWS_Q4_AVX512 1
#else
#define CPU_ROWS_Q4_AVX512 0
#endif

static inline float half_to_f32(uint16_t h) {
#if CPU_ROWS_AVX2
    return _cvtsh_ss(h);
#else
    return dtype_f16_to_f32(h);
#endif
}

#if CPU_ROWS_AVX2
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 i8x8_to_ps(__m128i v) { // the low 8 int8 lanes of v
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

static inline __m256 bf16x8_to_ps(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// The 32 values of a 4-bit block as int8, in GGML order (low nibbles first),
// minus `bias` (8 for Q4_0, 0 for Q4_1).
static inline void q4_unpack(const uint8_t *qs, __m128i bias, __m128i *lo, __m128i *hi) {
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    *lo = _mm_sub_epi8(_mm_and_si128(raw, m4), bias);
    *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), bias);
}

// A vector of partial sums for the quantized dots, and sum_j q[j] * x[j] over one
// block given as two halves of 16 int8. (An AVX-512 variant, 16 lanes per convert,
// measured 10-25% slower on Zen 4, whose 512-bit sign extensions are slow; the 4-bit
// types use AVX-512 differently, see dot_q4_512.)
typedef __m256 vacc;
static inline vacc vacc_zero(void) {
    return _mm256_setzero_ps();
}
static inline vacc vacc_fma(float d, vacc s, vacc a) {
    return _mm256_fmadd_ps(_mm256_set1_ps(d), s, a);
}
static inline float vacc_sum(vacc a, vacc b) {
    return hsum8(_mm256_add_ps(a, b));
}
static inline vacc block_qx(__m128i lo, __m128i hi, const float *x) {
    __m256 s = _mm256_mul_ps(i8x8_to_ps(lo), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(i8x8_to_ps(_mm_unpackhi_epi64(lo, lo)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(i8x8_to_ps(hi), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(i8x8_to_ps(_mm_unpackhi_epi64(hi, hi)), _mm256_loadu_ps(x + 24), s);
}
#endif

static float dot_f32(const float *w, const float *x, int64_t K) {
    int64_t i = 0;
    float s = 0.0f;
#if CPU_ROWS_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= K; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= K; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < K; i++)
        s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int64_t K) {
    int64_t i = 0;
    float s = 0.0f;
#if CPU_ROWS_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; i + 16 <= K; i += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    s = hsum8(_mm256_add_ps(a0, a1));
#endif
    for (; i < K; i++)
        s += half_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, int64_t K) {
    int64_t i = 0;
    float s = 0.0f;
#if CPU_ROWS_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; i + 16 <= K; i += 16) {
        a0 = _mm256_fmadd_ps(bf16x8_to_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(bf16x8_to_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    s = hsum8(_mm256_add_ps(a0, a1));
#endif
    for (; i < K; i++)
        s += dtype_bf16_to_f32(w[i]) * x[i];
    return s;
}

// The quantized dots: two blocks per step into two accumulators, since each
// block's fma would otherwise wait on the previous block's; the odd block left
// over goes through the scalar loop.
static float dot_q8_0(const block_q8_0 *b, const float *x, int64_t nb) {
    int64_t i = 0;
    float s = 0.0f;
#if CPU_ROWS_AVX2
    vacc a0 = vacc_zero(), a1 = vacc_zero();
    for (; i + 2 <= nb; i += 2) {
        const block_q8_0 *b0 = b + i, *b1 = b + i + 1;
        __m128i l0 = _mm_loadu_si128((const __m128i *)b0->qs);
        __m128i h0 = _mm_loadu_si128((const __m128i *)(b0->qs + 16));
        __m128i l1 = _mm_loadu_si128((const __m128i *)b1->qs);
        __m128i h1 = _mm_loadu_si128((const __m128i *)(b1->qs + 16));
        a0 = vacc_fma(half_to_f32(b0->d), block_qx(l0, h0, x + i * QK_BLOCK), a0);
        a1 = vacc_fma(half_to_f32(b1->d), block_qx(l1, h1, x + (i + 1) * QK_BLOCK), a1);
    }
    s = vacc_sum(a0, a1);
#endif
    for (; i < nb; i++) {
        float bs = 0.0f;
        for (int j = 0; j < QK_BLOCK; j++)
            bs += (float)b[i].qs[j] * x[i * QK_BLOCK + j];
        s += half_to_f32(b[i].d) * bs;
    }
    return s;
}

#if CPU_ROWS_Q4_AVX512
// sum_j q_j x_j over the blocks of a 4-bit row, each scaled by its d, with q_j read
// from `lut` (the 16 values a nibble stands for): the 16 bytes of a block widen to
// 16 dwords once, and a permute turns their low (then high) nibbles into floats.
// Per 32 weights that is 1 widen, 1 shift, 2 permutes and 3 fp ops, against 2
// masks, 1 shift, 4 sign extensions and 4 int-to-float converts in AVX2: the
// converts, not memory, bound this loop. bench_cpu_ops matvec on one Zen 4 core:
// Q4_0 30 -> 39 GFLOP/s, Q4_1 28 -> 33 (its m term is a scalar per block).
// xsum (Q4_1): the per-block sums of x, times each block's m (the half after d).
// q4_512_odd_block: s plus block i of a row (the last, odd one), scalar.
static inline float q4_512_odd_block(const char *row, size_t block_bytes, size_t qs_offset,
                                     __m512 lut, const float *x, const float *xsum, int64_t i,
                                     float s) {
    const char *b = row + (size_t)i * block_bytes;
    const uint8_t *qs = (const uint8_t *)b + qs_offset;
    float lutv[16], bs = 0.0f;
    uint16_t d;
    memcpy(&d, b, 2);
    _mm512_storeu_ps(lutv, lut);
    for (int j = 0; j < QK_BLOCK / 2; j++)
        bs += lutv[qs[j] & 0x0f] * x[i * QK_BLOCK + j] +
              lutv[qs[j] >> 4] * x[i * QK_BLOCK + j + QK_BLOCK / 2];
    s += half_to_f32(d) * bs;
    if (xsum) {
        uint16_t m;
        memcpy(&m, b + 2, 2);
        s += half_to_f32(m) * xsum[i];
    }
    return s;
}

static inline float dot_q4_512(const char *row, size_t block_bytes, size_t qs_offset,
                               __m512 lut, const float *x, const float *xsum, int64_t nb) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    float ms = 0.0f;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const char *b0 = row + (size_t)i * block_bytes, *b1 = b0 + block_bytes;
        uint16_t d0, d1;
        memcpy(&d0, b0, 2);
        memcpy(&d1, b1, 2);
        __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b0 + qs_offset)));
        __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b1 + qs_offset)));
        const float *x0 = x + i * QK_BLOCK, *x1 = x0 + QK_BLOCK;
        // permutexvar reads only an index's low 4 bits: the low nibble needs no mask.
        __m512 s0 = _mm512_mul_ps(_mm512_permutexvar_ps(q0, lut), _mm512_loadu_ps(x0));
        __m512 s1 = _mm512_mul_ps(_mm512_permutexvar_ps(q1, lut), _mm512_loadu_ps(x1));
        s0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q0, 4), lut),
                             _mm512_loadu_ps(x0 + 16), s0);
        s1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q1, 4), lut),
                             _mm512_loadu_ps(x1 + 16), s1);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(half_to_f32(d0)), s0, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(half_to_f32(d1)), s1, a1);
        if (xsum) {
            uint16_t m0, m1;
            memcpy(&m0, b0 + 2, 2);
            memcpy(&m1, b1 + 2, 2);
            ms += half_to_f32(m0) * xsum[i] + half_to_f32(m1) * xsum[i + 1];
        }
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + ms;
    if (i < nb) s = q4_512_odd_block(row, block_bytes, qs_offset, lut, x, xsum, i, s);
    return s;
}
#endif

#if CPU_ROWS_Q4_AVX512
// dot_q4_512_rows: dot_q4_512 for R <= 4 rows at once (R a constant at each call,
// so the loops unroll), the same arithmetic per row in the same order (each result
// is bit-identical to the 1-row kernel): the x vectors of a block are loaded once
// for the R rows. Decode matvecs of small models have short rows (SmolLM2: 18 blocks), where
// the per-row loads and reductions, not the weights, were the cost.
static inline __attribute__((always_inline)) void dot_q4_512_rows(
    const int R, const char *const *row, size_t block_bytes, size_t qs_offset, __m512 lut,
    const float *x, const float *xsum, int64_t nb, float *out) {
    __m512 a0[4], a1[4];
    float ms[4] = {0};
    for (int k = 0; k < R; k++) a0[k] = a1[k] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const float *x0 = x + i * QK_BLOCK, *x1 = x0 + QK_BLOCK;
        const __m512 x0l = _mm512_loadu_ps(x0), x0h = _mm512_loadu_ps(x0 + 16);
        const __m512 x1l = _mm512_loadu_ps(x1), x1h = _mm512_loadu_ps(x1 + 16);
        for (int k = 0; k < R; k++) {
            const char *b0 = row[k] + (size_t)i * block_bytes, *b1 = b0 + block_bytes;
            uint16_t d0, d1;
            memcpy(&d0, b0, 2);
            memcpy(&d1, b1, 2);
            __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b0 + qs_offset)));
            __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b1 + qs_offset)));
            __m512 s0 = _mm512_mul_ps(_mm512_permutexvar_ps(q0, lut), x0l);
            __m512 s1 = _mm512_mul_ps(_mm512_permutexvar_ps(q1, lut), x1l);
            s0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q0, 4), lut), x0h, s0);
            s1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q1, 4), lut), x1h, s1);
            a0[k] = _mm512_fmadd_ps(_mm512_set1_ps(half_to_f32(d0)), s0, a0[k]);
            a1[k] = _mm512_fmadd_ps(_mm512_set1_ps(half_to_f32(d1)), s1, a1[k]);
            if (xsum) {
                uint16_t m0, m1;
                memcpy(&m0, b0 + 2, 2);
                memcpy(&m1, b1 + 2, 2);
                ms[k] += half_to_f32(m0) * xsum[i] + half_to_f32(m1) * xsum[i + 1];
            }
        }
    }
    for (int k = 0; k < R; k++) {
        out[k] = _mm512_reduce_add_ps(_mm512_add_ps(a0[k], a1[k])) + ms[k];
        if (i < nb) out[k] = q4_512_odd_block(row[k], block_bytes, qs_offset, lut, x, xsum, i, out[k]);
    }
}
#endif

#if CPU_ROWS_Q4_AVX512
// dot_q4_512_tile: dot_q4_512 for R rows against NT token vectors (a decode batch),
// each (row, token) result bit-identical to the 1-row, 1-token kernel: the same
// products and sums in the same order. What is shared is the weights' decoding (the
// widen and the two lookups of a block), done once per row for all NT tokens; at
// 16 tokens that halves the ops per weight against calling the 1-token kernel.
static inline __attribute__((always_inline)) void dot_q4_512_tile(
    const int R, const int NT, const char *const *row, size_t block_bytes, size_t qs_offset,
    __m512 lut, const float *const *x, const float *const *xsum, int64_t nb, float *out,
    int64_t ldo) {
    __m512 a0[2][4], a1[2][4];
    float ms[2][4] = {{0}};
    for (int k = 0; k < R; k++)
        for (int n = 0; n < NT; n++) a0[k][n] = a1[k][n] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        __m512 wl0[2], wh0[2], wl1[2], wh1[2], d0v[2], d1v[2];
        float m0f[2] = {0}, m1f[2] = {0};
        for (int k = 0; k < R; k++) {
            const char *b0 = row[k] + (size_t)i * block_bytes, *b1 = b0 + block_bytes;
            uint16_t d0, d1;
            memcpy(&d0, b0, 2);
            memcpy(&d1, b1, 2);
            __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b0 + qs_offset)));
            __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b1 + qs_offset)));
            wl0[k] = _mm512_permutexvar_ps(q0, lut);
            wh0[k] = _mm512_permutexvar_ps(_mm512_srli_epi32(q0, 4), lut);
            wl1[k] = _mm512_permutexvar_ps(q1, lut);
            wh1[k] = _mm512_permutexvar_ps(_mm512_srli_epi32(q1, 4), lut);
            d0v[k] = _mm512_set1_ps(half_to_f32(d0));
            d1v[k] = _mm512_set1_ps(half_to_f32(d1));
            if (xsum) {
                uint16_t m0, m1;
                memcpy(&m0, b0 + 2, 2);
                memcpy(&m1, b1 + 2, 2);
                m0f[k] = half_to_f32(m0);
                m1f[k] = half_to_f32(m1);
            }
        }
        for (int n = 0; n < NT; n++) {
            const float *x0 = x[n] + i * QK_BLOCK, *x1 = x0 + QK_BLOCK;
            const __m512 x0l = _mm512_loadu_ps(x0), x0h = _mm512_loadu_ps(x0 + 16);
            const __m512 x1l = _mm512_loadu_ps(x1), x1h = _mm512_loadu_ps(x1 + 16);
            for (int k = 0; k < R; k++) {
                __m512 s0 = _mm512_mul_ps(wl0[k], x0l), s1 = _mm512_mul_ps(wl1[k], x1l);
                s0 = _mm512_fmadd_ps(wh0[k], x0h, s0);
                s1 = _mm512_fmadd_ps(wh1[k], x1h, s1);
                a0[k][n] = _mm512_fmadd_ps(d0v[k], s0, a0[k][n]);
                a1[k][n] = _mm512_fmadd_ps(d1v[k], s1, a1[k][n]);
                if (xsum) ms[k][n] += m0f[k] * xsum[n][i] + m1f[k] * xsum[n][i + 1];
            }
        }
    }
    for (int k = 0; k < R; k++)
        for (int n = 0; n < NT; n++) {
            float v = _mm512_reduce_add_ps(_mm512_add_ps(a0[k][n], a1[k][n])) + ms[k][n];
            if (i < nb)
                v = q4_512_odd_block(row[k], block_bytes, qs_offset, lut, x[n],
                                     xsum ? xsum[n] : NULL, i, v);
            out[(int64_t)n * ldo + k] = v;
        }
}
#endif

static float dot_q4_0(const block_q4_0 *b, const float *x, int64_t nb) {
    int64_t i = 0;
    float s = 0.0f;
#if CPU_ROWS_Q4_AVX512
    const __m512 lut = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    return dot_q4_512((const char *)b, sizeof *b, offsetof(block_q4_0, qs), lut, x, NULL, nb);
#elif CPU_ROWS_AVX2
    const __m128i e8 = _mm_set1_epi8(8);
    vacc a0 = vacc_zero(), a1 = vacc_zero();
    for (; i + 2 <= nb; i += 2) {
        __m128i l0, h0, l1, h1;
        q4_unpack(b[i].qs, e8, &l0, &h0);
        q4_unpack(b[i + 1].qs, e8, &l1, &h1);
        a0 = vacc_fma(half_to_f32(b[i].d), block_qx(l0, h0, x + i * QK_BLOCK), a0);
        a1 = vacc_fma(half_to_f32(b[i + 1].d), block_qx(l1, h1, x + (i + 1) * QK_BLOCK), a1);
    }
    s = vacc_sum(a0, a1);
#endif
    for (; i < nb; i++) {
        float bs = 0.0f;
        for (int j = 0; j < QK_BLOCK / 2; j++) {
            bs += (float)((b[i].qs[j] & 0x0f) - 8) * x[i * QK_BLOCK + j];
            bs += (float)((b[i].qs[j] >> 4) - 8) * x[i * QK_BLOCK + j + QK_BLOCK / 2];
        }
        s += half_to_f32(b[i].d) * bs;
    }
    return s;
}

// Q4_1: sum_j (d q_j + m) x_j = d * sum_j q_j x_j + m * xsum, xsum shared by all rows.
static float dot_q4_1(const block_q4_1 *b, const float *x, const float *xsum, int64_t nb) {
    int64_t i = 0;
    float s = 0.0f, ms = 0.0f;
#if CPU_ROWS_Q4_AVX512
    const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return dot_q4_512((const char *)b, sizeof *b, offsetof(block_q4_1, qs), lut, x, xsum, nb);
#elif CPU_ROWS_AVX2
    const __m128i zero = _mm_setzero_si128();
    vacc a0 = vacc_zero(), a1 = vacc_zero();
    for (; i + 2 <= nb; i += 2) {
        __m128i l0, h0, l1, h1;
        q4_unpack(b[i].qs, zero, &l0, &h0);
        q4_unpack(b[i + 1].qs, zero, &l1, &h1);
        a0 = vacc_fma(half_to_f32(b[i].d), block_qx(l0, h0, x + i * QK_BLOCK), a0);
        a1 = vacc_fma(half_to_f32(b[i + 1].d), block_qx(l1, h1, x + (i + 1) * QK_BLOCK), a1);
        ms += half_to_f32(b[i].m) * xsum[i] + half_to_f32(b[i + 1].m) * xsum[i + 1];
    }
    s = vacc_sum(a0, a1);
#endif
    for (; i < nb; i++) {
        float bs = 0.0f;
        for (int j = 0; j < QK_BLOCK / 2; j++) {
            bs += (float)(b[i].qs[j] & 0x0f) * x[i * QK_BLOCK + j];
            bs += (float)(b[i].qs[j] >> 4) * x[i * QK_BLOCK + j + QK_BLOCK / 2];
        }
        s += half_to_f32(b[i].d) * bs;
        ms += half_to_f32(b[i].m) * xsum[i];
    }
    return s + ms;
}

void cpu_block_sums(const float *x, int64_t K, float *out) {
    for (int64_t b = 0; b < K / QK_BLOCK; b++) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < QK_BLOCK; j++)
            s += x[b * QK_BLOCK + j];
        out[b] = s;
    }
}

void cpu_rows_dot(const bk_weight *w, const float *x, const float *xsum, int64_t r0, int64_t r1,
                  float *y) {
    const char *base = w->data;
    int64_t K = w->cols, nb = K / QK_BLOCK;
    int64_t r = r0;
#if CPU_ROWS_Q4_AVX512
    if (w->type == DTYPE_Q4_0 || w->type == DTYPE_Q4_1) {
        const int q41 = w->type == DTYPE_Q4_1;
        const __m512 lut = q41 ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                               : _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
        const size_t bb = q41 ? sizeof(block_q4_1) : sizeof(block_q4_0);
        const size_t qo = q41 ? offsetof(block_q4_1, qs) : offsetof(block_q4_0, qs);
        // 4 rows at a time: 8 rows measured 25% slower than 4 (38.7 against 51.9
        // decode tokens/s on SmolLM2, 1 thread, Xeon); 4 against 1 row: +28%.
        for (; r + 4 <= r1; r += 4) {
            const char *rows[4];
            for (int k = 0; k < 4; k++) rows[k] = base + (size_t)(r + k) * w->row_bytes;
            dot_q4_512_rows(4, rows, bb, qo, lut, x, q41 ? xsum : NULL, nb, y + (r - r0));
        }
    }
#endif
    for (; r < r1; r++) {
        const void *row = base + (size_t)r * w->row_bytes;
        float v = 0.0f;
        switch (w->type) {
        case DTYPE_F32:
            v = dot_f32(row, x, K);
            break;
        case DTYPE_F16:
            v = dot_f16(row, x, K);
            break;
        case DTYPE_BF16:
            v = dot_bf16(row, x, K);
            break;
        case DTYPE_Q8_0:
            v = dot_q8_0(row, x, nb);
            break;
        case DTYPE_Q4_0:
            v = dot_q4_0(row, x, nb);
            break;
        case DTYPE_Q4_1:
            v = dot_q4_1(row, x, xsum, nb);
            break;
        case DTYPE_COUNT:
            break;
        }
        y[r - r0] = v;
    }
}

void cpu_rows_dot_tokens(const bk_weight *w, const float *x, const float *xsum, int T,
                         int64_t r0, int64_t r1, float *y, int64_t ldy) {
    const int64_t K = w->cols, nb = K / QK_BLOCK;
    int t = 0;
#if CPU_ROWS_Q4_AVX512
    if (w->type == DTYPE_Q4_0 || w->type == DTYPE_Q4_1) {
        const int q41 = w->type == DTYPE_Q4_1;
        const __m512 lut = q41 ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                               : _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
        const size_t bb = q41 ? sizeof(block_q4_1) : sizeof(block_q4_0);
        const size_t qo = q41 ? offsetof(block_q4_1, qs) : offsetof(block_q4_0, qs);
        // Tiles of 2 rows x 4 tokens: 16 accumulators and 8 decoded weight vectors
        // stay in the 32 registers.
        for (; t + 4 <= T; t += 4) {
            const float *xs[4], *ss[4];
            for (int n = 0; n < 4; n++) {
                xs[n] = x + (int64_t)(t + n) * K;
                ss[n] = q41 ? xsum + (int64_t)(t + n) * nb : NULL;
            }
            int64_t r = r0;
            for (; r + 2 <= r1; r += 2) {
                const char *rows[2] = {(const char *)w->data + (size_t)r * w->row_bytes,
                                       (const char *)w->data + (size_t)(r + 1) * w->row_bytes};
                dot_q4_512_tile(2, 4, rows, bb, qo, lut, xs, q41 ? ss : NULL, nb,
                                y + (int64_t)t * ldy + (r - r0), ldy);
            }
            if (r < r1) {
                const char *rows[1] = {(const char *)w->data + (size_t)r * w->row_bytes};
                dot_q4_512_tile(1, 4, rows, bb, qo, lut, xs, q41 ? ss : NULL, nb,
                                y + (int64_t)t * ldy + (r - r0), ldy);
            }
        }
    }
#endif
    for (; t < T; t++)
        cpu_rows_dot(w, x + (int64_t)t * K, xsum ? xsum + (int64_t)t * nb : NULL, r0, r1,
                     y + (int64_t)t * ldy);
}

static void row_to_f32(dtype t, const void *src, float *dst, int64_t K) {
#if CPU_ROWS_AVX2
    int64_t nb = K / QK_BLOCK;
    switch (t) {
    case DTYPE_F16: {
        const uint16_t *s = src;
        int64_t i = 0;
        for (; i + 8 <= K; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        for (; i < K; i++)
            dst[i] = half_to_f32(s[i]);
        return;
    }
    case DTYPE_BF16: {
        const uint16_t *s = src;
        int64_t i = 0;
        for (; i + 8 <= K; i += 8)
            _mm256_storeu_ps(dst + i, bf16x8_to_ps(s + i));
        for (; i < K; i++)
            dst[i] = dtype_bf16_to_f32(s[i]);
        return;
    }
    case DTYPE_Q8_0: {
        const block_q8_0 *b = src;
        for (int64_t i = 0; i < nb; i++) {
            __m256 d = _mm256_set1_ps(half_to_f32(b[i].d));
            for (int j = 0; j < QK_BLOCK; j += 8) {
                __m128i q = _mm_loadl_epi64((const __m128i *)(b[i].qs + j));
                _mm256_storeu_ps(dst + i * 32 + j, _mm256_mul_ps(d, i8x8_to_ps(q)));
            }
        }
        return;
    }
    case DTYPE_Q4_0:
    case DTYPE_Q4_1: {
        const int q40 = t == DTYPE_Q4_0;
        const __m128i bias = _mm_set1_epi8(q40 ? 8 : 0);
        size_t bbytes = dtype_block_bytes(t);
        for (int64_t i = 0; i < nb; i++) {
            const char *blk = (const char *)src + (size_t)i * bbytes;
            uint16_t dh, mh = 0;
            memcpy(&dh, blk, 2);
            if (!q40) memcpy(&mh, blk + 2, 2);
            const uint8_t *qs = (const uint8_t *)blk + (q40 ? 2 : 4);
            __m256 d = _mm256_set1_ps(half_to_f32(dh)), m = _mm256_set1_ps(half_to_f32(mh));
            __m128i lo, hi;
            q4_unpack(qs, bias, &lo, &hi);
            __m256 f[4] = {i8x8_to_ps(lo), i8x8_to_ps(_mm_unpackhi_epi64(lo, lo)), i8x8_to_ps(hi),
                           i8x8_to_ps(_mm_unpackhi_epi64(hi, hi))};
            float *o = dst + i * 32;
            for (int j = 0; j < 4; j++) // Q4_0 multiplies only: d * 0 keeps its sign, as in dtype.c
                _mm256_storeu_ps(o + 8 * j,
                                 q40 ? _mm256_mul_ps(d, f[j]) : _mm256_fmadd_ps(d, f[j], m));
        }
        return;
    }
    case DTYPE_F32:
    case DTYPE_COUNT:
        break;
    }
#endif
    dtype_to_f32(t, src, dst, (size_t)K);
}

void cpu_rows_to_f32(const bk_weight *w, int64_t r0, int64_t n_rows, float *dst) {
    const char *base = w->data;
    for (int64_t r = 0; r < n_rows; r++)
        row_to_f32(w->type, base + (size_t)(r0 + r) * w->row_bytes, dst + r * w->cols, w->cols);
}
