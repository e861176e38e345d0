// model_config: GGUF metadata and HF config.json into one model_config; the list
// of supported architectures lives here and nowhere else.
#include "model_config.h"

#include "text_file.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// clang-format off: one architecture a line
static const char *const arch_names[] = {
    [MODEL_ARCH_LLAMA] = "llama",
    [MODEL_ARCH_MISTRAL] = "mistral",
    [MODEL_ARCH_QWEN2] = "qwen2",
    [MODEL_ARCH_QWEN3] = "qwen3",
    [MODEL_ARCH_GLM] = "glm",
    [MODEL_ARCH_GLM4] = "glm4",
};
// clang-format on
_Static_assert(sizeof arch_names / sizeof arch_names[0] == MODEL_ARCH_COUNT, "one name per arch");

// The names llama.cpp's converter writes to general.architecture, where they differ
// from HF's model_type: it writes HF's GlmForCausalLM (and THUDM's own ChatGLM
// checkpoints) as "chatglm", GLM-4-0414 as "glm4".
// clang-format off
static const char *const gguf_arch_names[] = {
    [MODEL_ARCH_LLAMA] = "llama",
    [MODEL_ARCH_MISTRAL] = "mistral",
    [MODEL_ARCH_QWEN2] = "qwen2",
    [MODEL_ARCH_QWEN3] = "qwen3",
    [MODEL_ARCH_GLM] = "chatglm",
    [MODEL_ARCH_GLM4] = "glm4",
};
// clang-format on
_Static_assert(sizeof gguf_arch_names / sizeof gguf_arch_names[0] == MODEL_ARCH_COUNT,
               "one GGUF name per arch");

const char *model_arch_name(model_arch a) {
    return (unsigned)a < MODEL_ARCH_COUNT ? arch_names[a] : "?";
}

static snp_status arch_from_name(const char *name, size_t len, const char *source,
                                 const char *field, int gguf, model_arch *out) {
    const char *const *names = gguf ? gguf_arch_names : arch_names;
    for (int a = 0; a < MODEL_ARCH_COUNT; a++) {
        if (strlen(names[a]) == len && memcmp(names[a], name, len) == 0) {
            *out = (model_arch)a;
            return SNP_OK;
        }
    }
    if (!gguf && len == 7 && memcmp(name, "chatglm", 7) == 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "%s: model_type 'chatglm' is THUDM's remote-code layout (transformer."
                        "encoder.*, fused query_key_value); snaptp reads the transformers layout "
                        "of the same models: the -hf checkpoints (model_type glm), or a GGUF",
                        source);
    return snp_fail(SNP_ERR_UNSUPPORTED,
                    "%s: unsupported architecture '%.*s' in %s (snaptp runs %s)", source, (int)len,
                    name, field,
                    gguf ? "llama, mistral, qwen2, qwen3, chatglm, glm4"
                         : "llama, mistral, qwen2, qwen3, glm, glm4");
}

static int arch_is_glm(model_arch a) {
    return a == MODEL_ARCH_GLM || a == MODEL_ARCH_GLM4;
}

// rot_dims: the dims that rotate; a config built by hand (tests) may leave rope_dims 0.
static int rot_dims(const model_config *c) {
    return c->rope_dims > 0 ? c->rope_dims : c->head_dim;
}

// ---- GGUF -------------------------------------------------------------------

// yarn_get_mscale: YaRN's temperature term 0.1 mscale ln(scale) + 1 (1 for scale <= 1),
// HF's get_mscale, in double as Python computes it. The attention factor is this at
// mscale 1, or the ratio of two such terms (DeepSeek's mscale / mscale_all_dim), unless
// the config gives it (parse_yarn); the rope op multiplies cos and sin by it in fp32.
static double yarn_get_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static snp_status gguf_int(const gguf_file *f, const char *arch, const char *suffix, int required,
                           int fallback, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (gguf_find_key(f, key) < 0) {
        if (required)
            return snp_fail(SNP_ERR_FORMAT, "gguf: %s: metadata key '%s' is missing", gguf_path(f),
                            key);
        *out = fallback;
        return SNP_OK;
    }
    int64_t v;
    TRY(gguf_get_i64(f, key, &v));
    if (v <= 0 || v > (1 << 30))
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: metadata key '%s' = %lld is out of range",
                        gguf_path(f), key, (long long)v);
    *out = (int)v;
    return SNP_OK;
}

static snp_status gguf_float(const gguf_file *f, const char *arch, const char *suffix,
                             float fallback, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (gguf_find_key(f, key) < 0) {
        *out = fallback;
        return SNP_OK;
    }
    return gguf_get_f32(f, key, out);
}

// gguf_rope_scaling: `<arch>.rope.scaling.*` as llama.cpp's converter writes it. yarn
// carries factor, original_context_length and optionally yarn_beta_fast/slow and
// attn_factor (llama.cpp multiplies its own 0.1 ln(factor) + 1 by it, and so do we).
// llama3 scaling is not a type here: it lives in the tensor rope_freqs.weight,
// which the model loader applies (model_load). dynamic NTK has no GGUF form.
static snp_status gguf_rope_scaling(const gguf_file *f, const char *arch, model_config *c) {
    char key[128];
    c->rope_scaling = ROPE_SCALING_NONE;
    c->rope_attn_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (gguf_find_key(f, key) < 0) return SNP_OK;
    gguf_str type;
    TRY(gguf_get_str(f, key, &type));
    if (type.len == 4 && memcmp(type.ptr, "none", 4) == 0) return SNP_OK;
    if (!(type.len == 4 && memcmp(type.ptr, "yarn", 4) == 0))
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "gguf: %s: %s = '%.*s' is not supported (snaptp reads none, yarn)",
                        gguf_path(f), key, (int)type.len, type.ptr);
    c->rope_scaling = ROPE_SCALING_YARN;
    TRY(gguf_float(f, arch, "rope.scaling.factor", 0.0f, &c->rope_factor));
    if (!(c->rope_factor >= 1.0f) || !isfinite(c->rope_factor))
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %s.rope.scaling.factor = %g: yarn needs a factor >= 1",
                        gguf_path(f), arch, (double)c->rope_factor);
    TRY(gguf_int(f, arch, "rope.scaling.original_context_length", 0, c->n_ctx,
                 &c->rope_original_ctx));
    TRY(gguf_float(f, arch, "rope.scaling.yarn_beta_fast", 32.0f, &c->rope_beta_fast));
    TRY(gguf_float(f, arch, "rope.scaling.yarn_beta_slow", 1.0f, &c->rope_beta_slow));
    if (!(c->rope_beta_fast > 0) || !(c->rope_beta_slow > 0))
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %s.rope.scaling.yarn_beta_fast %g / yarn_beta_slow %g must be "
                        "positive",
                        gguf_path(f), arch, (double)c->rope_beta_fast, (double)c->rope_beta_slow);
    float attn = 1.0f;
    TRY(gguf_float(f, arch, "rope.scaling.attn_factor", 1.0f, &attn));
    c->rope_attn_scale = (float)(attn * yarn_get_mscale(c->rope_factor, 1.0));
    c->rope_yarn_truncate = 1;
    double ctx = (double)c->rope_original_ctx * c->rope_factor; // as for config.json
    if (ctx > (double)c->n_ctx) c->n_ctx = ctx > (double)(1 << 30) ? (1 << 30) : (int)ctx;
    return SNP_OK;
}

snp_status model_config_from_gguf(const gguf_file *f, model_config *out) {
    model_config c = {0};
    gguf_str arch_str;
    TRY(gguf_get_str(f, "general.architecture", &arch_str));
    TRY(arch_from_name(arch_str.ptr, arch_str.len, gguf_path(f), "general.architecture", 1,
                       &c.arch));
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)arch_str.len, arch_str.ptr);

    TRY(gguf_int(f, arch, "block_count", 1, 0, &c.n_layers));
    TRY(gguf_int(f, arch, "embedding_length", 1, 0, &c.n_embd));
    TRY(gguf_int(f, arch, "feed_forward_length", 1, 0, &c.n_ff));
    TRY(gguf_int(f, arch, "attention.head_count", 1, 0, &c.n_heads));
    TRY(gguf_int(f, arch, "attention.head_count_kv", 0, c.n_heads, &c.n_kv_heads));
    TRY(gguf_int(f, arch, "context_length", 1, 0, &c.n_ctx));
    int key_length = 0;
    char key_length_key[128];
    snprintf(key_length_key, sizeof key_length_key, "%s.attention.key_length", arch);
    if (gguf_find_key(f, key_length_key) < 0 && c.n_embd % c.n_heads != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: the hidden size %d (%s.embedding_length) is not a multiple of the %d "
                        "attention heads (%s.attention.head_count), and no %s.attention.key_length "
                        "gives the head size",
                        gguf_path(f), c.n_embd, arch, c.n_heads, arch, arch);
    TRY(gguf_int(f, arch, "attention.key_length", 0, c.n_embd / c.n_heads, &key_length));
    c.head_dim = key_length;
    int rope_dims = 0;
    TRY(gguf_int(f, arch, "rope.dimension_count", 0, c.head_dim, &rope_dims));
    // Partial rotary (GLM: half of each head) is the first rope_dims dims, as ggml's rope.
    if (rope_dims > c.head_dim || rope_dims % 2 != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %s.rope.dimension_count = %d: the rotary dims must be even and "
                        "at most the head size %d",
                        gguf_path(f), arch, rope_dims, c.head_dim);
    c.rope_dims = rope_dims;
    TRY(gguf_float(f, arch, "rope.freq_base", 10000.0f, &c.rope_theta));
    TRY(gguf_float(f, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &c.rms_eps));

    TRY(gguf_rope_scaling(f, arch, &c));

    // The llama converter permutes q/k rows so that rope rotates adjacent pairs;
    // qwen converters keep HF's halves layout; GLM rotates adjacent pairs already
    // (llama.cpp's LLAMA_ROPE_TYPE_NORM for chatglm and glm4, q/k written as HF has them).
    c.rope_mode = c.arch == MODEL_ARCH_LLAMA || c.arch == MODEL_ARCH_MISTRAL || arch_is_glm(c.arch)
                      ? ROPE_MODE_PAIRS
                      : ROPE_MODE_NEOX;
    c.qkv_bias = c.arch == MODEL_ARCH_QWEN2;
    // GLM's biases are a config choice (attention_bias, true for every GLM-4 checkpoint);
    // the converter writes them when the model has them, separately or as attn_qkv.bias.
    if (arch_is_glm(c.arch))
        c.qkv_bias = gguf_find_tensor(f, "blk.0.attn_q.bias") != NULL ||
                     gguf_find_tensor(f, "blk.0.attn_qkv.bias") != NULL;
    c.qk_norm = c.arch == MODEL_ARCH_QWEN3;
    c.post_norms = c.arch == MODEL_ARCH_GLM4;
    c.ffn_fused = arch_is_glm(c.arch); // gate_up_proj is written whole as ffn_up [C, 2F]

    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: tensor 'token_embd.weight' is missing",
                        gguf_path(f));
    if (embd->n_dims != 2 || embd->ne[0] != (uint64_t)c.n_embd || embd->ne[1] > (1u << 30))
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: tensor 'token_embd.weight' has shape [%llu, %llu], expected "
                        "[%d, n_vocab]",
                        gguf_path(f), (unsigned long long)embd->ne[0],
                        (unsigned long long)embd->ne[1], c.n_embd);
    c.n_vocab = (int)embd->ne[1];
    c.tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    TRY(model_config_validate(&c, gguf_path(f)));
    *out = c;
    return SNP_OK;
}

// ---- config.json ----------------------------------------------------------

static snp_status json_int(const cJSON *root, const char *path, const char *field, int required,
                           int fallback, int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item || cJSON_IsNull(item)) {
        if (required)
            return snp_fail(SNP_ERR_FORMAT, "config: %s: field '%s' is missing", path, field);
        *out = fallback;
        return SNP_OK;
    }
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
        item->valuedouble <= 0 || item->valuedouble > (double)(1 << 30))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field '%s' must be a positive integer", path,
                        field);
    *out = (int)item->valuedouble;
    return SNP_OK;
}

static snp_status json_float(const cJSON *root, const char *path, const char *field, float fallback,
                             float *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item || cJSON_IsNull(item)) {
        *out = fallback;
        return SNP_OK;
    }
    if (!cJSON_IsNumber(item))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field '%s' must be a number", path, field);
    *out = (float)item->valuedouble;
    return SNP_OK;
}

// json_bool: true/false, or the fallback when absent or null; "yes" or 1 is refused
// like any other value of the wrong type.
static snp_status json_bool(const cJSON *root, const char *path, const char *field, int fallback,
                            int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item || cJSON_IsNull(item)) {
        *out = fallback;
        return SNP_OK;
    }
    if (!cJSON_IsBool(item))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field '%s' must be true or false", path,
                        field);
    *out = cJSON_IsTrue(item);
    return SNP_OK;
}

static snp_status parse_yarn(const cJSON *root, const cJSON *rs, const char *path,
                             model_config *c) {
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    // The pretraining context: a top-level original_max_position_embeddings wins (Phi-3
    // style, as HF's standardize_rope_params), then rope_scaling's, then
    // max_position_embeddings.
    int orig = c->n_ctx;
    TRY(json_int(rs, path, "original_max_position_embeddings", 0, c->n_ctx, &orig));
    TRY(json_int(root, path, "original_max_position_embeddings", 0, orig, &orig));
    c->rope_original_ctx = orig;
    double f;
    if (!factor || cJSON_IsNull(factor)) {
        f = (double)c->n_ctx / (double)orig; // HF: max_position_embeddings / original
    } else if (cJSON_IsNumber(factor)) {
        f = factor->valuedouble;
    } else {
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field 'rope_scaling.factor' must be a number",
                        path);
    }
    if (!(f >= 1.0) || !isfinite(f))
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: rope_scaling.factor %g: yarn needs a finite factor >= 1", path,
                        f);
    c->rope_factor = (float)f;
    float attn = 0, mscale = 0, mscale_all = 0;
    TRY(json_float(rs, path, "attention_factor", 0.0f, &attn));
    TRY(json_float(rs, path, "mscale", 0.0f, &mscale));
    TRY(json_float(rs, path, "mscale_all_dim", 0.0f, &mscale_all));
    const cJSON *given = cJSON_GetObjectItemCaseSensitive(rs, "attention_factor");
    if (given && !cJSON_IsNull(given)) {
        if (!(attn > 0) || !isfinite(attn))
            return snp_fail(SNP_ERR_FORMAT,
                            "config: %s: rope_scaling.attention_factor %g must be positive", path,
                            (double)attn);
        c->rope_attn_scale = attn;
    } else if (mscale != 0 && mscale_all != 0) {
        c->rope_attn_scale = (float)(yarn_get_mscale(f, mscale) / yarn_get_mscale(f, mscale_all));
    } else {
        c->rope_attn_scale = (float)yarn_get_mscale(f, 1.0);
    }
    // HF: `get("beta_fast") or 32`, so 0 and null both mean the default.
    TRY(json_float(rs, path, "beta_fast", 32.0f, &c->rope_beta_fast));
    TRY(json_float(rs, path, "beta_slow", 1.0f, &c->rope_beta_slow));
    if (c->rope_beta_fast == 0) c->rope_beta_fast = 32.0f;
    if (c->rope_beta_slow == 0) c->rope_beta_slow = 1.0f;
    if (!(c->rope_beta_fast > 0) || !(c->rope_beta_slow > 0))
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: rope_scaling beta_fast %g and beta_slow %g must be positive",
                        path, (double)c->rope_beta_fast, (double)c->rope_beta_slow);
    TRY(json_bool(rs, path, "truncate", 1, &c->rope_yarn_truncate));
    // The context the scaled model serves, as vLLM derives it: original x factor.
    double ctx = (double)orig * f;
    if (ctx > (double)c->n_ctx) c->n_ctx = ctx > (double)(1 << 30) ? (1 << 30) : (int)ctx;
    return SNP_OK;
}

static snp_status parse_dynamic(const cJSON *rs, const char *path, model_config *c) {
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (!cJSON_IsNumber(factor) || !(factor->valuedouble >= 1.0) || !isfinite(factor->valuedouble))
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: rope_scaling.factor must be a number >= 1 for dynamic NTK",
                        path);
    c->rope_factor = (float)factor->valuedouble;
    // HF grows the base past max_position_embeddings (not any "original" field).
    c->rope_original_ctx = c->n_ctx;
    double ctx = (double)c->n_ctx * factor->valuedouble;
    c->n_ctx = ctx > (double)(1 << 30) ? (1 << 30) : (int)ctx;
    return SNP_OK;
}

// parse_rope_dims: partial_rotary_factor, top-level (transformers 4 checkpoints) or in
// rope_parameters (transformers 5), default 0.5 for GLM (HF's GlmConfig setdefault) and
// 1 otherwise; the rotary dims are int(head_dim x factor), as HF's rope init.
static snp_status parse_rope_dims(const cJSON *root, const char *path, model_config *c) {
    float factor = arch_is_glm(c->arch) ? 0.5f : 1.0f;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (cJSON_IsObject(rp)) TRY(json_float(rp, path, "partial_rotary_factor", factor, &factor));
    TRY(json_float(root, path, "partial_rotary_factor", factor, &factor));
    const double dims = floor((double)c->head_dim * (double)factor);
    if (!(factor > 0.0f) || !(factor <= 1.0f) || dims < 2 || (int)dims % 2 != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: partial_rotary_factor %g of head_dim %d gives %g rotary "
                        "dims: the factor must be in (0, 1] and the dims even",
                        path, (double)factor, c->head_dim, dims);
    c->rope_dims = (int)dims;
    return SNP_OK;
}

// parse_dual_chunk: dual_chunk_attention_config (Qwen2.5-7B/14B-Instruct-1M), with
// vLLM's defaults for absent fields (chunk 8192, local 1024, no length scaling).
// Its sparse_attention_* fields (MInference's sparse prefill, an approximation) are
// not read: snaptp runs the dense attention, as vLLM does without them.
static snp_status parse_dual_chunk(const cJSON *root, const char *path, model_config *c) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "dual_chunk_attention_config");
    if (!d || cJSON_IsNull(d)) return SNP_OK;
    if (!cJSON_IsObject(d))
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: field 'dual_chunk_attention_config' must be an object", path);
    const char *fields[3] = {"chunk_size", "local_size", "original_max_position_embeddings"};
    int *dst[3] = {&c->dca_chunk_size, &c->dca_local_size, &c->dca_original_ctx};
    const int fallback[3] = {8192, 1024, 0};
    for (int i = 0; i < 3; i++)
        if (json_int(d, path, fields[i], 0, fallback[i], dst[i]) != SNP_OK)
            return snp_fail(SNP_ERR_FORMAT,
                            "config: %s: field 'dual_chunk_attention_config.%s' must be a "
                            "positive integer",
                            path, fields[i]);
    if (c->dca_local_size >= c->dca_chunk_size)
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: dual_chunk_attention_config local_size %d must be below "
                        "chunk_size %d",
                        path, c->dca_local_size, c->dca_chunk_size);
    if (c->rope_scaling != ROPE_SCALING_NONE)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "config: %s: dual_chunk_attention_config with rope_scaling '%s': Dual "
                        "Chunk Attention replaces the rotary embedding, and the two together "
                        "are not defined",
                        path, model_config_rope_name(c->rope_scaling));
    return SNP_OK;
}

static snp_status parse_rope_scaling(const cJSON *root, const char *path, model_config *c) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    c->rope_scaling = ROPE_SCALING_NONE;
    c->rope_attn_scale = 1.0f;
    if (!rs || cJSON_IsNull(rs)) return SNP_OK;
    if (!cJSON_IsObject(rs))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field 'rope_scaling' must be an object", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(type))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field 'rope_scaling.rope_type' is missing",
                        path);
    if (strcmp(type->valuestring, "default") == 0) return SNP_OK;
    if (strcmp(type->valuestring, "yarn") == 0) {
        c->rope_scaling = ROPE_SCALING_YARN;
        return parse_yarn(root, rs, path, c);
    }
    if (strcmp(type->valuestring, "dynamic") == 0) {
        c->rope_scaling = ROPE_SCALING_DYNAMIC;
        return parse_dynamic(rs, path, c);
    }
    if (strcmp(type->valuestring, "llama3") != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "config: %s: rope_scaling.rope_type '%s' is not supported (snaptp "
                        "supports llama3, yarn, dynamic)",
                        path, type->valuestring);
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    TRY(json_float(rs, path, "factor", 8.0f, &c->rope_factor));
    TRY(json_float(rs, path, "low_freq_factor", 1.0f, &c->rope_low_freq_factor));
    TRY(json_float(rs, path, "high_freq_factor", 4.0f, &c->rope_high_freq_factor));
    TRY(json_int(rs, path, "original_max_position_embeddings", 1, 0, &c->rope_original_ctx));
    if (!(c->rope_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor))
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: rope_scaling factor %g, low_freq_factor %g, "
                        "high_freq_factor %g are inconsistent",
                        path, c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor);
    return SNP_OK;
}

static snp_status config_from_cjson(const cJSON *root, const char *path, model_config *out) {
    model_config c = {0};
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(type))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: field 'model_type' is missing", path);
    TRY(arch_from_name(type->valuestring, strlen(type->valuestring), path, "model_type", 0,
                       &c.arch));
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "silu") != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "config: %s: hidden_act '%s' is not supported (snaptp implements silu)",
                        path, act->valuestring);

    TRY(json_int(root, path, "num_hidden_layers", 1, 0, &c.n_layers));
    TRY(json_int(root, path, "hidden_size", 1, 0, &c.n_embd));
    TRY(json_int(root, path, "intermediate_size", 1, 0, &c.n_ff));
    TRY(json_int(root, path, "num_attention_heads", 1, 0, &c.n_heads));
    TRY(json_int(root, path, "num_key_value_heads", 0, c.n_heads, &c.n_kv_heads));
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if ((!hd || cJSON_IsNull(hd)) && c.n_embd % c.n_heads != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: hidden_size %d is not a multiple of num_attention_heads %d, "
                        "and no head_dim gives the head size",
                        path, c.n_embd, c.n_heads);
    TRY(json_int(root, path, "head_dim", 0, c.n_embd / c.n_heads, &c.head_dim));
    TRY(json_int(root, path, "vocab_size", 1, 0, &c.n_vocab));
    TRY(json_int(root, path, "max_position_embeddings", 1, 0, &c.n_ctx));
    TRY(json_float(root, path, "rms_norm_eps", 1e-6f, &c.rms_eps));
    TRY(json_float(root, path, "rope_theta", 10000.0f, &c.rope_theta));
    TRY(parse_rope_dims(root, path, &c));
    TRY(parse_rope_scaling(root, path, &c));
    // HF checkpoints keep rotate_half's layout, except GLM's rotate_half, which pairs
    // adjacent dims (x[..., 0::2], x[..., 1::2]).
    c.rope_mode = arch_is_glm(c.arch) ? ROPE_MODE_PAIRS : ROPE_MODE_NEOX;
    int attention_bias = 0, use_sw = 0;
    TRY(json_bool(root, path, "tie_word_embeddings", 0, &c.tied_embeddings));
    // GlmConfig and Glm4Config default attention_bias to true.
    TRY(json_bool(root, path, "attention_bias", arch_is_glm(c.arch), &attention_bias));
    c.qkv_bias = c.arch == MODEL_ARCH_QWEN2 || attention_bias;
    c.qk_norm = c.arch == MODEL_ARCH_QWEN3;
    c.post_norms = c.arch == MODEL_ARCH_GLM4;
    c.ffn_fused = arch_is_glm(c.arch); // mlp.gate_up_proj [2F, C], gate rows first
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    TRY(json_bool(root, path, "use_sliding_window", c.arch == MODEL_ARCH_MISTRAL, &use_sw));
    if (use_sw && cJSON_IsNumber(sw) && sw->valuedouble > 0) c.sliding_window = sw->valueint;
    TRY(parse_dual_chunk(root, path, &c));
    TRY(model_config_validate(&c, path));
    *out = c;
    return SNP_OK;
}

snp_status model_config_from_json(const char *path, model_config *out) {
    char *text = NULL;
    TRY(text_file_read(path, &text, NULL));
    snp_status st = SNP_OK;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        st = snp_fail(SNP_ERR_FORMAT, "config: %s: malformed JSON at byte %ld", path,
                      at ? (long)(at - text) : -1l);
        goto done;
    }
    TRY_GOTO(st, config_from_cjson(root, path, out), done);
done:
    cJSON_Delete(root);
    free(text);
    return st;
}

snp_status model_config_validate(const model_config *c, const char *source) {
    if (c->n_heads % c->n_kv_heads != 0)
        return snp_fail(SNP_ERR_FORMAT, "%s: %d query heads are not a multiple of %d KV heads",
                        source, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0 || c->head_dim > 512)
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: head size %d must be even and at most 512",
                        source, c->head_dim);
    if (c->rope_dims < 0 || c->rope_dims > c->head_dim || c->rope_dims % 2 != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: %d rotary dims: they must be even and at most the "
                        "head size %d",
                        source, c->rope_dims, c->head_dim);
    if (!(c->rms_eps > 0) || !isfinite(c->rms_eps))
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: the RMSNorm epsilon (rms_norm_eps, or GGUF "
                        "attention.layer_norm_rms_epsilon) is %g: it must be positive and finite",
                        source, c->rms_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: rope theta (rope_theta, or GGUF rope.freq_base) is %g: it must be "
                        "positive and finite",
                        source, c->rope_theta);
    return SNP_OK;
}

static const char *const rope_names[] = {
    [ROPE_SCALING_NONE] = "none",
    [ROPE_SCALING_LLAMA3] = "llama3",
    [ROPE_SCALING_YARN] = "yarn",
    [ROPE_SCALING_DYNAMIC] = "dynamic",
};
_Static_assert(sizeof rope_names / sizeof rope_names[0] == ROPE_SCALING_COUNT,
               "one name per rope scaling");

const char *model_config_rope_name(rope_scaling s) {
    return (unsigned)s < ROPE_SCALING_COUNT ? rope_names[s] : "?";
}

// Plain RoPE with base `base`: 1 / base ** (arange(0, D, 2).float() / D), in fp32 as
// HF (the base rounded to fp32 first, as torch does with a Python float).
static void inv_freq_plain(float base, int D, float *inv_freq) {
    for (int i = 0; i < D / 2; i++)
        inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)D);
}

// transformers' _compute_llama3_parameters: long wavelengths are divided by `factor`,
// short ones kept, the band between blended linearly.
static void inv_freq_llama3(const model_config *c, float *inv_freq) {
    const int D = rot_dims(c);
    const float old_ctx = (float)c->rope_original_ctx;
    const float low_wavelen = old_ctx / c->rope_low_freq_factor;
    const float high_wavelen = old_ctx / c->rope_high_freq_factor;
    for (int i = 0; i < D / 2; i++) {
        float f = inv_freq[i];
        float wavelen = 2.0f * (float)M_PI / f;
        float scaled = wavelen > low_wavelen ? f / c->rope_factor : f;
        int medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) {
            float smooth = (old_ctx / wavelen - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
            scaled = (1.0f - smooth) * scaled / c->rope_factor + smooth * scaled;
        }
        inv_freq[i] = scaled;
    }
}

// YaRN's dimension at which a frequency makes `rotations` turns over the original
// context (find_correction_dim), in double as HF's Python.
static double yarn_correction_dim(double rotations, int D, double base, int orig_ctx) {
    return (D * log((double)orig_ctx / (rotations * 2 * M_PI))) / (2 * log(base));
}

// transformers' _compute_yarn_parameters: each pair i blends the interpolated
// frequency (divided by factor) and the original one by a ramp that is 1 (keep the
// original: fast dims that turn beta_fast times and more) below `low` and 0 (fully
// interpolated) above `high`. Ramp and blend in fp32, bounds in double, as HF.
static void inv_freq_yarn(const model_config *c, float *inv_freq) {
    const int D = rot_dims(c); // HF: dim = head_dim x partial_rotary_factor
    const double base = c->rope_theta;
    double low = yarn_correction_dim(c->rope_beta_fast, D, base, c->rope_original_ctx);
    double high = yarn_correction_dim(c->rope_beta_slow, D, base, c->rope_original_ctx);
    if (c->rope_yarn_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0) low = 0;
    if (high > D - 1) high = D - 1;
    if (low == high) high += 0.001; // HF: prevents a division by zero
    const float f32_low = (float)low, span = (float)(high - low);
    for (int i = 0; i < D / 2; i++) {
        const float pos_freq = powf(c->rope_theta, (float)(2 * i) / (float)D);
        const float extrapolation = 1.0f / pos_freq;
        const float interpolation = 1.0f / (c->rope_factor * pos_freq);
        float ramp = ((float)i - f32_low) / span;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        const float keep = 1.0f - ramp; // inv_freq_extrapolation_factor
        inv_freq[i] = interpolation * (1.0f - keep) + extrapolation * keep;
    }
}

void model_config_inv_freq(const model_config *c, float *inv_freq) {
    if (c->rope_scaling == ROPE_SCALING_YARN) {
        inv_freq_yarn(c, inv_freq);
        return;
    }
    if (c->rope_scaling == ROPE_SCALING_DYNAMIC) {
        model_config_inv_freq_at(c, 0, inv_freq);
        return;
    }
    inv_freq_plain(c->rope_theta, rot_dims(c), inv_freq);
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) inv_freq_llama3(c, inv_freq);
}

void model_config_inv_freq_at(const model_config *c, int seq_len, float *inv_freq) {
    if (c->rope_scaling != ROPE_SCALING_DYNAMIC) {
        model_config_inv_freq(c, inv_freq);
        return;
    }
    // transformers' _compute_dynamic_ntk_parameters:
    //   base * (factor * seq_len / max_pos - (factor - 1)) ** (D / (D - 2))
    const int D = rot_dims(c), max_pos = c->rope_original_ctx;
    const double factor = c->rope_factor, theta = c->rope_theta;
    const double exponent = (double)D / (double)(D - 2);
    if (seq_len <= max_pos) {
        // Up to max_position_embeddings HF keeps the set it made at init, where
        // seq_len is a Python int: the expression runs in double (and is ~1).
        double b = theta * pow(factor * max_pos / max_pos - (factor - 1), exponent);
        inv_freq_plain((float)b, D, inv_freq);
        return;
    }
    // Past it, dynamic_rope_update passes seq_len as an int64 tensor: torch promotes
    // it to fp32, so every step of the base runs in fp32.
    float x = (float)factor * (float)seq_len;
    x = x / (float)max_pos;
    x = x - (float)(factor - 1);
    float b = (float)theta * powf(x, (float)exponent);
    inv_freq_plain(b, D, inv_freq);
}

int model_config_dca_chunk_len(const model_config *c) {
    return c->dca_chunk_size > 0 ? c->dca_chunk_size - c->dca_local_size : 0;
}

float model_config_dca_scale(const model_config *c, int seq_len) {
    if (c->dca_original_ctx <= 0 || seq_len <= 0) return 1.0f;
    const double s = 0.1 * log((double)seq_len / (double)c->dca_original_ctx) + 1.0;
    return s > 1.0 ? (float)s : 1.0f;
}
