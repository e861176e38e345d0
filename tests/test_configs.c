// test_configs: every preset in configs/ loads with run_config_load and holds valid
// settings (policy, pooling, SnapKV parameters, sampling), so a typo in a shipped
// preset fails here rather than in a user's run; and the loader's strictness:
// unknown keys and wrong types are refused naming the file and key.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/engine.h"
#include "../runtime/run_config.h"
#include "../runtime/sampler.h"
#include "../runtime/snapkv.h"
#include "../runtime/snapkv_preset.h"
#include "support/test_support.h"

static void check_preset(test_counts *tc, const char *path) {
    run_config rc = run_config_defaults();
    snp_status st = run_config_load(path, &rc);
    if (test_check(tc, st == SNP_OK, "%s: %s", path, snp_error())) {
        kv_policy policy;
        snapkv_pooling pooling;
        sampler *s = NULL;
        test_check(tc, rc.model != NULL, "%s: no model", path);
        test_check(tc, kv_policy_parse(rc.kv_policy, &policy) == SNP_OK, "%s: %s", path, snp_error());
        test_check(tc, snapkv_pooling_parse(rc.pooling, &pooling) == SNP_OK, "%s: %s", path,
                   snp_error());
        rc.snapkv.pooling = pooling;
        // What a preset leaves open, the model's SnapKV preset or snaptp's defaults fill
        // (no model here: the defaults).
        const model_config no_model = {0};
        snapkv_params_fill(&rc.snapkv, &no_model);
        test_check(tc, snapkv_params_validate(&rc.snapkv) == SNP_OK, "%s: %s", path, snp_error());
        test_check(tc, sampler_init(&rc.sampling, 16, &s) == SNP_OK, "%s: %s", path, snp_error());
        test_check(tc, rc.chunk > 0 && rc.max_tokens > 0, "%s: chunk and max_tokens", path);
        sampler_free(s);
        if (strstr(path, "smollm2")) { // the SmolLM2 preset's kernel, under the file's budget
            snapkv_params p = rc.snapkv;
            p.kernel = 0;
            const model_config smollm2 = {.arch = MODEL_ARCH_LLAMA, .n_layers = 30, .n_embd = 576,
                                          .n_heads = 9, .n_kv_heads = 3};
            const snapkv_preset *pre = snapkv_params_fill(&p, &smollm2);
            test_check(tc, pre && p.kernel == 31 && p.budget == rc.snapkv.budget,
                       "%s: SmolLM2's shape gets preset %s, kernel %d, budget %d", path,
                       pre ? pre->name : "none", p.kernel, p.budget);
        }
        printf("  %s: model %s, backend %s, kv %s (w %d, C %d, k %d, %s)\n", path, rc.model,
               rc.backend, rc.kv_policy, rc.snapkv.window, rc.snapkv.budget, rc.snapkv.kernel,
               rc.pooling);
    }
    run_config_free(&rc);
}

static void check_refusal(test_counts *tc, const char *text, const char *want) {
    const char *path = "/tmp/snaptp_test_config.json";
    FILE *fp = fopen(path, "w");
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
    run_config rc = run_config_defaults();
    snp_status st = run_config_load(path, &rc);
    test_check(tc, st != SNP_OK && strstr(snp_error(), want) && strstr(snp_error(), path),
               "config %s: expected an error naming '%s', got: %s", text, want,
               st == SNP_OK ? "success" : snp_error());
    run_config_free(&rc);
    remove(path);
}

int main(void) {
    test_counts tc = {0};
    char dir[4000];
    test_source_path(dir, sizeof dir, "configs");
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        check_preset(&tc, path);
        n++;
    }
    if (d) closedir(d);
    test_check(&tc, n >= 2, "expected presets in %s, found %d", dir, n);
    check_refusal(&tc, "{\"budgte\": 1024}", "budgte");
    check_refusal(&tc, "{\"budget\": \"1024\"}", "budget");
    check_refusal(&tc, "{\"window\": 3.5}", "window");
    check_refusal(&tc, "{\"model\": \"x\",", "malformed JSON");
    // Past INT_MAX an int key would be converted with undefined behaviour (the input
    // tests/fuzz/regress/config/run_config_int_over_int_max, found by fuzz_config).
    check_refusal(&tc, "{\"max_tokens\": 6222222224}", "'max_tokens' must be an integer from");
    check_refusal(&tc, "{\"chunk\": 2147483648}", "'chunk' must be an integer from");
    return test_finish(&tc, "test_configs");
}
