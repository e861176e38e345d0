// cmd_qa: `snaptp qa`: a long document and one or more questions in, the answers
// streamed out. The document is prefilled once per process and each question runs
// only its own tokens over the document's stored K/V (--kv-store DIR keeps that
// store on disk for later runs too; DESIGN.md, "Many questions, one document").
// The question goes last in the prompt so it falls in SnapKV's observation window;
// the memory plan is checked before any weight is loaded.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/engine.h"
#include "../runtime/kv_store.h"
#include "../runtime/memory_plan.h"
#include "../runtime/qa_prompt.h"
#include "../runtime/run_config.h"
#include "../runtime/snapkv_preset.h"
#include "../runtime/text_file.h"
#include "args.h"
#include "commands.h"
#include "progress.h"
#include "session.h"
#include "stats_json.h"
#include "text_stream.h"

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' && s[i] != '\f' &&
            s[i] != '\v')
            return 0;
    return 1;
}

// The questions of a run: --question flags first, then --questions FILE's lines.
typedef struct qa_questions {
    const char **v;
    int n;
    char *file_text; // the lines of --questions point into it
} qa_questions;

static snp_status questions_collect(const arg_strings *flags, const char *file, qa_questions *q) {
    memset(q, 0, sizeof *q);
    size_t n_text = 0;
    if (file) TRY(text_file_read(file, &q->file_text, &n_text));
    int cap = flags->n + 1;
    for (size_t i = 0; i < n_text; i++) cap += q->file_text[i] == '\n';
    if (!(q->v = malloc(sizeof *q->v * (size_t)cap)))
        return snp_fail(SNP_ERR_MEMORY, "qa: out of memory for the questions");
    for (int i = 0; i < flags->n; i++) q->v[q->n++] = flags->v[i];
    for (char *line = q->file_text; line && *line;) {
        char *nl = strchr(line, '\n'), *next = nl ? nl + 1 : line + strlen(line);
        if (nl) *nl = '\0';
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = '\0';
        if (!is_blank(line, len)) q->v[q->n++] = line; // blank lines separate nothing
        line = next;
    }
    if (file && q->n == flags->n)
        return snp_fail(SNP_ERR_ARGUMENT, "qa: --questions %s holds no question (one per line)", file);
    return SNP_OK;
}

static void questions_free(qa_questions *q) {
    free(q->v);
    free(q->file_text);
}

// What one question's run reports.
typedef struct qa_report {
    const char *preset;  // the SnapKV preset whose settings were used, or NULL
    const char *kv_type; // "F16", "F32", "BF16"
    int index, n_questions;
    const char *question;
    int prefix_tokens;
    const char *store_mode; // "none", "write", "read"
    kv_store_stats store;
} qa_report;

static void print_stats_json(const session *s, const run_config *rc, const engine_stats *st,
                             const memory_plan *plan, const qa_report *r, const char *answer) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", s->m->path);
    cJSON_AddStringToObject(o, "backend", s->be->ops->name);
    cJSON_AddStringToObject(o, "kv_policy", rc->kv_policy);
    if (strcmp(rc->kv_policy, "snapkv") == 0) {
        cJSON_AddNumberToObject(o, "window", rc->snapkv.window);
        cJSON_AddNumberToObject(o, "budget", rc->snapkv.budget);
        cJSON_AddNumberToObject(o, "kernel", rc->snapkv.kernel);
        cJSON_AddStringToObject(o, "pooling", rc->pooling);
        if (r->preset) cJSON_AddStringToObject(o, "snapkv_preset", r->preset);
        else cJSON_AddNullToObject(o, "snapkv_preset");
    }
    cJSON_AddStringToObject(o, "kv_dtype", r->kv_type);
    cJSON_AddNumberToObject(o, "question_index", r->index);
    cJSON_AddNumberToObject(o, "questions", r->n_questions);
    cJSON_AddStringToObject(o, "question", r->question);
    cJSON_AddNumberToObject(o, "prompt_tokens", st->prompt_tokens);
    cJSON_AddNumberToObject(o, "prefix_tokens", r->prefix_tokens);
    cJSON_AddNumberToObject(o, "prefill_tokens_run", st->prefill_tokens_run);
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
    cJSON *ks = cJSON_AddObjectToObject(o, "kv_store");
    cJSON_AddStringToObject(ks, "mode", r->store_mode);
    if (strcmp(r->store_mode, "none") != 0) {
        cJSON_AddStringToObject(ks, "path", r->store.path);
        cJSON_AddNumberToObject(ks, "bytes_written", (double)r->store.bytes_written);
        cJSON_AddNumberToObject(ks, "write_s", r->store.write_s);
        cJSON_AddNumberToObject(ks, "bytes_read", (double)r->store.bytes_read);
        cJSON_AddNumberToObject(ks, "read_s", r->store.read_s);
        cJSON_AddNumberToObject(ks, "layers_prefetched", r->store.layers_prefetched);
        cJSON_AddNumberToObject(ks, "planned_bytes", (double)plan->store_bytes);
    }
    json_add_comm_stats(o, s, st);
    cJSON_AddStringToObject(o, "answer", answer ? answer : "");
    char *js = cJSON_PrintUnformatted(o);
    if (js) printf("%s\n", js);
    fflush(stdout);
    free(js);
    cJSON_Delete(o);
}

static void print_stats_line(const run_config *rc, const engine_stats *st, const qa_report *r) {
    char where[160] = "";
    if (strcmp(r->store_mode, "read") == 0)
        snprintf(where, sizeof where, " (document %d from the KV store, %d run)", r->prefix_tokens,
                 st->prefill_tokens_run);
    else if (strcmp(r->store_mode, "write") == 0)
        snprintf(where, sizeof where, " (document %d written to the KV store)", r->prefix_tokens);
    char which[32] = "";
    if (r->n_questions > 1) snprintf(which, sizeof which, "question %d/%d | ", r->index, r->n_questions);
    char policy[160];
    if (strcmp(rc->kv_policy, "snapkv") == 0)
        snprintf(policy, sizeof policy, "snapkv budget %d, window %d, kernel %d %s%s%s",
                 rc->snapkv.budget, rc->snapkv.window, rc->snapkv.kernel, rc->pooling,
                 r->preset ? ", preset " : "", r->preset ? r->preset : "");
    else
        snprintf(policy, sizeof policy, "%s", rc->kv_policy);
    fprintf(stderr,
            "# %sprompt %d tokens%s | prefill %.2f s (%.0f tokens/s) | decode %d tokens, %.1f "
            "tokens/s | KV %.1f MiB %s (%s; full would be %.1f MiB) | peak RSS %.1f MiB\n",
            which, st->prompt_tokens, where, st->prefill_s,
            st->prefill_s > 0 ? st->prefill_tokens_run / st->prefill_s : 0.0,
            st->generated_tokens, st->decode_tokens_per_s, st->kv_bytes / 1048576.0, r->kv_type,
            policy, st->kv_bytes_full / 1048576.0, memory_peak_rss_bytes() / 1048576.0);
}

// temp_store_dir: a private directory for the store of several questions asked
// without --kv-store (removed at the end); malloc'd.
static snp_status temp_store_dir(char **out) {
    const char *tmp = getenv("TMPDIR");
    size_t n = strlen(tmp && *tmp ? tmp : "/tmp") + 32;
    char *dir = malloc(n);
    if (!dir) return snp_fail(SNP_ERR_MEMORY, "qa: out of memory");
    snprintf(dir, n, "%s/snaptp-kv.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        snp_status st = snp_fail(SNP_ERR_IO, "qa: cannot create a temporary KV store directory "
                                             "%s (set TMPDIR, or give --kv-store DIR)",
                                 dir);
        free(dir);
        return st;
    }
    *out = dir;
    return SNP_OK;
}

int cmd_qa(int argc, char **argv) {
    run_config rc = run_config_defaults();
    const char *config = NULL, *document_path = NULL, *questions_file = NULL, *system = NULL;
    const char *store_dir = NULL;
    arg_strings question_flags = {0};
    int json = 0, quiet = 0, no_mmap = 0, parse_special = 0;
    session s;
    snp_status st = session_init_comm(&argc, &argv, &s);
    if (st != SNP_OK) return session_report_error(&s, "qa", st);
    const char *cfg_path = args_find_value(argc, argv, "--config");
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
        {"--question", ARG_STRINGS, &question_flags, "TEXT", "a question, placed after the document; repeat it to ask several (the document is prefilled once)", NULL},
        {"--questions", ARG_STRING, &questions_file, "FILE", "more questions, one per line", NULL},
        {"--kv-store", ARG_STRING, &store_dir, "DIR", "keep the document's full K/V per rank in DIR; later runs with the same document skip its prefill", NULL},
        {"--system", ARG_STRING, &system, "TEXT", "system message", NULL},
        {"--parse-special", ARG_FLAG, &parse_special, NULL, "read special tokens (<|im_start|>, ...) written in the document and questions as control tokens", NULL},
        {"--kv-policy", ARG_STRING, &rc.kv_policy, "full|snapkv", "KV cache policy (snapkv)", NULL},
        {"--window", ARG_POSITIVE, &rc.snapkv.window, "N", "SnapKV observation window (the model's preset, else 32)", NULL},
        {"--budget", ARG_POSITIVE, &rc.snapkv.budget, "N", "SnapKV rows kept per KV head, window included (the model's preset, else 2048)", NULL},
        {"--kernel", ARG_POSITIVE, &rc.snapkv.kernel, "N", "SnapKV pooling kernel, odd (the model's preset, else 7; snaptp inspect shows it)", NULL},
        {"--pooling", ARG_STRING, &rc.pooling, "avg|max", "SnapKV pooling (max)", NULL},
        {"--chunk", ARG_POSITIVE, &rc.chunk, "N", "prefill chunk in tokens (512)", NULL},
        {"--max-tokens", ARG_COUNT, &rc.max_tokens, "N", "answer tokens at most (256)", NULL},
        {"--temperature", ARG_FLOAT, &rc.sampling.temperature, "T", "0 is greedy (default 0)", NULL},
        {"--top-k", ARG_COUNT, &rc.sampling.top_k, "K", "top-k sampling (0: off)", NULL},
        {"--top-p", ARG_FLOAT, &rc.sampling.top_p, "P", "nucleus sampling (1: off)", NULL},
        {"--seed", ARG_U64, &rc.sampling.seed, "N", "sampling seed (0)", NULL},
        {"--threads", ARG_POSITIVE, &rc.threads, "N", "CPU threads (default: the cores this process may run on, split between the ranks of a host; env SNAPTP_THREADS)", NULL},
        {"--no-mmap", ARG_FLAG, &no_mmap, NULL, "copy weights into memory instead of using the file's mapping", NULL},
        {"--backend", ARG_STRING, &rc.backend, "NAME", "cpu or cuda (cpu)", NULL},
        {"--kv-dtype", ARG_STRING, &rc.kv_dtype, "f16|f32|bf16", "KV cache element type (CPU: f16, f32 halves nothing but is the exact reference; CUDA: bf16)", NULL},
        {"--mem-limit", ARG_STRING, &rc.mem_limit, "SIZE", "refuse plans over SIZE per rank (default: machine memory)", NULL},
        {"--quiet", ARG_FLAG, &quiet, NULL, "no progress line", NULL},
        {"--json", ARG_FLAG, &json, NULL, "print each answer and its stats as one JSON object per line", NULL},
    };
    int rcode = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], "qa",
                           "usage: snaptp qa --model PATH --document FILE --question TEXT "
                           "[--question TEXT ...] [--kv-store DIR] [options]");
    if (rcode) {
        args_strings_free(&question_flags);
        run_config_free(&rc);
        session_close(&s);
        return rcode == 1 ? 0 : rcode;
    }
    session_options so = {.model_path = rc.model, .tokenizer_path = rc.tokenizer,
                          .backend_name = rc.backend, .n_threads = rc.threads, .no_mmap = no_mmap,
                          .kv_dtype = rc.kv_dtype,
                          .need_tokenizer = 1};
    char *document = NULL, *temp_dir = NULL;
    size_t n_document = 0;
    qa_questions qs = {0};
    qa_prompt *qp = NULL;
    int32_t **prompts = NULL;
    size_t *n_prompts = NULL;
    int32_t *stop_ids = NULL;
    forward_ctx *f = NULL;
    kv_store *store = NULL;
    text_stream ans = {0};
    engine_request req = {.max_tokens = rc.max_tokens, .sampling = rc.sampling, .snapkv = rc.snapkv};
    memory_plan plan;
    TRY_GOTO(st, questions_collect(&question_flags, questions_file, &qs), done);
    if (!rc.model || !document_path || qs.n == 0) {
        st = snp_fail(SNP_ERR_ARGUMENT,
                      "give --model (or a --config with one), --document and --question (or "
                      "--questions FILE)");
        goto done;
    }
    if (rc.tp > 0 && s.comm && comm_size(s.comm) != rc.tp) {
        st = snp_fail(SNP_ERR_ARGUMENT,
                      "qa: the config asks for tp = %d ranks, the job has %d (run it with mpirun "
                      "-np %d)",
                      rc.tp, comm_size(s.comm), rc.tp);
        goto done;
    }
    // SnapKV is what snaptp is for: qa uses it unless a config or flag says full.
    if (!rc.kv_policy) rc.kv_policy = "snapkv";
    TRY_GOTO(st, kv_policy_parse(rc.kv_policy, &req.policy), done);
    TRY_GOTO(st, snapkv_pooling_parse(rc.pooling, &req.snapkv.pooling), done);
    if (rc.chunk <= 0) {
        st = snp_fail(SNP_ERR_ARGUMENT, "--chunk %d must be positive", rc.chunk);
        goto done;
    }
    TRY_GOTO(st, text_file_read(document_path, &document, &n_document), done);
    if (is_blank(document, n_document)) {
        st = snp_fail(SNP_ERR_ARGUMENT, "qa: the document %s is empty", document_path);
        goto done;
    }
    TRY_GOTO(st, session_open_tokenizer(&so, &s), done);
    TRY_GOTO(st, session_note_chat_template(&s, "qa"), done);
    char doc_name[512];
    snprintf(doc_name, sizeof doc_name, "the document %s", document_path);
    TRY_GOTO(st, qa_prompt_init(s.tok, system, document, n_document, doc_name, parse_special, &qp),
             done);
    int n_prefix = 0;
    const int32_t *prefix_ids = qa_prompt_prefix(qp, &n_prefix);
    // Every question's prompt before any weight is loaded: a bad question fails now.
    prompts = calloc((size_t)qs.n, sizeof *prompts);
    n_prompts = calloc((size_t)qs.n, sizeof *n_prompts);
    if (!prompts || !n_prompts) {
        st = snp_fail(SNP_ERR_MEMORY, "qa: out of memory");
        goto done;
    }
    size_t longest = 0;
    for (int i = 0; i < qs.n; i++) {
        char name[48];
        snprintf(name, sizeof name, qs.n > 1 ? "question %d" : "the question", i + 1);
        TRY_GOTO(st, qa_prompt_build(qp, qs.v[i], name, &prompts[i], &n_prompts[i]), done);
        if (n_prompts[i] > longest) longest = n_prompts[i];
    }

    // The plan, from the config and the checkpoint's tensor sizes: no weight loaded yet.
    model_config cfg;
    uint64_t weight_bytes = 0;
    const model_shard shard = session_shard(&s);
    // Activations are fp32 on the CPU backend and bf16 on CUDA (DESIGN.md).
    const size_t act_bytes = strcmp(rc.backend, "cuda") == 0 ? 2 : 4;
    TRY_GOTO(st, model_plan_weights(rc.model, &shard, act_bytes, &cfg, &weight_bytes), done);
    // The settings the config and flags left open come from the model's preset.
    const snapkv_preset *preset = snapkv_params_fill(&req.snapkv, &cfg);
    rc.snapkv = req.snapkv;
    if (req.policy == KV_POLICY_SNAPKV) {
        TRY_GOTO(st, snapkv_params_validate(&req.snapkv), done);
        for (int i = 0; i < qs.n; i++)
            TRY_GOTO(st, snapkv_check_prompt(&req.snapkv, (int)n_prompts[i]), done);
    }
    if ((long)longest + rc.max_tokens > cfg.n_ctx) {
        st = snp_fail(SNP_ERR_ARGUMENT,
                      "qa: the prompt is %zu tokens; with --max-tokens %d it exceeds the model's "
                      "context of %d tokens",
                      longest, rc.max_tokens, cfg.n_ctx);
        goto done;
    }
    uint64_t limit = memory_machine_bytes();
    const char *limit_source = "the machine's memory";
    if (rc.mem_limit) {
        TRY_GOTO(st, memory_parse_size(rc.mem_limit, &limit), done);
        limit_source = "--mem-limit";
    }
    dtype kv_type;
    TRY_GOTO(st, session_kv_type(&so, &kv_type), done);
    const size_t kv_bytes = dtype_block_bytes(kv_type);
    memory_plan_compute(&cfg, shard.tp_size, weight_bytes, act_bytes, kv_bytes, (int)longest,
                        rc.max_tokens, rc.chunk, req.policy, &req.snapkv, &plan);
    memory_plan_set_store(&plan, &cfg, shard.tp_size, kv_bytes, n_prefix);
    // A store read on a device backend goes through the prefetcher's staging.
    if ((store_dir || qs.n > 1) && strcmp(rc.backend, "cpu") != 0)
        memory_plan_add_store_staging(&plan);
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
    TRY_GOTO(st, forward_init(s.m, rc.chunk, &f), done);
    TRY_GOTO(st, forward_set_comm(f, s.comm), done);
    req.comm = s.comm;

    // Several questions share one prefill of the document through a store: the one
    // asked for, or this process's own in a temporary directory.
    if (!store_dir && qs.n > 1) {
        TRY_GOTO(st, temp_store_dir(&temp_dir), done);
        store_dir = temp_dir;
    }
    if (store_dir) {
        kv_store_identity id;
        TRY_GOTO(st, kv_store_identity_make(rc.model, s.m, s.tok, prefix_ids, n_prefix, &id), done);
        TRY_GOTO(st, kv_store_open(store_dir, &id, s.be, s.comm, temp_dir != NULL, &store), done);
    }
    progress prog;
    for (int i = 0; i < qs.n; i++) {
        forward_prefix prefix = {.n_tokens = n_prefix}; // no store: chunks aligned alike
        qa_report rep = {.preset = preset ? preset->name : NULL,
                         .kv_type = dtype_name(kv_type),
                         .index = i + 1, .n_questions = qs.n, .question = qs.v[i],
                         .prefix_tokens = n_prefix, .store_mode = "none"};
        if (store) {
            kv_store_prefix(store, &prefix);
            rep.store_mode = prefix.loaded ? "read" : "write";
        }
        req.prefix = &prefix;
        req.prompt = prompts[i];
        req.n_prompt = (int)n_prompts[i];
        progress_init(&prog, !quiet && !json && session_is_root(&s));
        forward_set_progress(f, progress_update, &prog);
        text_stream_free(&ans);
        text_stream_init(&ans, s.tok, !json && session_is_root(&s));
        if (qs.n > 1 && !json && session_is_root(&s)) {
            printf("Q%d: %s\nA%d: ", i + 1, qs.v[i], i + 1);
            fflush(stdout);
        }
        kv_store_stats before = {0};
        if (store) kv_store_get_stats(store, &before);
        engine_stats stats;
        st = engine_generate(f, s.m, &req, text_stream_token, &ans, &stats);
        progress_done(&prog);
        if (st == SNP_OK) st = ans.st;
        if (st != SNP_OK) goto done;
        TRY_GOTO(st, text_stream_finish(&ans), done);
        if (store) {
            // The first question wrote the store as its prefill ran; publish it so the
            // next questions (and later runs) read it.
            TRY_GOTO(st, kv_store_commit(store), done);
            kv_store_get_stats(store, &rep.store); // this question's share of the totals
            rep.store.bytes_written -= before.bytes_written;
            rep.store.bytes_read -= before.bytes_read;
            rep.store.write_s -= before.write_s;
            rep.store.read_s -= before.read_s;
            rep.store.layers_prefetched -= before.layers_prefetched;
        }
        if (!session_is_root(&s)) {
            // Only rank 0 reports.
        } else if (json) {
            print_stats_json(&s, &rc, &stats, &plan, &rep, ans.text);
        } else {
            printf(qs.n > 1 ? "\n\n" : "\n");
            fflush(stdout); // the answer ends before the stats line on a shared terminal
            print_stats_line(&rc, &stats, &rep);
        }
    }
done:
    text_stream_free(&ans);
    kv_store_close(store);
    if (temp_dir) rmdir(temp_dir); // kv_store_close emptied it; a failed open may not have
    free(temp_dir);
    forward_free(f);
    free(stop_ids);
    for (int i = 0; prompts && i < qs.n; i++) free(prompts[i]);
    free(prompts);
    free(n_prompts);
    qa_prompt_free(qp);
    questions_free(&qs);
    free(document);
    args_strings_free(&question_flags);
    int code = st != SNP_OK ? session_report_error(&s, "qa", st) : 0;
    session_close(&s);
    run_config_free(&rc);
    return code;
}
