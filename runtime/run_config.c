// run_config: configs/*.json onto run_config, strictly (unknown keys are errors, so a
// typo cannot silently fall back to a default).
#include "run_config.h"

#include "text_file.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

run_config run_config_defaults(void) {
    return (run_config){
        .backend = "cpu",
        .kv_policy = NULL, // the command's own: snapkv for qa, full for generate and bench
        .pooling = "max",
        .chunk = 512,
        .max_tokens = 256,
        // window, budget, kernel 0: not given; snapkv_params_fill takes them from the
        // model's preset or snaptp's defaults once the model is known.
        .snapkv = {.pooling = SNAPKV_POOL_MAX},
        .sampling = sampler_params_default(),
    };
}

typedef enum key_kind { KEY_STRING, KEY_INT, KEY_FLOAT, KEY_U64 } key_kind;

// min: the smallest value a number may take (checked here, so that a bad preset is
// reported with its file and key, not later as if a flag had been given);
// min_open: the minimum itself is excluded.
typedef struct key_spec {
    const char *key;
    key_kind kind;
    size_t offset;
    double min;
    int min_open;
} key_spec;

#define KEY(name, kind, field, ...) {name, kind, offsetof(run_config, field), __VA_ARGS__}
static const key_spec keys[] = {
    KEY("model", KEY_STRING, model, 0, 0),
    KEY("tokenizer", KEY_STRING, tokenizer, 0, 0),
    KEY("backend", KEY_STRING, backend, 0, 0),
    KEY("kv_policy", KEY_STRING, kv_policy, 0, 0),
    KEY("pooling", KEY_STRING, pooling, 0, 0),
    KEY("mem_limit", KEY_STRING, mem_limit, 0, 0),
    KEY("kv_dtype", KEY_STRING, kv_dtype, 0, 0),
    KEY("threads", KEY_INT, threads, 1, 0),
    KEY("chunk", KEY_INT, chunk, 1, 0),
    KEY("tp", KEY_INT, tp, 1, 0),
    KEY("max_tokens", KEY_INT, max_tokens, 0, 0),
    KEY("window", KEY_INT, snapkv.window, 1, 0),
    KEY("budget", KEY_INT, snapkv.budget, 1, 0),
    KEY("kernel", KEY_INT, snapkv.kernel, 1, 0),
    KEY("temperature", KEY_FLOAT, sampling.temperature, 0, 0),
    KEY("top_k", KEY_INT, sampling.top_k, 0, 0),
    KEY("top_p", KEY_FLOAT, sampling.top_p, 0, 1),
    KEY("repeat_penalty", KEY_FLOAT, sampling.repetition_penalty, 0, 1),
    KEY("seed", KEY_U64, sampling.seed, 0, 0),
};
#undef KEY

static snp_status apply_key(const char *path, const cJSON *item, run_config *cfg) {
    const key_spec *k = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !k; i++)
        if (strcmp(keys[i].key, item->string) == 0) k = &keys[i];
    if (!k) {
        if (item->string[0] == '_') return SNP_OK; // "_comment" and friends
        return snp_fail(SNP_ERR_FORMAT, "config: %s: unknown key '%s'", path, item->string);
    }
    char *field = (char *)cfg + k->offset;
    if (k->kind == KEY_STRING) {
        if (!cJSON_IsString(item))
            return snp_fail(SNP_ERR_FORMAT, "config: %s: '%s' must be a string", path, k->key);
        // Presets are shared between users: "~/" names the running user's home.
        const char *home = getenv("HOME");
        if (strncmp(item->valuestring, "~/", 2) == 0 && home) {
            size_t n = strlen(home) + strlen(item->valuestring);
            char *expanded = malloc(n);
            if (!expanded) return snp_fail(SNP_ERR_MEMORY, "config: out of memory");
            snprintf(expanded, n, "%s%s", home, item->valuestring + 1);
            char *set = cJSON_SetValuestring((cJSON *)item, expanded);
            free(expanded);
            if (!set) return snp_fail(SNP_ERR_MEMORY, "config: out of memory");
        }
        *(const char **)field = item->valuestring;
        return SNP_OK;
    }
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: '%s' must be a number", path, k->key);
    const double v = item->valuedouble;
    if (k->min_open ? !(v > k->min) : !(v >= k->min))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: '%s' is %g; it must be %s %g", path, k->key,
                        v, k->min_open ? "more than" : "at least", k->min);
    if (k->kind == KEY_FLOAT) {
        *(float *)field = (float)v;
        return SNP_OK;
    }
    // An int key stops at INT_MAX: a larger value would not survive the conversion
    // (undefined behaviour, found by tests/fuzz/fuzz_config).
    const double lo = k->kind == KEY_U64 ? 0 : -2147483648.0;
    const double hi = k->kind == KEY_U64 ? 2147483647.0 * 4 : 2147483647.0;
    if (v != floor(v))
        return snp_fail(SNP_ERR_FORMAT, "config: %s: '%s' must be an integer, got %g", path, k->key,
                        v);
    if (v < lo || v > hi)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: '%s' must be an integer from %.0f to %.0f, got %.0f",
                        path, k->key, lo, hi, v);
    if (k->kind == KEY_U64) *(uint64_t *)field = (uint64_t)v;
    else *(int *)field = (int)v;
    return SNP_OK;
}

// check_values: the choices and the relations between keys that the file sets, named
// as keys of the file (flags given later may still override them).
static snp_status check_values(const char *path, const cJSON *root, const run_config *cfg) {
    if (cfg->kv_policy && strcmp(cfg->kv_policy, "full") != 0 && strcmp(cfg->kv_policy, "snapkv") != 0)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: 'kv_policy' is '%s'; it must be full or snapkv",
                        path, cfg->kv_policy);
    if (strcmp(cfg->pooling, "avg") != 0 && strcmp(cfg->pooling, "max") != 0)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: 'pooling' is '%s'; it must be avg or max", path,
                        cfg->pooling);
    if (cfg->kv_dtype && strcmp(cfg->kv_dtype, "f16") != 0 && strcmp(cfg->kv_dtype, "f32") != 0 &&
        strcmp(cfg->kv_dtype, "bf16") != 0)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: 'kv_dtype' is '%s'; it must be f16, f32 or bf16",
                        path, cfg->kv_dtype);
    if (cJSON_GetObjectItemCaseSensitive(root, "top_p") && cfg->sampling.top_p > 1)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: 'top_p' is %g; it must be at most 1", path,
                        cfg->sampling.top_p);
    if (cJSON_GetObjectItemCaseSensitive(root, "kernel") && cfg->snapkv.kernel % 2 == 0)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: 'kernel' is %d; it must be odd", path,
                        cfg->snapkv.kernel);
    // Both given: a budget not above the window is the file's mistake. One of them
    // alone is checked once the model's preset fills the other (snapkv_params_fill).
    const int both = cJSON_GetObjectItemCaseSensitive(root, "budget") &&
                     cJSON_GetObjectItemCaseSensitive(root, "window");
    if (both && (!cfg->kv_policy || strcmp(cfg->kv_policy, "snapkv") == 0) &&
        cfg->snapkv.budget <= cfg->snapkv.window)
        return snp_fail(SNP_ERR_FORMAT,
                        "config: %s: 'budget' %d must be larger than 'window' %d (the budget "
                        "counts the window)",
                        path, cfg->snapkv.budget, cfg->snapkv.window);
    return SNP_OK;
}

snp_status run_config_load(const char *path, run_config *cfg) {
    if (cfg->storage)
        return snp_fail(SNP_ERR_ARGUMENT, "config: %s: only one --config file can be given", path);
    snp_status st = SNP_OK;
    char *text = NULL;
    cJSON *root = NULL;
    TRY(text_file_read(path, &text, NULL));
    root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        st = snp_fail(SNP_ERR_FORMAT, "config: %s: malformed JSON%s%ld", path,
                      at ? " at byte " : "", at ? (long)(at - text) : 0l);
        goto done;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) TRY_GOTO(st, apply_key(path, item, cfg), done);
    TRY_GOTO(st, check_values(path, root, cfg), done);
    cfg->storage = root;
    root = NULL;
done:
    cJSON_Delete(root);
    free(text);
    return st;
}

void run_config_free(run_config *cfg) {
    cJSON_Delete((cJSON *)cfg->storage);
    cfg->storage = NULL;
}
