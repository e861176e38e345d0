// cmd_inspect: `snaptp inspect`: a model's config and what it costs in memory for
// a prompt length, without running it.
#include <stdio.h>

#include "../runtime/kv_cache.h"
#include "args.h"
#include "commands.h"
#include "session.h"

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

int cmd_inspect(int argc, char **argv) {
    session_options so = {.backend_name = "cpu"};
    int prompt_tokens = 4096, chunk = 512;
    const arg_spec specs[] = {
        {"--model", ARG_STRING, &so.model_path, "PATH", "GGUF file or safetensors directory", NULL},
        {"--prompt-tokens", ARG_INT, &prompt_tokens, "N", "prompt length to plan for (4096)", NULL},
        {"--chunk", ARG_INT, &chunk, "N", "prefill chunk in tokens (512)", NULL},
        {"--backend", ARG_STRING, &so.backend_name, "NAME", "cpu or cuda (default cpu)", NULL},
    };
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], "inspect",
                        "usage: snaptp inspect --model PATH [--prompt-tokens N]");
    if (rc) return rc == 1 ? 0 : rc;
    session s;
    snp_status st = session_open(&so, &s);
    if (st != SNP_OK) return session_report_error("inspect", st);
    const model_config *c = &s.m->cfg;
    const model *m = s.m;
    printf("model         %s\n", m->path);
    printf("architecture  %s\n", model_arch_name(c->arch));
    printf("layers        %d\n", c->n_layers);
    printf("hidden        %d (MLP %d)\n", c->n_embd, c->n_ff);
    printf("heads         %d query, %d KV, head size %d\n", c->n_heads, c->n_kv_heads,
           c->head_dim);
    printf("vocabulary    %d%s\n", c->n_vocab, c->tied_embeddings ? " (tied LM head)" : "");
    printf("context       %d tokens\n", c->n_ctx);
    printf("rope          theta %g, %s%s\n", c->rope_theta,
           c->rope_mode == ROPE_MODE_PAIRS ? "adjacent pairs" : "halves (neox)",
           c->rope_scaling == ROPE_SCALING_LLAMA3 ? ", llama3 scaling" : "");
    printf("extras        %s%s\n", c->qkv_bias ? "q/k/v bias " : "",
           c->qk_norm ? "q/k norm" : "");
    const size_t act = s.be->ops->act_bytes;
    const double kv_per_token = (double)kv_cache_bytes(s.be, c->n_layers, m->n_kv_heads_local,
                                                      c->head_dim, 1);
    const double hidden = (double)prompt_tokens * c->n_embd * act;
    const double chunk_ws = (double)chunk * act *
                            (2.0 * c->n_embd + 2.0 * m->n_heads_local * c->head_dim +
                             2.0 * m->n_kv_heads_local * c->head_dim + 2.0 * m->n_ff_local +
                             c->n_vocab);
    printf("\n# memory plan for %d prompt tokens, full KV, backend %s (MiB)\n", prompt_tokens,
           s.be->ops->name);
    printf("weights       %10.1f\n", mib((double)m->weight_bytes));
    printf("kv cache      %10.1f  (%.1f KiB per token)\n", mib(kv_per_token * prompt_tokens),
           kv_per_token / 1024.0);
    printf("hidden states %10.1f\n", mib(hidden));
    printf("workspace     %10.1f  (chunk %d)\n", mib(chunk_ws), chunk);
    printf("total         %10.1f\n",
           mib((double)m->weight_bytes + kv_per_token * prompt_tokens + hidden + chunk_ws));
    session_close(&s);
    return 0;
}
