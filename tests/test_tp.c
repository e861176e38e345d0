// test_tp: tensor parallelism against tp = 1, run under `mpirun -np N` (tests/
// test_tp.sh; alone it is tp = 1 against itself). Every rank loads its shard and,
// as the reference, the whole model; logits of the sharded run must equal the
// whole model's within 1e-5 of the logit range, greedy tokens must be identical,
// and with SnapKV each rank's heads must keep the positions the whole model keeps
// for those heads. Failures of any rank are summed to rank 0.
//
// SNAPTP_TP_BACKEND=cuda runs it on the CUDA backend (ranks may share one GPU: the
// local rank picks the device, wrapping; SNAPTP_COMM=mpi stages all-reduces through
// host memory). bf16 rounds the partial sums before they are joined, so there the
// bounds are bf16's: 3e-2 of the logit range, each step fed tp=1's token and the
// argmax held equal where tp=1's top-2 margin is clear of that, and 90% of the
// kept positions per layer and head.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../comm/comm.h"
#include "../kernels/backend.h"
#include "../runtime/forward.h"
#include "../runtime/kv_cache.h"
#include "../runtime/model.h"
#include "../runtime/sampler.h"
#include "../runtime/snapkv.h"
#include "support/test_support.h"

// Relative to the logit range. fp32: only the summation order differs.
static const double TOL_TP_F32 = 1e-5, TOL_TP_BF16 = 3e-2;
static const double MIN_OVERLAP_BF16 = 0.90;
enum { N_GREEDY = 32, CHUNK = 16 };

// Set in main from the backend's activation type.
static double TOL_TP = 1e-5;
static int lower_precision; // 1: bf16 bounds (see the top)

typedef struct run {
    model *m;
    forward_ctx *f;
} run;

static int open_run(test_counts *tc, backend *be, comm *c, const char *path, model_shard shard,
                    run *r) {
    memset(r, 0, sizeof *r);
    snp_status st = model_load(path, be, &shard, &r->m);
    if (!test_check(tc, st == SNP_OK, "load %s as %d/%d: %s", path, shard.tp_rank, shard.tp_size,
                    snp_error()))
        return 0;
    if (!test_check(tc, forward_init(r->m, CHUNK, &r->f) == SNP_OK, "%s", snp_error())) return 0;
    return test_check(tc, forward_set_comm(r->f, shard.tp_size > 1 ? c : NULL) == SNP_OK, "%s",
                      snp_error());
}

static void close_run(run *r) {
    forward_free(r->f);
    model_free(r->m);
}

static kv_cache *new_cache(const run *r, int capacity) {
    kv_cache *kv = NULL;
    if (kv_cache_init(r->m->be, r->m->cfg.n_layers, r->m->n_kv_heads_local, r->m->cfg.head_dim,
                      capacity, &kv) != SNP_OK)
        return NULL;
    return kv;
}

// check_full: prompt logits at every position and 32 greedy tokens, sharded vs whole.
static void check_full(test_counts *tc, const char *tag, run *tp, run *ref, const int32_t *ids,
                       int T) {
    const int V = ref->m->cfg.n_vocab;
    float *a = malloc(sizeof(float) * (size_t)T * V), *b = malloc(sizeof(float) * (size_t)T * V);
    kv_cache *ka = new_cache(tp, T + N_GREEDY), *kb = new_cache(ref, T + N_GREEDY);
    int ok = a && b && ka && kb && forward_run(tp->f, ka, ids, T, 0, 1, a) == SNP_OK &&
             forward_run(ref->f, kb, ids, T, 0, 1, b) == SNP_OK;
    double worst = 0;
    int same = 0;
    for (int t = 0; ok && t < T; t++) {
        double e = test_max_rel_error(a + (size_t)t * V, b + (size_t)t * V, (size_t)V);
        if (!(e <= worst)) worst = e;
    }
    float *la = a + (size_t)(T - 1) * V, *lb = b + (size_t)(T - 1) * V;
    int clear = 0, clear_same = 0;
    for (int i = 0; ok && i < N_GREEDY; i++) {
        int32_t ta = sampler_argmax(la, V), tb = sampler_argmax(lb, V);
        if (test_argmax_clear(lb, (size_t)V, TOL_TP)) {
            clear++;
            clear_same += ta == tb;
        }
        if (ta != tb && !lower_precision) break;
        same += ta == tb;
        double e = test_max_rel_error(la, lb, (size_t)V);
        if (!(e <= worst)) worst = e;
        // bf16: both get tp=1's token, so a near-tie cannot derail the rest.
        ok = forward_run(tp->f, ka, lower_precision ? &tb : &ta, 1, T + i, 0, la) == SNP_OK &&
             forward_run(ref->f, kb, &tb, 1, T + i, 0, lb) == SNP_OK;
    }
    test_check(tc, ok || same == N_GREEDY, "%s: forward failed: %s", tag, snp_error());
    test_check(tc, worst <= TOL_TP, "%s: logits differ from tp=1 by %.3g", tag, worst);
    if (lower_precision)
        test_check(tc, clear_same == clear, "%s: argmax differs from tp=1 on %d of %d clear steps",
                   tag, clear - clear_same, clear);
    else
        test_check(tc, same == N_GREEDY, "%s: %d of %d greedy tokens equal tp=1's", tag, same,
                   N_GREEDY);
    printf("  %-34s full   logits vs tp=1 %.1e, greedy %d/%d\n", tag, worst, same, N_GREEDY);
    kv_cache_free(ka);
    kv_cache_free(kb);
    free(a);
    free(b);
}

// check_snapkv: each rank's KV heads keep what the whole model keeps for them.
static void check_snapkv(test_counts *tc, const char *tag, run *tp, run *ref, const int32_t *ids,
                         int L, int rank, int size) {
    const snapkv_params p = {.window = 8, .budget = 24, .kernel = 5, .pooling = SNAPKV_POOL_MAX};
    const model_config *c = &ref->m->cfg;
    const int kept = snapkv_rows_kept(&p, L), V = c->n_vocab;
    const int Hkvl = tp->m->n_kv_heads_local, Hkv = c->n_kv_heads;
    const int kv0 = Hkv >= size ? rank * Hkvl : rank / (size / Hkv);
    int32_t *sa = malloc(sizeof(int32_t) * (size_t)c->n_layers * Hkvl * kept);
    int32_t *sb = malloc(sizeof(int32_t) * (size_t)c->n_layers * Hkv * kept);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    kv_cache *ka = new_cache(tp, kept + 4), *kb = new_cache(ref, kept + 4);
    int ok = sa && sb && la && lb && ka && kb &&
             forward_prefill_snapkv(tp->f, ka, ids, L, &p, sa, la) == SNP_OK &&
             forward_prefill_snapkv(ref->f, kb, ids, L, &p, sb, lb) == SNP_OK;
    int differing = 0;
    double worst_overlap = 1.0;
    for (int l = 0; ok && l < c->n_layers; l++)
        for (int g = 0; g < Hkvl; g++) {
            const int32_t *x = sa + ((size_t)l * Hkvl + g) * kept;
            const int32_t *y = sb + ((size_t)l * Hkv + kv0 + g) * kept;
            int common = 0; // both ascending
            for (int i = 0, j = 0; i < kept && j < kept;) {
                if (x[i] == y[j]) common++, i++, j++;
                else if (x[i] < y[j]) i++;
                else j++;
            }
            differing += common != kept;
            if ((double)common / kept < worst_overlap) worst_overlap = (double)common / kept;
        }
    double worst = ok ? test_max_rel_error(la, lb, (size_t)V) : 1;
    for (int i = 0; ok && i < 4; i++) {
        int32_t t = sampler_argmax(lb, V);
        ok = forward_run(tp->f, ka, &t, 1, L + i, 0, la) == SNP_OK &&
             forward_run(ref->f, kb, &t, 1, L + i, 0, lb) == SNP_OK;
        double e = test_max_rel_error(la, lb, (size_t)V);
        if (!(e <= worst)) worst = e;
    }
    test_check(tc, ok, "%s: snapkv run failed: %s", tag, snp_error());
    if (lower_precision)
        test_check(tc, worst_overlap >= MIN_OVERLAP_BF16,
                   "%s: a layer/head keeps only %.0f%% of tp=1's positions", tag, 100 * worst_overlap);
    else
        test_check(tc, differing == 0, "%s: %d layer/head selections differ from tp=1", tag,
                   differing);
    test_check(tc, worst <= TOL_TP, "%s: snapkv logits differ from tp=1 by %.3g", tag, worst);
    printf("  %-34s snapkv heads %d..%d positions %s (worst overlap %.0f%%), logits vs tp=1 %.1e\n",
           tag, kv0, kv0 + Hkvl - 1, differing ? "DIFFER" : "identical", 100 * worst_overlap, worst);
    kv_cache_free(ka);
    kv_cache_free(kb);
    free(sa);
    free(sb);
    free(la);
    free(lb);
}

static void check_model(test_counts *tc, backend *be, comm *c, const char *path, const char *name,
                        int T) {
    const int rank = comm_rank(c), size = comm_size(c);
    model_config cfg;
    if (model_read_config(path, &cfg) != SNP_OK) {
        test_check(tc, 0, "%s: %s", name, snp_error());
        return;
    }
    if (cfg.n_heads % size != 0) {
        // A tp the heads do not divide must be refused at load, naming the counts.
        model *m = NULL;
        const model_shard shard = {rank, size};
        snp_status st = model_load(path, be, &shard, &m);
        char want[64];
        snprintf(want, sizeof want, "%d query heads cannot be split over tp = %d", cfg.n_heads, size);
        test_check(tc, st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), want),
                   "%s tp=%d: expected a clear refusal, got: %s", name, size, snp_error());
        printf("  %-34s refused at tp=%d: %s\n", name, size, want);
        model_free(m);
        return;
    }
    run tp, ref;
    if (open_run(tc, be, c, path, (model_shard){rank, size}, &tp) &&
        open_run(tc, be, c, path, (model_shard){0, 1}, &ref)) {
        const int V = ref.m->cfg.n_vocab;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
        for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
        char tag[96];
        snprintf(tag, sizeof tag, "%s tp=%d rank %d", name, size, rank);
        check_full(tc, tag, &tp, &ref, ids, T);
        check_snapkv(tc, tag, &tp, &ref, ids, T, rank, size);
        free(ids);
    }
    close_run(&tp);
    close_run(&ref);
}

int main(int argc, char **argv) {
    test_counts tc = {0};
    comm *c = NULL;
    if (comm_init(&argc, &argv, &c) != SNP_OK) {
        fprintf(stderr, "comm: %s\n", snp_error());
        return 1;
    }
    backend *be = NULL;
    const char *bname = getenv("SNAPTP_TP_BACKEND");
    if (!bname || !*bname) bname = "cpu";
    // On the CPU an fp32 KV cache, so tp=N must match tp=1 to fp32 rounding: the f16
    // default would round partial sums added in another order to different halves.
    const backend_options bo = {.n_threads = 1,
                                .device = comm_local_rank(c),
                                .kv_type = strcmp(bname, "cpu") == 0 ? KV_DTYPE_F32
                                                                     : KV_DTYPE_DEFAULT};
    int ok = test_check(&tc, backend_open(bname, &bo, &be) == SNP_OK, "%s: %s", bname, snp_error());
    if (ok && !be->ops->host_memory) {
        // The device the backend chose (the local rank wrapped), as session.c does.
        const int device = be->ops->device ? be->ops->device(be->ctx) : bo.device;
        ok = test_check(&tc, comm_device_setup(c, device) == SNP_OK, "comm: %s", snp_error());
    }
    if (ok) {
        lower_precision = be->ops->act_bytes < sizeof(float);
        TOL_TP = lower_precision ? TOL_TP_BF16 : TOL_TP_F32;
        if (comm_rank(c) == 0)
            printf("backend %s (comm %s): logits within %.0e of tp=1's range\n", bname,
                   comm_backend_name(c), TOL_TP);
        // The GLM models cover the fused gate_up split (each rank's gate and up columns) and,
        // at tp 4 (2 KV heads), the fused GGUF attn_qkv cut with replicated KV heads.
        const char *tiny[] = {"llama_gqa", "llama_gqa_gguf", "mistral", "qwen2_mha", "qwen3",
                              "glm",       "glm_gguf",       "glm4",    "glm4_gguf",
                              "qwen2_dca"};
        const char *file[] = {"", "/model.gguf", "", "", "", "", "/model.gguf", "", "/model.gguf", ""};
        for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++) {
            char rel[256], path[4400];
            snprintf(rel, sizeof rel, "tests/golden/%s%s", tiny[i], file[i]);
            test_source_path(path, sizeof path, rel);
            check_model(&tc, be, c, path, tiny[i], 48);
        }
        // The real model shards at tp = 3 (9 query heads, 3 KV heads).
        const char *gguf = getenv("SNAPTP_SMOLLM2_GGUF");
        if (gguf && *gguf && comm_size(c) == 3) check_model(&tc, be, c, gguf, "smollm2", 40);
    }
    backend_close(be);
    // Every rank's verdict reaches rank 0.
    float failed = (float)tc.failed;
    if (comm_size(c) > 1 && comm_all_reduce_sum_f32(c, &failed, 1) != SNP_OK) failed = 1;
    int code = 0;
    if (comm_rank(c) == 0) {
        test_counts all = tc;
        all.failed = (int)failed;
        code = test_finish(&all, "test_tp");
    } else {
        code = failed > 0;
    }
    comm_free(c);
    return code;
}
