// test_cpu_attention: the CPU backend's flash-style causal GQA attention against a
// naive full softmax in double, over prefill, chunked prefill (q_offset > 0),
// decode over thousands of keys (the key-split path), 1 to 3 threads, in place; with
// an fp32 cache and with the default f16 cache (whose reference is the same naive
// softmax over the f16-rounded keys and values: the kernel widens them exactly, so
// the bound is the fp32 one). Dual Chunk Attention: the same, each score with the
// query rotation of its key's chunk (prefill, and decode over stored positions).
#include "../kernels/backend.h"
#include "../kernels/cpu/cpu_backend.h"
#include "support/test_support.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Error: max |got - ref| / max |ref| over the output. exp is ~2 ulp and sums run
// in fp32 over up to 5000 keys.
#define TOL_ATTN 5e-6

static test_counts counts;

// check: one comparison; prints it either way (the errors are the point), counts it.
static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ok) printf("ok   %s\n", msg);
    test_check(&counts, ok, "%s", msg);
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static float rnd_normal(void) {
    double u[2];
    for (int i = 0; i < 2; i++) { // splitmix64
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        u[i] = (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
    }
    return (float)(sqrt(-2.0 * log(u[0] + 1e-12)) * cos(2.0 * M_PI * u[1]));
}

// out[t,h,:] = softmax_j(scale q.k_j) v_j over j <= min(q_offset + t, n_keys - 1).
static void naive_attention(double *out, const float *q, const float *k, const float *v,
                            const attn_shape *s) {
    int g = s->H / s->Hkv, D = s->D;
    double *p = malloc(sizeof(double) * (size_t)s->n_keys);
    for (int t = 0; t < s->T; t++)
        for (int h = 0; h < s->H; h++) {
            const float *qv = q + ((size_t)t * s->H + h) * D;
            const float *kh = k + (size_t)(h / g) * s->S_cap * D;
            const float *vh = v + (size_t)(h / g) * s->S_cap * D;
            long last = (long)s->q_offset + t;
            int n = last + 1 < s->n_keys ? (int)(last + 1) : s->n_keys;
            double m = -INFINITY, l = 0;
            for (int j = 0; j < n; j++) {
                const float *qj = qv;
                if (s->dca) { // the rotation of key j's chunk, from its position
                    const attn_dca *dc = s->dca;
                    const int qpos = s->q_offset + t + dc->pos_offset;
                    const int part = attn_dca_part(dc->chunk_len, qpos / dc->chunk_len,
                                                   attn_dca_position_of_row(dc, h / g, j));
                    const float *base = part == 0 ? q : part == 1 ? dc->q_succ : dc->q_inter;
                    qj = base + ((size_t)t * s->H + h) * D;
                }
                double d = 0;
                for (int i = 0; i < D; i++)
                    d += (double)qj[i] * kh[(size_t)j * D + i];
                p[j] = d * s->scale;
                if (p[j] > m) m = p[j];
            }
            for (int j = 0; j < n; j++)
                l += p[j] = exp(p[j] - m);
            double *o = out + ((size_t)t * s->H + h) * D;
            for (int i = 0; i < D; i++) {
                double acc = 0;
                for (int j = 0; j < n; j++)
                    acc += p[j] * vh[(size_t)j * D + i];
                o[i] = acc / l;
            }
        }
    free(p);
}

// A Dual Chunk Attention case (run_case's dca): chunk length, and the positions of
// the first n_pos_rows rows (ascending random gaps, as SnapKV's kept positions),
// the rest at row + pos_offset.
typedef struct dca_case {
    int chunk_len, n_pos_rows, pos_offset;
} dca_case;

static void run_case(backend *be, const char *kv_name, int n_threads, int T, int n_keys, int q_offset, int H, int Hkv,
                     int D, int S_cap, float q_scale, const dca_case *dc) {
    attn_shape s = {.T = T,
                    .H = H,
                    .Hkv = Hkv,
                    .D = D,
                    .S_cap = S_cap,
                    .n_keys = n_keys,
                    .q_offset = q_offset,
                    .scale = 1.0f / sqrtf((float)D)};
    size_t nq = (size_t)T * H * D, nkv = (size_t)Hkv * S_cap * D;
    float *q = malloc(sizeof(float) * nq), *out = malloc(sizeof(float) * nq);
    float *k = malloc(sizeof(float) * nkv), *v = malloc(sizeof(float) * nkv);
    double *ref = malloc(sizeof(double) * nq);
    const int f16 = be->ops->kv_type(be->ctx) == DTYPE_F16;
    uint16_t *k16 = f16 ? malloc(sizeof(uint16_t) * nkv) : NULL;
    uint16_t *v16 = f16 ? malloc(sizeof(uint16_t) * nkv) : NULL;
    for (size_t i = 0; i < nq; i++)
        q[i] = rnd_normal() * q_scale;
    float *q_parts[2] = {NULL, NULL};
    int32_t *pos = NULL;
    attn_dca dca = {0};
    if (dc) {
        for (int v = 0; v < 2; v++) {
            q_parts[v] = malloc(sizeof(float) * nq);
            for (size_t i = 0; i < nq; i++)
                q_parts[v][i] = rnd_normal() * q_scale;
        }
        pos = malloc(sizeof(int32_t) * (size_t)Hkv * (dc->n_pos_rows > 0 ? dc->n_pos_rows : 1));
        for (int h = 0; h < Hkv; h++) { // gaps of 1..5 positions, ending below pos_offset + n_pos_rows
            int at = 0;
            for (int r = 0; r < dc->n_pos_rows; r++) {
                at += r == 0 ? (int)(fabsf(rnd_normal()) * 3) : 1 + (int)(fabsf(rnd_normal()) * 2);
                pos[(size_t)h * dc->n_pos_rows + r] = at;
            }
            if (dc->n_pos_rows > 0 && at >= dc->n_pos_rows + dc->pos_offset) {
                printf("FAIL dca case: positions %d pass the offset %d\n", at, dc->pos_offset);
                exit(1);
            }
        }
        dca = (attn_dca){.chunk_len = dc->chunk_len, .q_succ = q_parts[0], .q_inter = q_parts[1],
                         .pos = pos, .pos_cap = dc->n_pos_rows, .n_pos_rows = dc->n_pos_rows,
                         .pos_offset = dc->pos_offset};
        s.dca = &dca;
    }
    for (int h = 0; h < Hkv; h++)
        for (int j = 0; j < S_cap; j++)
            for (int i = 0; i < D; i++) {
                size_t at = ((size_t)h * S_cap + j) * D + i;
                // Rows past n_keys are NaN: reading one poisons the output.
                k[at] = j < n_keys ? rnd_normal() : NAN;
                v[at] = j < n_keys ? rnd_normal() : NAN;
            }
    if (f16) { // the cache the backend holds, and the values the reference sees
        for (size_t i = 0; i < nkv; i++) {
            k16[i] = dtype_f32_to_f16(k[i]);
            v16[i] = dtype_f32_to_f16(v[i]);
            k[i] = dtype_f16_to_f32(k16[i]);
            v[i] = dtype_f16_to_f32(v16[i]);
        }
    }
    const void *kc = f16 ? (const void *)k16 : k, *vc = f16 ? (const void *)v16 : v;
    naive_attention(ref, q, k, v, &s);
    snp_status st = be->ops->attention(be->ctx, out, q, kc, vc, &s);
    if (st == SNP_OK && n_threads == 2 && !dc) { // again in place: out aliases q
        st = be->ops->attention(be->ctx, q, q, kc, vc, &s);
        if (st == SNP_OK && memcmp(q, out, sizeof(float) * nq) != 0)
            st = snp_fail(SNP_ERR_INTERNAL, "in-place result differs from out-of-place");
    }
    double ma = 0, mr = 0;
    for (size_t i = 0; i < nq; i++) {
        double d = fabs(out[i] - ref[i]);
        if (!(d <= ma)) ma = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    double re = ma / mr;
    check(st == SNP_OK && re <= TOL_ATTN,
          "attention%s kv=%s thr=%d T=%-4d keys=%-5d q_off=%-5d H=%-3d Hkv=%-2d D=%-3d |q|~%-4g: "
          "max abs %.3g, rel %.3g %s",
          dc ? " dca" : "", kv_name, n_threads, T, n_keys, q_offset, H, Hkv, D, (double)q_scale, ma,
          re, st ? snp_error() : "");
    free(q), free(out), free(k), free(v), free(ref), free(k16), free(v16);
    free(q_parts[0]), free(q_parts[1]), free(pos);
}

int main(void) {
    static const struct {
        int T, n_keys, q_offset, H, Hkv, D, S_cap;
        float q_scale;
    } cases[] = {
        {1, 5000, 4999, 9, 3, 64, 5200, 1},  // SmolLM2 decode over 5000 keys (key split)
        {1, 5000, 4999, 3, 1, 64, 5000, 4},  // one TP rank of SmolLM2, peaky softmax
        {1, 1, 0, 4, 2, 16, 4, 1},           // the first token
        {37, 37, 0, 4, 4, 16, 64, 1},        // prefill, MHA
        {130, 130, 0, 9, 3, 64, 130, 2},     // prefill over several key blocks
        {100, 300, 200, 8, 2, 128, 320, 1},  // chunked prefill: the second chunk
        {5, 1000, 995, 4, 1, 64, 1024, 1},   // a few tokens at once over a long cache
        {3, 600, 700, 6, 2, 64, 600, 1},     // q_offset past the keys: all visible
        {300, 300, 0, 2, 1, 128, 300, 8},    // large scores: the running max moves a lot
        {1, 777, 776, 12, 4, 128, 800, 1},   // decode, D = 128
        {64, 4000, 3936, 9, 3, 64, 4096, 1}, // last chunk of a long prompt (split + mask)
        {2, 2, 0, 128, 1, 16, 8, 1},         // group wider than a tile
    };
    int threads[] = {2, 1, 3};
    const kv_dtype kv_types[] = {KV_DTYPE_F32, KV_DTYPE_F16};
    for (int ti = 0; ti < 6; ti++) {
        backend *be = NULL;
        const kv_dtype kv = kv_types[ti % 2];
        backend_options opt = {.n_threads = threads[ti / 2], .kv_type = kv};
        if (backend_open("cpu", &opt, &be) != SNP_OK) {
            printf("FAIL backend_open cpu: %s\n", snp_error());
            return 1;
        }
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            if (ti > 1 && cases[c].T * (long)cases[c].n_keys > 100000) continue; // time
            run_case(be, kv_dtype_name(kv), threads[ti / 2], cases[c].T, cases[c].n_keys, cases[c].q_offset, cases[c].H,
                     cases[c].Hkv, cases[c].D, cases[c].S_cap, cases[c].q_scale, NULL);
        }

        backend_close(be);
    }
    // After the plain cases, so that their random inputs stay what they were.
    for (int ti = 0; ti < 6; ti++) {
        backend *be = NULL;
        const kv_dtype kv = kv_types[ti % 2];
        backend_options opt = {.n_threads = threads[ti / 2], .kv_type = kv};
        if (backend_open("cpu", &opt, &be) != SNP_OK) {
            printf("FAIL backend_open cpu: %s\n", snp_error());
            return 1;
        }
        // Dual Chunk Attention: a prefill crossing chunks inside key blocks and tiles
        // (chunk length 48 against blocks of 128), a chunked prefill, decode over a
        // SnapKV-like cache (stored positions, then rows at row + offset) through the
        // key split, and a chunk length longer than the keys (one part only).
        static const struct {
            int T, n_keys, q_offset, H, Hkv, D, S_cap;
            dca_case dc;
        } dca_cases[] = {
            {300, 300, 0, 8, 2, 64, 300, {48, 0, 0}},
            {100, 400, 300, 4, 2, 32, 400, {37, 0, 0}},
            {1, 3001, 3000, 8, 2, 64, 3001, {256, 2000, 5000}},
            {1, 900, 899, 4, 1, 128, 900, {100, 600, 1700}},
            {4, 604, 600, 6, 3, 64, 604, {64, 600, 1700}},
            {50, 50, 0, 4, 2, 16, 64, {1000, 0, 0}},
        };
        for (size_t c = 0; c < sizeof dca_cases / sizeof dca_cases[0]; c++)
            run_case(be, kv_dtype_name(kv), threads[ti / 2], dca_cases[c].T, dca_cases[c].n_keys,
                     dca_cases[c].q_offset, dca_cases[c].H, dca_cases[c].Hkv, dca_cases[c].D,
                     dca_cases[c].S_cap, 1, &dca_cases[c].dc);
        backend_close(be);
    }
    return test_finish(&counts, "test_cpu_attention");
}
