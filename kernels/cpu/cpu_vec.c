// cpu_vec: vectorized fp32 array helpers of the CPU backend (exp with a sum for
// the online softmax, max, scale, silu*up). The compiler does not vectorize expf
// or float max reductions without -ffast-math, which the build does not use.
#include "cpu_backend.h"

#include <math.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CPU_VEC_AVX2 1
#else
#define CPU_VEC_AVX2 0
#endif

// Below this, exp is flushed to 0: exp(-87) = 1.6e-38 is the smallest input whose
// result is still a normal float after the 2^n scaling below.
#define EXP_FLUSH_BELOW -87.0f

#if CPU_VEC_AVX2
// exp(x) by Cephes' expf: x = n ln2 + r with |r| <= ln2/2, a degree-5 polynomial
// for exp(r), 2^n put in the exponent bits. About 2 ulp; NaN stays NaN.
static inline __m256 exp8(__m256 x) {
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_FLUSH_BELOW), _CMP_LT_OQ);
    __m256 v = _mm256_min_ps(x, _mm256_set1_ps(88.3f)); // keeps n <= 127
    v = _mm256_max_ps(v, _mm256_set1_ps(EXP_FLUSH_BELOW));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // ln2 in two parts so that n * ln2_hi is exact.
    v = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
    v = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), v);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(v, v), _mm256_add_ps(v, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    p = _mm256_andnot_ps(tiny, p);
    return _mm256_blendv_ps(p, x, nan);
}
#endif

static inline float exp1(float x) {
    return x < EXP_FLUSH_BELOW ? 0.0f : expf(x);
}

float cpu_vec_exp_sum(float *p, const float *s, float m, int n) {
    int j = 0;
    float sum = 0.0f;
#if CPU_VEC_AVX2
    __m256 mv = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
        _mm256_storeu_ps(p + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int i = 0; i < 8; i++)
        sum += lanes[i];
    if (j < n) { // the tail through the same exp, so every p has the same rounding
        float ts[8], tp[8];
        int r = n - j;
        for (int i = 0; i < 8; i++)
            ts[i] = i < r ? s[j + i] - m : -INFINITY;
        _mm256_storeu_ps(tp, exp8(_mm256_loadu_ps(ts)));
        for (int i = 0; i < r; i++) {
            p[j + i] = tp[i];
            sum += tp[i];
        }
        j = n;
    }
#endif
    for (; j < n; j++) {
        p[j] = exp1(s[j] - m);
        sum += p[j];
    }
    return sum;
}

float cpu_vec_max(const float *x, int n) {
    int j = 0;
    float m = -INFINITY;
#if CPU_VEC_AVX2
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= n; j += 8)
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + j));
    float lanes[8];
    _mm256_storeu_ps(lanes, mv);
    for (int i = 0; i < 8; i++)
        m = lanes[i] > m ? lanes[i] : m;
#endif
    for (; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

void cpu_vec_scale(float *x, float a, int n) {
#pragma omp simd
    for (int j = 0; j < n; j++)
        x[j] *= a;
}

void cpu_vec_silu_mul(float *y, const float *gate, const float *up, size_t n) {
    size_t i = 0;
#if CPU_VEC_AVX2
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i);
        __m256 e = exp8(_mm256_xor_ps(g, sign));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
    }
#endif
    for (; i < n; i++)
        y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

// The f16 K/V helpers. Stores round to nearest even and saturate: a finite value
// past f16's 65504 is kept as +-65504 instead of becoming inf (an inf key would
// turn every score of its row into NaN); NaN stays NaN.
#define F16_MAX 65504.0f

void cpu_vec_to_f16(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
#if CPU_VEC_AVX2 && defined(__F16C__)
    const __m256 hi = _mm256_set1_ps(F16_MAX), lo = _mm256_set1_ps(-F16_MAX);
    for (; i + 8 <= n; i += 8) {
        // MINPS/MAXPS return their second operand when either is NaN: x goes second,
        // so a NaN passes through.
        __m256 x = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_loadu_ps(src + i)));
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; i < n; i++) {
        float x = src[i];
        x = x > F16_MAX ? F16_MAX : x < -F16_MAX ? -F16_MAX : x;
        dst[i] = dtype_f32_to_f16(x);
    }
}

void cpu_vec_from_f16(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
#if CPU_VEC_AVX2 && defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++)
        dst[i] = dtype_f16_to_f32(src[i]);
}

float cpu_vec_dot_f16(const uint16_t *a, const float *x, int n) {
    int i = 0;
    float s = 0.0f;
#if CPU_VEC_AVX2 && defined(__F16C__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))),
                             _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8))),
                             _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))),
                             _mm256_loadu_ps(x + i), a0);
    __m256 v = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    s = _mm_cvtss_f32(h);
#endif
    for (; i < n; i++)
        s += dtype_f16_to_f32(a[i]) * x[i];
    return s;
}
