// cpu_backend: private declarations shared by the CPU backend's files (the context,
// the weight storage, each op family's entry points and the row/vector kernels).
// Only kernels/cpu, its tests and benches include it; the model sees backend.h.
#ifndef SNAPTP_CPU_BACKEND_H
#define SNAPTP_CPU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../backend.h"
#include "cpu_pool.h"

enum { CPU_MAX_THREADS = 512 };

// One context per backend_open. A context is driven by one host thread at a time;
// each op shares its work out over the context's pool (cpu_pool.h) and returns
// when it is done. Several ranks on one machine should split the cores
// (n_threads = cores / ranks): every op ends in a join, so an oversubscribed core
// slows the whole op.
typedef struct cpu_ctx {
    int n_threads;
    cpu_pool *pool; // n_threads threads, the caller's included
    // 1: T == 1 products with Q8_0/Q4_0/Q4_1 weights use the int8 dot (cpu_q8.c).
    // Set from the environment, SNAPTP_CPU_MATVEC_Q8=1, until backend_options has it.
    int matvec_q8;
    int copy_weights; // backend_options.copy_weights: never use a mapping in place
    dtype kv_type;    // DTYPE_F16 (default) or DTYPE_F32: the element of K/V buffers
    // Per-thread fp32 scratch kept across calls (the matmul panels: 4 MiB freshly
    // mapped per call cost page faults); index = the pool's thread id. One op uses
    // it at a time.
    float **scratch;
    size_t *scratch_bytes;
} cpu_ctx;

// cpu_scratch: thread `tid`'s scratch of at least n_bytes (64-byte aligned), grown
// as needed; NULL when out of memory. Call only from thread tid of the op's team.
float *cpu_scratch(cpu_ctx *c, int tid, size_t n_bytes);

// Weight storage. Matrices keep their source format with rows packed densely
// (quantized blocks are dequantized per block on use; F16/BF16 convert on the fly,
// which halves decode memory traffic against F32 at no cost in accuracy: the
// conversion is exact). 1-row weights (norm gains, biases) are stored as F32.
struct bk_weight {
    dtype type; // storage type
    int64_t rows, cols;
    size_t row_bytes; // dense: row r starts at data + r * row_bytes
    void *data;       // 64-byte aligned when owned; a borrowed mapping is 32-byte aligned
                      // at best (GGUF), so kernels load weights unaligned
    int borrowed;     // 1: data points into the checkpoint's mapping (not freed here)
    char name[96];    // for messages, truncated
};

// Ops (the table lives in cpu_backend.c).
snp_status cpu_embed(void *ctx, void *x, const bk_weight *table, const int32_t *ids, int T);
snp_status cpu_rms_norm(void *ctx, void *y, const void *x, const bk_weight *w, float eps, int T,
                        int C);
snp_status cpu_matmul(void *ctx, void *y, const void *x, const bk_weight *W, const bk_weight *bias,
                      int T);
snp_status cpu_rope(void *ctx, void *x, const int32_t *pos, int T, int H, int D,
                    const rope_params *rp);
snp_status cpu_kv_store(void *ctx, void *cache, const void *src, int T, int Hkv, int D, int S_cap,
                        int row0);
snp_status cpu_kv_scale(void *ctx, void *cache, int T, int Hkv, int D, int S_cap, int row0,
                        float factor);
snp_status cpu_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                         const attn_shape *s);
snp_status cpu_swiglu(void *ctx, void *y, const void *gate, const void *up, size_t n);
snp_status cpu_add(void *ctx, void *y, const void *x, size_t n);

// cpu_rows_to_f32: rows [r0, r0 + n_rows) of w as fp32 into dst [n_rows, cols];
// bit-identical to dtype_to_f32 up to fused multiply-add rounding in Q4_1.
void cpu_rows_to_f32(const bk_weight *w, int64_t r0, int64_t n_rows, float *dst);

// cpu_rows_dot: y[r - r0] = dot(W[r, :], x) for r in [r0, r1), fp32 accumulation.
// xsum: per-32-block sums of x (cpu_block_sums), needed only by Q4_1, else NULL.
void cpu_rows_dot(const bk_weight *w, const float *x, const float *xsum, int64_t r0, int64_t r1,
                  float *y);
// cpu_rows_dot_tokens: cpu_rows_dot for T token vectors x [T, K] (xsum [T, K/32]),
// y[t * ldy + r - r0]; every value bit-identical to cpu_rows_dot on its token alone.
void cpu_rows_dot_tokens(const bk_weight *w, const float *x, const float *xsum, int T,
                         int64_t r0, int64_t r1, float *y, int64_t ldy);

// cpu_block_sums: out[b] = sum of x[32b .. 32b+31], for b < K / 32.
void cpu_block_sums(const float *x, int64_t K, float *out);

// The int8 decode path (llama.cpp's scheme): x is quantized once to Q8 blocks,
// each row's dot is an integer dot per block scaled in fp32. Faster, but x loses
// precision (~0.4% per element), so it is off unless cpu_ctx.matvec_q8 is set.
typedef struct cpu_q8_row {
    float *d;   // [K/32] scales
    float *s;   // [K/32] d * sum(q), for Q4_1's m term
    int8_t *qs; // [K] 32-byte aligned
} cpu_q8_row;
void cpu_q8_quantize(const float *x, int64_t K, cpu_q8_row *out);
void cpu_q8_rows_dot(const bk_weight *w, const cpu_q8_row *xq, int64_t r0, int64_t r1, float *y);

// Vector helpers over fp32 arrays (AVX2/AVX-512 when the build has them).
// cpu_vec_exp_sum: p[j] = exp(s[j] - m) for j < n, returns the sum of p. Inputs
// below -87 (and -inf) give exactly 0; relative error about 2 ulp elsewhere.
float cpu_vec_exp_sum(float *p, const float *s, float m, int n);
float cpu_vec_max(const float *x, int n); // -inf when every element is -inf
void cpu_vec_scale(float *x, float a, int n);
// cpu_vec_silu_mul: y[i] = gate[i] / (1 + exp(-gate[i])) * up[i]; y may alias either.
void cpu_vec_silu_mul(float *y, const float *gate, const float *up, size_t n);
// f16 K/V: fp32 -> f16 rounds to nearest even and saturates at +-65504 (NaN stays
// NaN); f16 -> fp32 is exact; the dot accumulates in fp32.
void cpu_vec_to_f16(uint16_t *dst, const float *src, size_t n);
void cpu_vec_from_f16(float *dst, const uint16_t *src, size_t n);
float cpu_vec_dot_f16(const uint16_t *a, const float *x, int n);

#endif
