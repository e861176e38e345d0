// cmd_qa: `snaptp qa`: a long document and a question in, the answer streamed out.
// The question goes last in the chat prompt so it falls in SnapKV's observation
// window; the memory plan is checked before any weight is loaded.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/chat_template.h"
#include "../runtime/engine.h"
#include "../runtime/memory_plan.h"
#include "../runtime/run_config.h"
#include "args.h"
#include "commands.h"
#include "progress.h"
#include "session.h"
#include "stats_json.h"
#include "text_stream.h"
#include "../runtime/text_file.h"

static int is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

// qa_user_message: the document, then the question last (inside the window).
static snp_status qa_user_message(const char *document, const char *question, char **out) {
    static const char fmt[] = "%s\n\nAnswer the question using the document above.\nQuestion: %s";
    size_t n = strlen(document) + strlen(question) + sizeof fmt;
    *out = malloc(n);
    if (!*out) return snp_fail(SNP_ERR_MEMORY, "qa: out of memory for the prompt");
    snprintf(*out, n, fmt, document, question);
    return SNP_OK;
}

static void print_stats_json(const session *s, const run_config *rc, const engine_stats *st,
                             const memory_plan *plan, const char *answer) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", s->m->path);
    cJSON_AddStringToObject(o, "backend", s->be->ops->name);
    cJSON_AddStringToObject(o, "kv_policy", rc->kv_policy);
    if (strcmp(rc->kv_policy, "snapkv") == 0) {
        cJSON_AddNumberToObject(o, "window", rc->snapkv.window);
        cJSON_AddNumberToObject(o, "budget", rc->snapkv.budget);
        cJSON_AddNumberToObject(o, "kernel", rc->snapkv.kernel);
        cJSON_AddStringToObject(o, "pooling", rc->pooling);
    }
    cJSON_AddNumberToObject(o, "prompt_tokens", st->prompt_tokens);
    cJSON_AddNumberToObject(o, "generated_tokens", st->generated_tokens);
    cJSON_AddNumberToObject(o, "prefill_s", st->prefill_s);
    cJSON_AddNumberToObject(o, "prefill_tokens_per_s", st->prefill_tokens_per_s);
    cJSON_AddNumberToObject(o, "decode_s", st->decode_s);
    cJSON_AddNumberToObject(o, "decode_tokens_per_s", st->decode_tokens_per_s);
    cJSON_AddNumberToObject(o, "kv_bytes", (double)st->kv_bytes);
    cJSON_AddNumberToObject(o, "kv_bytes_full", (double)st->kv_bytes_full);
    cJSON_AddNumberToObject(o, "planned_bytes", (double)plan->total);
    cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)memory_peak_rss_bytes());
    cJSON_AddBoolToObject(o, "stopped_by_eos", st->stopped_by_eos);
    json_add_comm_stats(o, s, st);
    cJSON_AddStringToObject(o, "answer", answer ? answer : "");
    char *js = cJSON_PrintUnformatted(o);
    if (js) printf("%s\n", js);
    free(js);
    cJSON_Delete(o);
}

// config_path_in_args: the value of --config, read before the other flags so that
// flags given on the command line override the file.
static const char *config_path_in_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0) return argv[i] + 9;
    }
    return NULL;
}

int cmd_qa(int argc, char **argv) {
    run_config rc = run_config_defaults();
    const char *config = NULL, *document_path = NULL, *question = NULL, *system = NULL;
    int json = 0, quiet = 0, no_mmap = 0;
    session s;
    snp_status st = session_init_comm(&argc, &argv, &s);
    if (st != SNP_OK) return session_report_error(&s, "qa", st);
    const char *cfg_path = config_path_in_args(argc, argv);
    if (cfg_path && (st = run_config_load(cfg_path, &rc)) != SNP_OK) {
        int code = session_report_error(&s, "qa", st);
        session_close(&s);
        return code;
    }
    const arg_spec specs[] = {
        {"--config", ARG_STRING, &config, "PATH", "runtime preset (configs/*.json); flags override it", NULL},
        {"--model", ARG_STRING, &rc.model, "PATH", "GGUF file or safetensors directory", NULL},
        {"--tokenizer", ARG_STRING, &rc.tokenizer, "PATH", "tokenizer (default: the model's)", NULL},
        {"--document", ARG_STRING, &document_path, "FILE", "the document to ask about ('-': stdin)", NULL},
        {"--question", ARG_STRING, &question, "TEXT", "the question, placed after the document", NULL},
        {"--system", ARG_STRING, &system, "TEXT", "system message", NULL},
        {"--kv-policy", ARG_STRING, &rc.kv_policy, "full|snapkv", "KV cache policy (full)", NULL},
        {"--window", ARG_INT, &rc.snapkv.window, "N", "SnapKV observation window (32)", NULL},
        {"--budget", ARG_INT, &rc.snapkv.budget, "N", "SnapKV rows kept per KV head, window included (2048)", NULL},
        {"--kernel", ARG_INT, &rc.snapkv.kernel, "N", "SnapKV pooling kernel, odd (7)", NULL},
        {"--pooling", ARG_STRING, &rc.pooling, "avg|max", "SnapKV pooling (max)", NULL},
        {"--chunk", ARG_INT, &rc.chunk, "N", "prefill chunk in tokens (512)", NULL},
        {"--max-tokens", ARG_INT, &rc.max_tokens, "N", "answer tokens at most (256)", NULL},
        {"--temperature", ARG_FLOAT, &rc.sampling.temperature, "T", "0 is greedy (default 0)", NULL},
        {"--top-k", ARG_INT, &rc.sampling.top_k, "K", "top-k sampling (0: off)", NULL},
        {"--top-p", ARG_FLOAT, &rc.sampling.top_p, "P", "nucleus sampling (1: off)", NULL},
        {"--seed", ARG_U64, &rc.sampling.seed, "N", "sampling seed (0)", NULL},
        {"--threads", ARG_INT, &rc.threads, "N", "CPU threads (default: the cores this process may run on, split between the ranks of a host; env SNAPTP_THREADS)", NULL},
        {"--no-mmap", ARG_FLAG, &no_mmap, NULL, "copy weights into memory instead of using the file's mapping", NULL},
        {"--backend", ARG_STRING, &rc.backend, "NAME", "cpu or cuda (cpu)", NULL},
        {"--mem-limit", ARG_STRING, &rc.mem_limit, "SIZE", "refuse plans over SIZE per rank (default: machine memory)", NULL},
        {"--quiet", ARG_FLAG, &quiet, NULL, "no progress line", NULL},
        {"--json", ARG_FLAG, &json, NULL, "print answer and stats as one JSON object", NULL},
    };
    int rcode = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], "qa",
                           "usage: snaptp qa --model PATH --document FILE --question TEXT [options]");
    if (rcode) {
        run_config_free(&rc);
        session_close(&s);
        return rcode == 1 ? 0 : rcode;
    }
    session_options so = {.model_path = rc.model, .tokenizer_path = rc.tokenizer,
                          .backend_name = rc.backend, .n_threads = rc.threads, .no_mmap = no_mmap,
                          .need_tokenizer = 1};
    char *document = NULL, *user = NULL, *prompt = NULL;
    int32_t *ids = NULL, *stop_ids = NULL;
    size_t n_ids = 0;
    forward_ctx *f = NULL;
    text_stream ans = {0};
    engine_request req = {.max_tokens = rc.max_tokens, .sampling = rc.sampling, .snapkv = rc.snapkv};
    memory_plan plan;
    if (!rc.model || !document_path || !question) {
        st = snp_fail(SNP_ERR_ARGUMENT, "give --model (or a --config with one), --document and --question");
        goto done;
    }
    if (rc.tp > 0 && s.comm && comm_size(s.comm) != rc.tp) {
        st = snp_fail(SNP_ERR_ARGUMENT,
                      "qa: the config asks for tp = %d ranks, the job has %d (run it with mpirun "
                      "-np %d)",
                      rc.tp, comm_size(s.comm), rc.tp);
        goto done;
    }
    TRY_GOTO(st, kv_policy_parse(rc.kv_policy, &req.policy), done);
    TRY_GOTO(st, snapkv_pooling_parse(rc.pooling, &req.snapkv.pooling), done);
    if (req.policy == KV_POLICY_SNAPKV) TRY_GOTO(st, snapkv_params_validate(&req.snapkv), done);
    if (rc.chunk <= 0) {
        st = snp_fail(SNP_ERR_ARGUMENT, "--chunk %d must be positive", rc.chunk);
        goto done;
    }
    TRY_GOTO(st, text_file_read(document_path, &document, NULL), done);
    if (is_blank(document)) {
        st = snp_fail(SNP_ERR_ARGUMENT, "qa: the document %s is empty", document_path);
        goto done;
    }
    TRY_GOTO(st, session_open_tokenizer(&so, &s), done);
    TRY_GOTO(st, qa_user_message(document, question, &user), done);
    TRY_GOTO(st, chat_template_apply(s.tok, system, user, &prompt), done);
    TRY_GOTO(st, tokenizer_encode(s.tok, prompt, strlen(prompt), 0, &ids, &n_ids), done);
    if (req.policy == KV_POLICY_SNAPKV) TRY_GOTO(st, snapkv_check_prompt(&req.snapkv, (int)n_ids), done);

    // The plan, from the config and the checkpoint's tensor sizes: no weight loaded yet.
    model_config cfg;
    uint64_t weight_bytes = 0;
    const model_shard shard = session_shard(&s);
    // Activations are fp32 on the CPU backend and bf16 on CUDA (DESIGN.md).
    const size_t act_bytes = strcmp(rc.backend, "cuda") == 0 ? 2 : 4;
    TRY_GOTO(st, model_plan_weights(rc.model, &shard, act_bytes, &cfg, &weight_bytes), done);
    if ((long)n_ids + rc.max_tokens > cfg.n_ctx) {
        st = snp_fail(SNP_ERR_ARGUMENT,
                      "qa: the prompt is %zu tokens; with --max-tokens %d it exceeds the model's "
                      "context of %d tokens",
                      n_ids, rc.max_tokens, cfg.n_ctx);
        goto done;
    }
    uint64_t limit = memory_machine_bytes();
    const char *limit_source = "the machine's memory";
    if (rc.mem_limit) {
        TRY_GOTO(st, memory_parse_size(rc.mem_limit, &limit), done);
        limit_source = "--mem-limit";
    }
    memory_plan_compute(&cfg, shard.tp_size, weight_bytes, act_bytes, (int)n_ids, rc.max_tokens, rc.chunk,
                        req.policy, &req.snapkv, &plan);
    TRY_GOTO(st, memory_plan_check(&plan, limit, limit_source), done);

    TRY_GOTO(st, session_open_model(&so, &s), done);
    stop_ids = malloc(sizeof(int32_t) * (size_t)s.m->cfg.n_vocab);
    if (!stop_ids) {
        st = snp_fail(SNP_ERR_MEMORY, "qa: out of memory");
        goto done;
    }
    for (int32_t id = 0; id < s.m->cfg.n_vocab; id++)
        if (tokenizer_is_eog(s.tok, id)) stop_ids[req.n_stop_ids++] = id;
    req.stop_ids = stop_ids;
    req.prompt = ids;
    req.n_prompt = (int)n_ids;
    TRY_GOTO(st, forward_init(s.m, rc.chunk, &f), done);
    TRY_GOTO(st, forward_set_comm(f, s.comm), done);
    req.comm = s.comm;
    progress prog;
    progress_init(&prog, !quiet && !json && session_is_root(&s));
    forward_set_progress(f, progress_update, &prog);
    text_stream_init(&ans, s.tok, !json && session_is_root(&s));
    engine_stats stats;
    st = engine_generate(f, s.m, &req, text_stream_token, &ans, &stats);
    progress_done(&prog);
    if (st == SNP_OK) st = ans.st;
    if (st != SNP_OK) goto done;
    TRY_GOTO(st, text_stream_finish(&ans), done);
    if (!session_is_root(&s)) {
        // Only rank 0 reports.
    } else if (json) {
        print_stats_json(&s, &rc, &stats, &plan, ans.text);
    } else {
        printf("\n");
        fflush(stdout); // the answer ends before the stats line on a shared terminal
        fprintf(stderr,
                "# prompt %d tokens | prefill %.2f s (%.0f tokens/s) | decode %d tokens, %.1f "
                "tokens/s | KV %.1f MiB (%s; full would be %.1f MiB) | peak RSS %.1f MiB\n",
                stats.prompt_tokens, stats.prefill_s, stats.prefill_tokens_per_s,
                stats.generated_tokens, stats.decode_tokens_per_s, stats.kv_bytes / 1048576.0,
                rc.kv_policy, stats.kv_bytes_full / 1048576.0,
                memory_peak_rss_bytes() / 1048576.0);
    }
done:
    text_stream_free(&ans);
    forward_free(f);
    free(stop_ids);
    free(ids);
    free(prompt);
    free(user);
    free(document);
    int code = st != SNP_OK ? session_report_error(&s, "qa", st) : 0;
    session_close(&s);
    run_config_free(&rc);
    return code;
}
