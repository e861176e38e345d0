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
        .kv_policy = "full",
        .pooling = "max",
        .chunk = 512,
        .max_tokens = 256,
        .snapkv = snapkv_params_default(),
        .sampling = sampler_params_default(),
    };
}

typedef enum key_kind { KEY_STRING, KEY_INT, KEY_FLOAT, KEY_U64 } key_kind;

typedef struct key_spec {
    const char *key;
    key_kind kind;
    size_t offset;
} key_spec;

#define KEY(name, kind, field) {name, kind, offsetof(run_config, field)}
static const key_spec keys[] = {
    KEY("model", KEY_STRING, model),
    KEY("tokenizer", KEY_STRING, tokenizer),
    KEY("backend", KEY_STRING, backend),
    KEY("kv_policy", KEY_STRING, kv_policy),
    KEY("pooling", KEY_STRING, pooling),
    KEY("mem_limit", KEY_STRING, mem_limit),
    KEY("threads", KEY_INT, threads),
    KEY("chunk", KEY_INT, chunk),
    KEY("tp", KEY_INT, tp),
    KEY("max_tokens", KEY_INT, max_tokens),
    KEY("window", KEY_INT, snapkv.window),
    KEY("budget", KEY_INT, snapkv.budget),
    KEY("kernel", KEY_INT, snapkv.kernel),
    KEY("temperature", KEY_FLOAT, sampling.temperature),
    KEY("top_k", KEY_INT, sampling.top_k),
    KEY("top_p", KEY_FLOAT, sampling.top_p),
    KEY("repeat_penalty", KEY_FLOAT, sampling.repetition_penalty),
    KEY("seed", KEY_U64, sampling.seed),
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
    if (k->kind == KEY_FLOAT) {
        *(float *)field = (float)v;
        return SNP_OK;
    }
    if (v != floor(v) || v < (k->kind == KEY_U64 ? 0 : -2147483648.0) || v > 2147483647.0 * 4)
        return snp_fail(SNP_ERR_FORMAT, "config: %s: '%s' must be an integer, got %g", path, k->key,
                        v);
    if (k->kind == KEY_U64) *(uint64_t *)field = (uint64_t)v;
    else *(int *)field = (int)v;
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
