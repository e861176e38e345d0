// cmd_inspect: `snaptp inspect`: a model's config and the per-rank memory plan of
// a request, computed from the checkpoint without loading any weight.
#include <stdio.h>
#include <string.h>

#include "../runtime/memory_plan.h"
#include "../runtime/model.h"
#include "../runtime/snapkv_preset.h"
#include "args.h"
#include "commands.h"
#include "session.h"

static void print_config(const char *path, const model_config *c) {
    printf("model         %s\n", path);
    printf("architecture  %s\n", model_arch_name(c->arch));
    printf("layers        %d\n", c->n_layers);
    printf("hidden        %d (MLP %d)\n", c->n_embd, c->n_ff);
    printf("heads         %d query, %d KV, head size %d\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("vocabulary    %d%s\n", c->n_vocab, c->tied_embeddings ? " (tied LM head)" : "");
    printf("context       %d tokens\n", c->n_ctx);
    printf("rope          theta %g, %s", c->rope_theta,
           c->rope_mode == ROPE_MODE_PAIRS ? "adjacent pairs" : "halves (neox)");
    switch (c->rope_scaling) {
    case ROPE_SCALING_LLAMA3:
        printf(", llama3 scaling (factor %g, low %g, high %g, original context %d)", c->rope_factor,
               c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_ctx);
        break;
    case ROPE_SCALING_YARN:
        printf(", yarn scaling (factor %g, original context %d, beta fast %g / slow %g, "
               "cos/sin x %.6g)",
               c->rope_factor, c->rope_original_ctx, c->rope_beta_fast, c->rope_beta_slow,
               c->rope_attn_scale);
        break;
    case ROPE_SCALING_DYNAMIC:
        printf(", dynamic NTK scaling (factor %g; the base grows past %d tokens)", c->rope_factor,
               c->rope_original_ctx);
        break;
    default:
        break;
    }
    if (c->rope_dims > 0 && c->rope_dims < c->head_dim)
        printf(", partial: the first %d of %d dims rotate", c->rope_dims, c->head_dim);
    printf("\n");
    if (c->dca_chunk_size > 0) {
        printf("attention     dual chunk (chunk %d, local %d: keys rotate within chunks of %d "
               "positions",
               c->dca_chunk_size, c->dca_local_size, model_config_dca_chunk_len(c));
        if (c->dca_original_ctx > 0)
            printf("; q.k x s^2, s = 1 + 0.1 ln(n / %d) past %d tokens", c->dca_original_ctx,
                   c->dca_original_ctx);
        printf(")\n");
    }
    const int none = !c->qkv_bias && !c->qk_norm && !c->ffn_fused && !c->post_norms;
    printf("extras        %s%s%s%s%s\n", c->qkv_bias ? "q/k/v bias " : "",
           c->qk_norm ? "q/k norm " : "", c->ffn_fused ? "fused gate_up (split at load) " : "",
           c->post_norms ? "post-attention/post-MLP norms" : "", none ? "none" : "");
}

// print_snapkv: the SnapKV settings a run of this model gets when no config or flag
// sets them, and where each comes from.
static void print_snapkv(const model_config *c, const snapkv_params *given, dtype kv_type) {
    snapkv_params p = *given;
    const snapkv_params def = snapkv_params_default();
    const snapkv_preset *used = snapkv_params_fill(&p, c), *pre = snapkv_preset_match(c);
    printf("kv cache      %s (%zu bytes per element; --kv-dtype)\n", dtype_name(kv_type),
           dtype_block_bytes(kv_type));
    printf("snapkv        window %d, budget %d, kernel %d, %s pooling\n", p.window, p.budget,
           p.kernel, snapkv_pooling_name(p.pooling));
    if (pre) {
        char sets[96] = "";
        size_t n = 0;
        if (pre->window) n += snprintf(sets + n, sizeof sets - n, " window %d", pre->window);
        if (pre->budget) n += snprintf(sets + n, sizeof sets - n, " budget %d", pre->budget);
        if (pre->kernel) snprintf(sets + n, sizeof sets - n, " kernel %d", pre->kernel);
        printf("snapkv preset %s (matched by architecture and shape):%s%s; %s\n", pre->name, sets,
               used ? "" : " (not used: the flags set these)", pre->why);
    }
    else
        printf("snapkv preset none for this shape: snaptp's defaults (window %d, budget %d, "
               "kernel %d)\n",
               def.window, def.budget, def.kernel);
}

int cmd_inspect(int argc, char **argv) {
    const char *model_path = NULL, *policy_name = "full", *pooling = "max", *backend_name = "cpu";
    const char *kv_name = NULL;
    int prompt_tokens = 4096, max_tokens = 256, chunk = 512, tp = 0;
    snapkv_params snap = {.pooling = SNAPKV_POOL_MAX}; // 0s: the model's preset fills them
    const arg_spec specs[] = {
        {"--model", ARG_STRING, &model_path, "PATH", "GGUF file or safetensors directory", NULL},
        {"--prompt-tokens", ARG_POSITIVE, &prompt_tokens, "N", "prompt length to plan for (4096)", NULL},
        {"--max-tokens", ARG_COUNT, &max_tokens, "N", "tokens to generate (256)", NULL},
        {"--chunk", ARG_POSITIVE, &chunk, "N", "prefill chunk in tokens (512)", NULL},
        {"--kv-policy", ARG_STRING, &policy_name, "full|snapkv", "KV policy (full)", NULL},
        {"--window", ARG_POSITIVE, &snap.window, "N", "SnapKV window (the model's preset, else 32)", NULL},
        {"--budget", ARG_POSITIVE, &snap.budget, "N", "SnapKV rows per KV head (the model's preset, else 2048)", NULL},
        {"--kernel", ARG_POSITIVE, &snap.kernel, "N", "SnapKV pooling kernel (the model's preset, else 7)", NULL},
        {"--pooling", ARG_STRING, &pooling, "avg|max", "SnapKV pooling (max)", NULL},
        {"--tp", ARG_POSITIVE, &tp, "N", "plan for N ranks (default: the ranks of this run)", NULL},
        {"--backend", ARG_STRING, &backend_name, "NAME", "cpu or cuda: sets the activation size", NULL},
        {"--kv-dtype", ARG_STRING, &kv_name, "f16|f32|bf16", "KV cache element type (CPU: f16, f32 halves nothing but is the exact reference; CUDA: bf16)", NULL},
    };
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], "inspect",
                        "usage: snaptp inspect --model PATH [--prompt-tokens N] [--kv-policy snapkv]");
    if (rc) return rc == 1 ? 0 : rc;
    session s;
    snp_status st = session_init_comm(&argc, &argv, &s);
    kv_policy policy = KV_POLICY_FULL;
    model_config cfg;
    uint64_t weight_bytes = 0;
    if (st != SNP_OK) goto done;
    if (!model_path) {
        st = snp_fail(SNP_ERR_ARGUMENT, "--model PATH is required");
        goto done;
    }
    TRY_GOTO(st, kv_policy_parse(policy_name, &policy), done);
    TRY_GOTO(st, snapkv_pooling_parse(pooling, &snap.pooling), done);
    model_shard shard = session_shard(&s);
    if (tp > 0) shard = (model_shard){0, tp};
    // Activations are fp32 on the CPU backend and bf16 on CUDA (DESIGN.md).
    const size_t act_bytes = strcmp(backend_name, "cuda") == 0 ? 2 : 4;
    TRY_GOTO(st, model_plan_weights(model_path, &shard, act_bytes, &cfg, &weight_bytes), done);
    const snapkv_params given = snap;
    snapkv_params_fill(&snap, &cfg);
    if (policy == KV_POLICY_SNAPKV) TRY_GOTO(st, snapkv_params_validate(&snap), done);
    memory_plan plan;
    dtype kv_type;
    const session_options kv_opt = {.backend_name = backend_name, .kv_dtype = kv_name};
    TRY_GOTO(st, session_kv_type(&kv_opt, &kv_type), done);
    memory_plan_compute(&cfg, shard.tp_size, weight_bytes, act_bytes, dtype_block_bytes(kv_type),
                        prompt_tokens, max_tokens, chunk, policy, &snap, &plan);
    if (session_is_root(&s)) {
        print_config(model_path, &cfg);
        print_snapkv(&cfg, &given, kv_type);
        printf("\n");
        memory_plan_print(stdout, &plan);
        const uint64_t machine = memory_machine_bytes();
        printf("# fits this machine's %.1f MiB: %s\n", machine / 1048576.0,
               plan.total <= machine ? "yes" : "no");
    }
done:;
    int code = st != SNP_OK ? session_report_error(&s, "inspect", st) : 0;
    session_close(&s);
    return code;
}
