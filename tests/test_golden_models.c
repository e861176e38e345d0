// test_golden_models: the CPU forward pass against Hugging Face transformers on the
// tiny random models of tests/golden (made by tests/gen_golden_models.py): logits
// at every prompt position within 1e-4 of the logit range (fp32), then 32 greedy
// tokens decoded through the KV cache, identical, with their logits compared too.
// Three runs: with an fp32 KV cache, the weights used in place in the checkpoint's
// mapping (the default) and copied into memory (--no-mmap; in place must hold for
// the GGUF model); then with the default f16 KV cache, whose rounding of every key
// and value (2^-11 relative) gives a looser bound.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/backend.h"
#include "../kernels/cpu/cpu_backend.h"
#include "../runtime/forward.h"
#include "../runtime/kv_cache.h"
#include "../runtime/model.h"
#include "../runtime/sampler.h"
#include "support/test_support.h"

// Max |Δlogit| relative to the golden row's range (max - min), fp32 reference.
// With the f16 KV cache the worst of these models measures 1.3e-3 (mistral, 64
// tokens); the bound leaves about 2x.
static const double TOL_LOGITS_F32_KV = 1e-4, TOL_LOGITS_F16_KV = 3e-3;
static double TOL_LOGITS = TOL_LOGITS_F32_KV; // the run's bound
// A small chunk so the 64-token prompts run through the multi-chunk prefill path.
static const int PREFILL_CHUNK = 16;
enum { N_GREEDY = 32 };

// golden_floats: prompt[key] as an inline array or prompt[key + "_file"] as .bin.
static float *golden_floats(const cJSON *prompt, const char *key, const char *dir, size_t *n) {
    const cJSON *inline_item = cJSON_GetObjectItemCaseSensitive(prompt, key);
    if (inline_item) return test_json_floats(inline_item, dir, n);
    char file_key[64];
    snprintf(file_key, sizeof file_key, "%s_file", key);
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(prompt, file_key);
    if (!file) return NULL;
    cJSON *ref = cJSON_CreateObject();
    cJSON_AddStringToObject(ref, "file", cJSON_IsString(file) ? file->valuestring : "");
    float *out = test_json_floats(ref, dir, n);
    cJSON_Delete(ref);
    return out;
}

static void check_prompt(test_counts *tc, const char *name, forward_ctx *f, model *m,
                         const cJSON *prompt, const char *dir, int index) {
    const int V = m->cfg.n_vocab;
    size_t T = 0, n_golden = 0, n_greedy = 0, n_step = 0;
    int32_t *ids = test_json_ints(cJSON_GetObjectItemCaseSensitive(prompt, "ids"), &T);
    int32_t *greedy = test_json_ints(cJSON_GetObjectItemCaseSensitive(prompt, "greedy"), &n_greedy);
    float *golden = golden_floats(prompt, "logits", dir, &n_golden);
    float *step_golden = golden_floats(prompt, "greedy_logits", dir, &n_step);
    float *logits = malloc(sizeof(float) * T * (size_t)V);
    kv_cache *kv = NULL;
    if (!test_check(tc, ids && T > 0 && golden && n_golden == T * (size_t)V && greedy,
                    "%s prompt %d: golden data incomplete (T %zu, logits %zu)", name, index, T,
                    n_golden))
        goto done;
    snp_status st = kv_cache_init(m->be, m->cfg.n_layers, m->n_kv_heads_local, m->cfg.head_dim,
                                  (int)T + N_GREEDY, &kv);
    if (!test_check(tc, st == SNP_OK, "%s: kv cache: %s", name, snp_error())) goto done;
    st = forward_run(f, kv, ids, (int)T, 0, 1, logits);
    if (!test_check(tc, st == SNP_OK, "%s: forward: %s", name, snp_error())) goto done;
    double worst = 0;
    for (size_t t = 0; t < T; t++) {
        double e = test_max_rel_error(logits + t * V, golden + t * V, (size_t)V);
        if (!(e <= worst)) worst = e;
    }
    test_check(tc, worst <= TOL_LOGITS, "%s prompt %d (T=%zu): logits rel error %.3g > %.0e", name,
               index, T, worst, TOL_LOGITS);
    printf("  %-14s prompt %d  T=%-3zu prefill logits max rel err %.2e", name, index, T, worst);

    // Greedy decode through the KV cache, one token at a time.
    float *last = logits + (T - 1) * (size_t)V;
    int same = 0;
    double step_worst = 0;
    for (int i = 0; i < N_GREEDY && i < (int)n_greedy; i++) {
        if (step_golden && n_step >= (size_t)(i + 1) * V) {
            double e = test_max_rel_error(last, step_golden + (size_t)i * V, (size_t)V);
            if (!(e <= step_worst)) step_worst = e;
        }
        int32_t tok = sampler_argmax(last, V);
        if (tok != greedy[i]) {
            test_check(tc, 0, "%s prompt %d: greedy token %d is %d, HF gives %d", name, index, i,
                       tok, greedy[i]);
            break;
        }
        same++;
        if (i + 1 == N_GREEDY) break;
        st = forward_run(f, kv, &tok, 1, (int)T + i, 0, last);
        if (!test_check(tc, st == SNP_OK, "%s: decode: %s", name, snp_error())) break;
    }
    test_check(tc, same == N_GREEDY && n_greedy == N_GREEDY, "%s prompt %d: %d of %d greedy tokens match",
               name, index, same, N_GREEDY);
    if (step_golden) {
        test_check(tc, step_worst <= TOL_LOGITS, "%s prompt %d: decode logits rel error %.3g",
                   name, index, step_worst);
        printf(", decode logits %.2e", step_worst);
    }
    printf(", greedy %d/%d\n", same, N_GREEDY);
done:
    kv_cache_free(kv);
    free(ids);
    free(greedy);
    free(golden);
    free(step_golden);
    free(logits);
}

// count_borrowed: how many of layer 0's matrices and the embedding point into
// the checkpoint's mapping (cpu_backend.h's bk_weight), of how many.
static int count_borrowed(const model *m, int *n_total) {
    const layer_weights *lw = &m->layers[0];
    const bk_weight *all[] = {m->tok_embd, lw->wq, lw->wk, lw->wv, lw->wo,
                              lw->w_gate, lw->w_up, lw->w_down};
    int n = 0;
    *n_total = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < *n_total; i++)
        n += all[i]->borrowed;
    return n;
}

static void check_model(test_counts *tc, backend *be, const char *name, const char *model_path,
                        int copy_weights) {
    char golden_dir[4000], dir[4400], path[4500];
    test_source_path(golden_dir, sizeof golden_dir, "tests/golden");
    snprintf(dir, sizeof dir, "%s/%s", golden_dir, name);
    snprintf(path, sizeof path, "%s/golden.json", dir);
    cJSON *root = test_read_json(path);
    if (!test_check(tc, root != NULL, "%s: cannot read %s", name, path)) return;
    model *m = NULL;
    forward_ctx *f = NULL;
    const model_shard whole = {0, 1};
    snp_status st = model_load(model_path, be, &whole, &m);
    if (st == SNP_OK) {
        int total, borrowed = count_borrowed(m, &total);
        printf("%s: %s: %d of %d weights used in place\n", name,
               copy_weights ? "copied" : "mapped", borrowed, total);
        if (copy_weights)
            test_check(tc, borrowed == 0, "%s: --no-mmap, yet %d weights borrowed", name, borrowed);
        else if (strstr(model_path, ".gguf"))
            test_check(tc, borrowed == total, "%s: only %d of %d GGUF weights used in place", name,
                       borrowed, total);
    }
    if (test_check(tc, st == SNP_OK, "%s: load %s: %s", name, model_path, snp_error()) &&
        test_check(tc, forward_init(m, PREFILL_CHUNK, &f) == SNP_OK, "%s: %s", name, snp_error())) {
        const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(root, "prompts");
        int i = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, prompts) check_prompt(tc, name, f, m, p, dir, i++);
        test_check(tc, i > 0, "%s: no prompts in golden.json", name);
    }
    forward_free(f);
    model_free(m);
    cJSON_Delete(root);
}

int main(void) {
    test_counts tc = {0};
    char *names[64], *paths[64];
    int n = test_golden_models(names, paths, 64);
    test_check(&tc, n >= 4, "expected at least 4 golden models in tests/golden, found %d", n);
    for (int run = 0; run < 3; run++) {
        backend *be = NULL;
        const int copy = run == 1;
        const backend_options bo = {.copy_weights = copy,
                                    .kv_type = run < 2 ? KV_DTYPE_F32 : KV_DTYPE_DEFAULT};
        TOL_LOGITS = run < 2 ? TOL_LOGITS_F32_KV : TOL_LOGITS_F16_KV;
        if (!test_check(&tc, backend_open("cpu", &bo, &be) == SNP_OK, "cpu backend: %s",
                        snp_error()))
            break;
        printf("# KV cache %s, bound %.0e\n", dtype_name(be->ops->kv_type(be->ctx)), TOL_LOGITS);
        for (int i = 0; i < n; i++)
            check_model(&tc, be, names[i], paths[i], copy);
        backend_close(be);
    }
    test_free_strings(names, n);
    test_free_strings(paths, n);
    return test_finish(&tc, "test_golden_models");
}
