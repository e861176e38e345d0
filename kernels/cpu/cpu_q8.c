// cpu_q8: the opt-in int8 decode path for quantized weights (llama.cpp's scheme):
// the activation row is quantized once to Q8 blocks, then every weight block is
// an integer dot product scaled in fp32. Not the fp32 reference: see cpu_rows.c.
#include "cpu_backend.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CPU_Q8_AVX2 1
#else
#define CPU_Q8_AVX2 0
#endif

static inline float half_to_f32(uint16_t h) {
#if CPU_Q8_AVX2
    return _cvtsh_ss(h);
#else
    return dtype_f16_to_f32(h);
#endif
}

// Each block: d = max|x| / 127, q = round(x / d), s = d * sum(q) (for Q4_0/Q4_1's
// offset terms).
void cpu_q8_quantize(const float *x, int64_t K, cpu_q8_row *out) {
    for (int64_t b = 0; b < K / QK_BLOCK; b++) {
        const float *xb = x + b * QK_BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < QK_BLOCK; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK_BLOCK; j++) {
            int q = (int)lrintf(xb[j] * id);
            out->qs[b * QK_BLOCK + j] = (int8_t)q;
            sum += q;
        }
        out->d[b] = d;
        out->s[b] = d * (float)sum;
    }
}

#if CPU_Q8_AVX2
// Per 32-lane block: sum of u8 a times s8 b, as 8 int32 partial sums.
static inline __m256i dot_u8s8(__m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
#endif
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The 32 nibbles of a block as bytes 0..15 in GGML order (low nibbles first).
static inline __m256i q4_bytes(const uint8_t *qs) {
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}
#endif

#if CPU_Q8_AVX2
static inline __m256 q8_block(const block_q8_0 *b, const int8_t *xqs, float dx) {
    __m256i w = _mm256_loadu_si256((const __m256i *)b->qs);
    __m256i x = _mm256_load_si256((const __m256i *)xqs);
    // u8 x s8 products need an unsigned side: move w's sign onto x.
    __m256i p = dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_mul_ps(_mm256_set1_ps(half_to_f32(b->d) * dx), _mm256_cvtepi32_ps(p));
}
#endif

static float dot_q8_0(const block_q8_0 *b, const cpu_q8_row *xq, int64_t nb) {
    int64_t i = 0;
    float s = 0.0f;
#if CPU_Q8_AVX2
    // Two accumulators: one block's fma would otherwise wait on the previous one's.
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; i + 2 <= nb; i += 2) {
        a0 = _mm256_add_ps(a0, q8_block(b + i, xq->qs + i * QK_BLOCK, xq->d[i]));
        a1 = _mm256_add_ps(a1, q8_block(b + i + 1, xq->qs + (i + 1) * QK_BLOCK, xq->d[i + 1]));
    }
    s = hsum8(_mm256_add_ps(a0, a1));
#endif
    for (; i < nb; i++) {
        int sum = 0;
        for (int j = 0; j < QK_BLOCK; j++)
            sum += b[i].qs[j] * xq->qs[i * QK_BLOCK + j];
        s += half_to_f32(b[i].d) * xq->d[i] * (float)sum;
    }
    return s;
}

// Q4_0: sum (u - 8) x = d_x * sum(u q) - 8 * s, with u the unsigned nibble.
// Q4_1: sum (d u + m) x = d * d_x * sum(u q) + m * s.
// One body for both (q40 is a constant at each call site once inlined).
static inline __attribute__((always_inline)) float dot_q4(const char *row, size_t bbytes, int q40,
                                                          const cpu_q8_row *xq, int64_t nb) {
    float off = 0.0f, s = 0.0f;
    int64_t i = 0;
#if CPU_Q8_AVX2
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (; i + 2 <= nb; i += 2) {
        for (int u = 0; u < 2; u++) {
            const char *blk = row + (size_t)(i + u) * bbytes;
            float d = half_to_f32(*(const uint16_t *)blk);
            off += q40 ? -8.0f * d * xq->s[i + u]
                       : half_to_f32(*(const uint16_t *)(blk + 2)) * xq->s[i + u];
            __m256i x = _mm256_load_si256((const __m256i *)(xq->qs + (i + u) * QK_BLOCK));
            __m256i p = dot_u8s8(q4_bytes((const uint8_t *)blk + (q40 ? 2 : 4)), x);
            acc[u] =
                _mm256_fmadd_ps(_mm256_set1_ps(d * xq->d[i + u]), _mm256_cvtepi32_ps(p), acc[u]);
        }
    }
    s = hsum8(_mm256_add_ps(acc[0], acc[1]));
#endif
    for (; i < nb; i++) {
        const char *blk = row + (size_t)i * bbytes;
        uint16_t dh, mh = 0;
        memcpy(&dh, blk, 2);
        if (!q40) memcpy(&mh, blk + 2, 2);
        const uint8_t *qs = (const uint8_t *)blk + (q40 ? 2 : 4);
        float d = half_to_f32(dh);
        off += q40 ? -8.0f * d * xq->s[i] : half_to_f32(mh) * xq->s[i];
        int sum = 0;
        for (int j = 0; j < QK_BLOCK / 2; j++) {
            sum += (qs[j] & 0x0f) * xq->qs[i * QK_BLOCK + j];
            sum += (qs[j] >> 4) * xq->qs[i * QK_BLOCK + j + QK_BLOCK / 2];
        }
        s += d * xq->d[i] * (float)sum;
    }
    return s + off;
}

void cpu_q8_rows_dot(const bk_weight *w, const cpu_q8_row *xq, int64_t r0, int64_t r1, float *y) {
    const char *base = w->data;
    int64_t nb = w->cols / QK_BLOCK;
    for (int64_t r = r0; r < r1; r++) {
        const void *row = base + (size_t)r * w->row_bytes;
        if (w->type == DTYPE_Q8_0)
            y[r - r0] = dot_q8_0(row, xq, nb);
        else if (w->type == DTYPE_Q4_0)
            y[r - r0] = dot_q4(row, sizeof(block_q4_0), 1, xq, nb);
        else
            y[r - r0] = dot_q4(row, sizeof(block_q4_1), 0, xq, nb);
    }
}
