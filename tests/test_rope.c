// test_rope: RoPE at long-context scale and its config. (1) The CPU backend's rope
// angles at positions up to 1,048,576 with theta 1e7 and 2.8e9 (D 128), read back from
// the rotated unit vectors, against an fp64 reference: measured against the exact
// angle pos * theta^(-2i/D), and against HF's own fp32 angle (fp32 inv_freq times
// fp32 position), which snaptp reproduces by design. (2) YaRN's cos/sin scale.
// (3) config.json rope_scaling: yarn and dynamic read as HF does, an unknown type
// refused naming the file and the type. (4) Dynamic NTK in a decode batch: each
// sequence rotated with its own length's frequencies (tests/golden/llama_dynamic).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/backend.h"
#include "../runtime/forward.h"
#include "../runtime/kv_cache.h"
#include "../runtime/model.h"
#include "../runtime/model_config.h"
#include "support/test_support.h"

enum { D = 128, H = 1 };

// Positions: the ends of the range, powers of two and their neighbours (where fp32
// spacing changes), and a spread of others.
static int positions(int32_t *pos, int cap) {
    int n = 0;
    const int32_t fixed[] = {0,      1,      2,      1000,   4095,   4096,    32767,  65536,
                             131071, 262144, 524287, 524288, 999999, 1048575, 1048576};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && n < cap; i++)
        pos[n++] = fixed[i];
    unsigned s = 12345;
    while (n < cap) {
        s = s * 1103515245u + 12345u;
        pos[n++] = (int32_t)((s >> 8) % 1048577u);
    }
    return n;
}

static double wrap(double a) { // to (-pi, pi]
    a = fmod(a, 2 * M_PI);
    if (a > M_PI) a -= 2 * M_PI;
    if (a <= -M_PI) a += 2 * M_PI;
    return a;
}

// Worst angle errors over all positions and pairs, against the exact angle and against
// HF's fp32 angle; *worst_rel_exact is the exact error in units of
// pos * inv_freq * 2^-24 (an fp32 rounding of the angle is at most one).
static void angle_errors(backend *be, float theta, double *worst_exact, double *worst_hf,
                         double *worst_rel_exact, double *worst_radius) {
    enum { T = 64 };
    static float x[T * H * D];
    int32_t pos[T];
    positions(pos, T);
    model_config c = {.head_dim = D, .rope_theta = theta};
    float inv_freq[D / 2];
    model_config_inv_freq(&c, inv_freq);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D / 2; i++) {
            x[t * D + i] = 1.0f; // (a, b) = (1, 0): out = (cos, sin) of the angle
            x[t * D + i + D / 2] = 0.0f;
        }
    const rope_params rp = {.mode = ROPE_MODE_NEOX, .inv_freq = inv_freq};
    snp_status st = be->ops->rope(be->ctx, x, pos, T, H, D, &rp);
    *worst_exact = *worst_hf = *worst_rel_exact = *worst_radius = st == SNP_OK ? 0 : INFINITY;
    for (int t = 0; st == SNP_OK && t < T; t++)
        for (int i = 0; i < D / 2; i++) {
            const double cs = x[t * D + i], sn = x[t * D + i + D / 2];
            const double got = atan2(sn, cs);
            const double exact = (double)pos[t] * pow((double)theta, -2.0 * i / D);
            const double hf = (double)((float)pos[t] * inv_freq[i]); // fp32 product, as HF
            const double e_exact = fabs(wrap(got - exact)), e_hf = fabs(wrap(got - hf));
            const double ulp_scale = (double)pos[t] * inv_freq[i] * ldexp(1.0, -24);
            if (e_exact > *worst_exact) *worst_exact = e_exact;
            if (e_hf > *worst_hf) *worst_hf = e_hf;
            if (ulp_scale > 0 && e_exact / ulp_scale > *worst_rel_exact)
                *worst_rel_exact = e_exact / ulp_scale;
            const double r = fabs(sqrt(cs * cs + sn * sn) - 1.0);
            if (r > *worst_radius) *worst_radius = r;
        }
}

static void check_angles(test_counts *tc, backend *be) {
    const float thetas[] = {1e7f, 2.8e9f};
    for (int k = 0; k < 2; k++) {
        double ex, hf, rel, rad;
        angle_errors(be, thetas[k], &ex, &hf, &rel, &rad);
        printf(
            "# theta %.3g, D %d, positions 0..1048576: angle error vs exact fp64 %.3g rad "
            "(%.2f units of pos x inv_freq x 2^-24), vs HF's fp32 angle %.3g rad, |(cos,sin)| - 1 "
            "%.2g\n",
            (double)thetas[k], D, ex, rel, hf, rad);
        // The angle is formed in fp32 as HF forms it: inv_freq = 1 / powf(theta, 2i/D)
        // (powf within 1 ulp, the division half an ulp: up to 3 units of 2^-24), then
        // the product with the position (half an ulp, 1 unit): at most 4 units of
        // pos * inv_freq * 2^-24, 0.25 rad at 2^20 for a pair near 1 rad per token.
        // Measured (stated in the README): 0.031 rad (theta 1e7) and 0.085 rad
        // (theta 2.8e9), 2.6 and 2.9 units; HF's own fp32 angles carry the same error.
        test_check(tc, rel <= 4.0 && ex <= 0.25,
                   "theta %.3g: angle error %.3g rad = %.2f units of pos x inv_freq x 2^-24 "
                   "(bound 4, 0.25 rad)",
                   (double)thetas[k], ex, rel);
        // Against HF's own fp32 angle only cosf/sinf and atan2 remain: fp32 accuracy
        // with full range reduction at 1e6 radians.
        test_check(tc, hf <= 1e-6 && rad <= 1e-6,
                   "theta %.3g: vs HF's fp32 angle %.3g rad, radius off by %.2g (bound 1e-6)",
                   (double)thetas[k], hf, rad);
    }
}

static void check_cs_scale(test_counts *tc, backend *be) {
    float x[D], inv_freq[D / 2];
    int32_t pos = 123456;
    model_config c = {.head_dim = D, .rope_theta = 1e6f};
    model_config_inv_freq(&c, inv_freq);
    for (int i = 0; i < D / 2; i++) {
        x[i] = 1.0f;
        x[i + D / 2] = 0.0f;
    }
    const float scale = 1.1386294f; // 0.1 ln 4 + 1: YaRN at factor 4
    const rope_params rp = {.mode = ROPE_MODE_NEOX, .inv_freq = inv_freq, .cs_scale = scale};
    snp_status st = be->ops->rope(be->ctx, x, &pos, 1, 1, D, &rp);
    double worst = 0;
    for (int i = 0; i < D / 2; i++) {
        double r = sqrt((double)x[i] * x[i] + (double)x[i + D / 2] * x[i + D / 2]);
        if (fabs(r - scale) > worst) worst = fabs(r - scale);
    }
    test_check(tc, st == SNP_OK && worst <= 1e-6,
               "rope cs_scale %.7g multiplies cos and sin (radius off by %.2g)", (double)scale,
               worst);
}

// write_config: a tiny Llama config.json with the given rope_scaling JSON text.
static int write_config(char *path, size_t n, const char *rope_scaling, int max_pos) {
    char dir[] = "/tmp/snaptp_rope_XXXXXX";
    if (!mkdtemp(dir)) return 0;
    snprintf(path, n, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fprintf(f,
            "{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
            "\"intermediate_size\": 128, \"num_attention_heads\": 2, \"vocab_size\": 512, "
            "\"max_position_embeddings\": %d, \"rope_theta\": 10000.0, \"rope_scaling\": %s}\n",
            max_pos, rope_scaling);
    fclose(f);
    return 1;
}

static void remove_config(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    unlink(path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    rmdir(dir);
}

// Dual Chunk Attention's config (README, "Dual Chunk Attention"): Qwen2.5-1M's
// numbers, vLLM's defaults for absent fields, and the refusals. The field rides
// after a null rope_scaling in write_config's text.
static void check_dual_chunk_config(test_counts *tc) {
    char path[4096];
    model_config c;
    write_config(path, sizeof path,
                 "null, \"dual_chunk_attention_config\": {\"chunk_size\": 262144, "
                 "\"local_size\": 8192, \"original_max_position_embeddings\": 262144}",
                 1010000);
    snp_status st = model_config_from_json(path, &c);
    const float s_1m = model_config_dca_scale(&c, 1048576);
    test_check(tc,
               st == SNP_OK && model_config_dca_chunk_len(&c) == 253952 &&
                   model_config_dca_scale(&c, 262144) == 1.0f &&
                   model_config_dca_scale(&c, 1000) == 1.0f &&
                   fabsf(s_1m - (float)(0.1 * log(4.0) + 1.0)) == 0.0f,
               "dual chunk (Qwen2.5-1M): chunk length %d, s(1M) %.7g%s%s",
               model_config_dca_chunk_len(&c), (double)s_1m, st ? ": " : "",
               st ? snp_error() : "");
    remove_config(path);
    write_config(path, sizeof path, "null, \"dual_chunk_attention_config\": {}", 4096);
    st = model_config_from_json(path, &c);
    test_check(tc,
               st == SNP_OK && c.dca_chunk_size == 8192 && c.dca_local_size == 1024 &&
                   c.dca_original_ctx == 0 && model_config_dca_scale(&c, 1 << 20) == 1.0f,
               "dual chunk defaults (vLLM's): chunk %d, local %d, no scaling", c.dca_chunk_size,
               c.dca_local_size);
    remove_config(path);
    write_config(path, sizeof path,
                 "null, \"dual_chunk_attention_config\": {\"chunk_size\": 64, \"local_size\": 64}",
                 4096);
    st = model_config_from_json(path, &c);
    test_check(tc, st == SNP_ERR_FORMAT && strstr(snp_error(), "local_size 64"),
               "dual chunk local_size >= chunk_size refused: %s", st ? snp_error() : "accepted");
    remove_config(path);
    write_config(path, sizeof path,
                 "{\"rope_type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": "
                 "32}, \"dual_chunk_attention_config\": {\"chunk_size\": 64, \"local_size\": 8}",
                 128);
    st = model_config_from_json(path, &c);
    test_check(tc, st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), "dual_chunk_attention_config"),
               "dual chunk with yarn refused: %s", st ? snp_error() : "accepted");
    remove_config(path);
}

static void check_config(test_counts *tc) {
    char path[4096];
    model_config c;
    // yarn: HF's defaults (beta 32/1, attention factor 0.1 ln(factor) + 1); the model
    // serves original x factor.
    write_config(path, sizeof path,
                 "{\"rope_type\": \"yarn\", \"factor\": 4.0, "
                 "\"original_max_position_embeddings\": 32768}",
                 32768);
    snp_status st = model_config_from_json(path, &c);
    test_check(tc,
               st == SNP_OK && c.rope_scaling == ROPE_SCALING_YARN &&
                   c.rope_original_ctx == 32768 && c.n_ctx == 131072 && c.rope_beta_fast == 32.0f &&
                   c.rope_beta_slow == 1.0f &&
                   fabsf(c.rope_attn_scale - (float)(0.1 * log(4.0) + 1.0)) == 0.0f,
               "yarn (Qwen2.5 style): context %d, original %d, beta %g/%g, cos/sin x %.7g%s%s",
               c.n_ctx, c.rope_original_ctx, (double)c.rope_beta_fast, (double)c.rope_beta_slow,
               (double)c.rope_attn_scale, st ? ": " : "", st ? snp_error() : "");
    remove_config(path);
    // yarn with mscale / mscale_all_dim (DeepSeek's form): the ratio of the two terms.
    write_config(path, sizeof path,
                 "{\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": "
                 "4096, \"mscale\": 1.0, \"mscale_all_dim\": 0.707, \"beta_fast\": 32, "
                 "\"beta_slow\": 1}",
                 163840);
    st = model_config_from_json(path, &c);
    const double want = (0.1 * 1.0 * log(40.0) + 1) / (0.1 * 0.707 * log(40.0) + 1);
    test_check(tc, st == SNP_OK && fabs(c.rope_attn_scale - want) < 1e-6,
               "yarn mscale/mscale_all_dim: cos/sin x %.7g (want %.7g)", (double)c.rope_attn_scale,
               want);
    remove_config(path);
    // dynamic: the base grows past max_position_embeddings; at and below it the
    // frequencies are the plain ones.
    write_config(path, sizeof path, "{\"type\": \"dynamic\", \"factor\": 2.0}", 4096);
    st = model_config_from_json(path, &c);
    float plain[16], at[16], grown[16]; // head_dim 32: 16 pairs
    model_config p = c;
    p.rope_scaling = ROPE_SCALING_NONE;
    if (st == SNP_OK) {
        model_config_inv_freq(&p, plain);
        model_config_inv_freq_at(&c, 4096, at);
        model_config_inv_freq_at(&c, 8192, grown);
    }
    // At 2x the length, base' = base * (2 * 2 - 1)^(D / (D - 2)), D = 32.
    const double base2 = 10000.0 * pow(3.0, 32.0 / 30.0);
    test_check(tc,
               st == SNP_OK && c.rope_scaling == ROPE_SCALING_DYNAMIC && c.n_ctx == 8192 &&
                   c.rope_original_ctx == 4096 && memcmp(plain, at, sizeof plain) == 0 &&
                   fabs(grown[1] - pow(base2, -2.0 / 32)) < 1e-6 * pow(base2, -2.0 / 32),
               "dynamic NTK: context %d, grows past %d, plain up to it, base %.6g at 8192", c.n_ctx,
               c.rope_original_ctx, base2);
    remove_config(path);
    // An unknown type is an error naming the file and the type.
    write_config(path, sizeof path, "{\"rope_type\": \"longrope\", \"factor\": 2.0}", 4096);
    st = model_config_from_json(path, &c);
    test_check(tc,
               st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), "longrope") &&
                   strstr(snp_error(), path),
               "rope_type longrope refused: %s", st ? snp_error() : "accepted");
    remove_config(path);
    write_config(path, sizeof path, "{\"rope_type\": \"dynamic\"}", 4096);
    st = model_config_from_json(path, &c);
    test_check(tc, st == SNP_ERR_FORMAT && strstr(snp_error(), "rope_scaling.factor"),
               "dynamic without a factor refused: %s", st ? snp_error() : "accepted");
    remove_config(path);
    check_dual_chunk_config(tc);
}

// Two sequences decoded as one batch (7 and 64 prompt tokens: under and over
// llama_dynamic's max_position_embeddings 32) must give the logits each gets alone.
static void check_dynamic_batch(test_counts *tc, backend *be) {
    enum { T0 = 7, T1 = 64, CAP = 80 };
    char path[4096];
    test_source_path(path, sizeof path, "tests/golden/llama_dynamic");
    model *m = NULL;
    forward_ctx *f = NULL;
    kv_cache *kv[2] = {NULL, NULL}, *solo = NULL;
    const model_shard whole = {0, 1};
    float *batch = NULL, *alone = NULL;
    snp_status st = model_load(path, be, &whole, &m);
    if (!test_check(tc, st == SNP_OK, "load %s: %s", path, snp_error())) return;
    const int V = m->cfg.n_vocab, Tn[2] = {T0, T1};
    int32_t ids[T1], next[2] = {17, 301}, pos[2] = {T0, T1};
    for (int i = 0; i < T1; i++)
        ids[i] = (i * 37 + 11) % V;
    batch = malloc(sizeof(float) * 2 * (size_t)V);
    alone = malloc(sizeof(float) * 2 * (size_t)V);
    st = forward_init(m, 16, &f);
    for (int b = 0; b < 2 && st == SNP_OK; b++) {
        st = kv_cache_init(be, m->cfg.n_layers, m->n_kv_heads_local, m->cfg.head_dim, CAP, &kv[b]);
        if (st == SNP_OK) st = forward_run(f, kv[b], ids, Tn[b], 0, 0, alone + (size_t)b * V);
    }
    if (st == SNP_OK) st = forward_decode_batch(f, kv, next, pos, 2, batch);
    for (int b = 0; b < 2 && st == SNP_OK; b++) {
        kv_cache_free(solo);
        solo = NULL;
        st = kv_cache_init(be, m->cfg.n_layers, m->n_kv_heads_local, m->cfg.head_dim, CAP, &solo);
        if (st == SNP_OK) st = forward_run(f, solo, ids, Tn[b], 0, 0, alone + (size_t)b * V);
        if (st == SNP_OK) st = forward_run(f, solo, &next[b], 1, Tn[b], 0, alone + (size_t)b * V);
    }
    if (test_check(tc, st == SNP_OK, "llama_dynamic batch: %s", snp_error())) {
        double e0 = test_max_rel_error(batch, alone, (size_t)V);
        double e1 = test_max_rel_error(batch + V, alone + V, (size_t)V);
        test_check(
            tc, e0 <= 1e-6 && e1 <= 1e-6,
            "dynamic NTK decode batch (positions %d, %d) == each alone: rel error %.2g, %.2g", T0,
            T1, e0, e1);
    }
    kv_cache_free(solo);
    kv_cache_free(kv[0]);
    kv_cache_free(kv[1]);
    forward_free(f);
    model_free(m);
    free(batch);
    free(alone);
}

int main(void) {
    test_counts tc = {0};
    backend *be = NULL;
    const backend_options bo = {.n_threads = 1};
    if (!test_check(&tc, backend_open("cpu", &bo, &be) == SNP_OK, "cpu backend: %s", snp_error()))
        return test_finish(&tc, "test_rope");
    check_angles(&tc, be);
    check_cs_scale(&tc, be);
    check_config(&tc);
    check_dynamic_batch(&tc, be);
    backend_close(be);
    return test_finish(&tc, "test_rope");
}
