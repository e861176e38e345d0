// cmd_generate: `snaptp generate`: one prompt in, streamed text out, then stats
// (a summary line on stderr, or a JSON object on stdout with --json). Like llama-cli,
// a model that ships a chat template gets the prompt as a user turn unless --raw
// asks for plain completion: an instruct model given bare text often ends its turn
// at once.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/chat_template.h"
#include "../runtime/engine.h"
#include "../runtime/snapkv_preset.h"
#include "args.h"
#include "commands.h"
#include "session.h"
#include "stats_json.h"
#include "text_stream.h"
#include "../runtime/text_file.h"

// build_prompt: the prompt text, through the chat template when asked.
static snp_status build_prompt(const tokenizer *tok, const char *prompt, int chat,
                               const char *system, char **out) {
    if (chat) return chat_template_apply(tok, system, prompt, out);
    *out = strdup(prompt);
    if (!*out) return snp_fail(SNP_ERR_MEMORY, "out of memory");
    return SNP_OK;
}

// How the prompt was given to the model, for the stats line and --json.
typedef struct prompt_format {
    int chat;           // 1: through a chat template
    const char *family; // its family ("chatml", "llama3", ...) when chat
    const char *source; // "model" (its own template) or "assumed" (from the vocabulary)
} prompt_format;

static void print_json(const session *s, const engine_stats *st, const char *text,
                       kv_policy policy, const snapkv_params *snap, const char *preset,
                       const prompt_format *pf) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", s->m->path);
    cJSON_AddStringToObject(o, "backend", s->be->ops->name);
    cJSON_AddStringToObject(o, "prompt_format", pf->chat ? "chat" : "raw");
    if (pf->chat) cJSON_AddStringToObject(o, "chat_template", pf->family);
    else cJSON_AddNullToObject(o, "chat_template");
    cJSON_AddStringToObject(o, "kv_policy", kv_policy_name(policy));
    if (policy == KV_POLICY_SNAPKV) {
        cJSON_AddNumberToObject(o, "window", snap->window);
        cJSON_AddNumberToObject(o, "budget", snap->budget);
        cJSON_AddNumberToObject(o, "kernel", snap->kernel);
        cJSON_AddStringToObject(o, "pooling", snapkv_pooling_name(snap->pooling));
        if (preset) cJSON_AddStringToObject(o, "snapkv_preset", preset);
        else cJSON_AddNullToObject(o, "snapkv_preset");
    }
    cJSON_AddStringToObject(o, "kv_dtype", dtype_name(s->be->ops->kv_type(s->be->ctx)));
    cJSON_AddNumberToObject(o, "prompt_tokens", st->prompt_tokens);
    cJSON_AddNumberToObject(o, "generated_tokens", st->generated_tokens);
    cJSON_AddNumberToObject(o, "load_s", s->load_s);
    cJSON_AddNumberToObject(o, "prefill_s", st->prefill_s);
    cJSON_AddNumberToObject(o, "prefill_tokens_per_s", st->prefill_tokens_per_s);
    cJSON_AddNumberToObject(o, "decode_s", st->decode_s);
    cJSON_AddNumberToObject(o, "decode_tokens_per_s", st->decode_tokens_per_s);
    cJSON_AddNumberToObject(o, "kv_bytes", (double)st->kv_bytes);
    cJSON_AddNumberToObject(o, "weight_bytes", (double)s->m->weight_bytes);
    json_add_comm_stats(o, s, st);
    cJSON_AddBoolToObject(o, "stopped_by_eos", st->stopped_by_eos);
    cJSON_AddStringToObject(o, "text", text ? text : "");
    char *js = cJSON_PrintUnformatted(o);
    if (js) printf("%s\n", js);
    free(js);
    cJSON_Delete(o);
}

int cmd_generate(int argc, char **argv) {
    session_options so = {.backend_name = "cpu", .need_tokenizer = 1};
    const char *prompt = NULL, *prompt_file = NULL, *system = NULL;
    int chat = 0, raw = 0, json = 0, max_tokens = 256, chunk = 512;
    sampler_params sp = sampler_params_default();
    const char *policy_name = "full", *pooling = "max";
    snapkv_params snap = {0}; // 0: from the model's preset (snapkv_params_fill)
    const arg_spec specs[] = {
        {"--model", ARG_STRING, &so.model_path, "PATH", "GGUF file or safetensors directory", NULL},
        {"--tokenizer", ARG_STRING, &so.tokenizer_path, "PATH",
         "tokenizer.json or GGUF (default: the model's)", NULL},
        {"--prompt", ARG_STRING, &prompt, "TEXT", "the prompt", NULL},
        {"--prompt-file", ARG_STRING, &prompt_file, "PATH", "read the prompt from a file", NULL},
        {"--chat", ARG_FLAG, &chat, NULL, "the prompt is a user turn in the chat template (the default when the model has one; with none, the family its vocabulary implies)", NULL},
        {"--raw", ARG_FLAG, &raw, NULL, "plain completion: the prompt as it is, no chat template", NULL},
        {"--no-chat", ARG_FLAG, &raw, NULL, "the same as --raw", NULL},
        {"--system", ARG_STRING, &system, "TEXT", "system message (chat only)", NULL},
        {"--max-tokens", ARG_COUNT, &max_tokens, "N", "tokens to generate at most (256)", NULL},
        {"--temperature", ARG_FLOAT, &sp.temperature, "T", "0 is greedy (default 0)", NULL},
        {"--top-k", ARG_COUNT, &sp.top_k, "K", "keep the K most likely tokens (0: off)", NULL},
        {"--top-p", ARG_FLOAT, &sp.top_p, "P", "nucleus sampling mass (1: off)", NULL},
        {"--repeat-penalty", ARG_FLOAT, &sp.repetition_penalty, "R",
         "penalize tokens seen in the last 64 (1: off)", NULL},
        {"--seed", ARG_U64, &sp.seed, "N", "sampling seed (0)", NULL},
        {"--threads", ARG_POSITIVE, &so.n_threads, "N", "CPU threads (default: the cores this process may run on, split between the ranks of a host; env SNAPTP_THREADS)", NULL},
        {"--no-mmap", ARG_FLAG, &so.no_mmap, NULL, "copy weights into memory instead of using the file's mapping", NULL},
        {"--backend", ARG_STRING, &so.backend_name, "NAME", "cpu or cuda (default cpu)", NULL},
        {"--kv-dtype", ARG_STRING, &so.kv_dtype, "f16|f32|bf16", "KV cache element type (CPU: f16, f32 halves nothing but is the exact reference; CUDA: bf16)", NULL},
        {"--chunk", ARG_POSITIVE, &chunk, "N", "prefill chunk in tokens (512)", NULL},
        {"--kv-policy", ARG_STRING, &policy_name, "full|snapkv", "KV cache policy (full)", NULL},
        {"--window", ARG_POSITIVE, &snap.window, "N", "SnapKV observation window (the model's preset, else 32)", NULL},
        {"--budget", ARG_POSITIVE, &snap.budget, "N", "SnapKV rows kept per KV head (the model's preset, else 2048)", NULL},
        {"--kernel", ARG_POSITIVE, &snap.kernel, "N", "SnapKV pooling kernel, odd (the model's preset, else 7)", NULL},
        {"--pooling", ARG_STRING, &pooling, "avg|max", "SnapKV pooling (max)", NULL},
        {"--json", ARG_FLAG, &json, NULL, "print text and stats as one JSON object", NULL},
    };
    const int n_specs = sizeof specs / sizeof specs[0];
    int rc = args_parse(argc, argv, specs, n_specs, "generate",
                        "usage: snaptp generate --model PATH (--prompt TEXT | --prompt-file PATH) "
                        "[options]");
    if (rc) return rc == 1 ? 0 : rc;
    if (!so.model_path || (!prompt && !prompt_file) || (prompt && prompt_file)) {
        fprintf(stderr, "snaptp generate: give --model and one of --prompt / --prompt-file\n");
        return 2;
    }
    if (chat && raw) {
        fprintf(stderr, "snaptp generate: --chat and --raw (--no-chat) contradict each other\n");
        return 2;
    }
    if (raw && system) {
        fprintf(stderr, "snaptp generate: --system needs the chat template; drop --raw\n");
        return 2;
    }

    session s;
    snp_status st = session_init_comm(&argc, &argv, &s);
    if (st != SNP_OK) return session_report_error(&s, "generate", st);
    char *file_text = NULL, *prompt_text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    forward_ctx *f = NULL;
    text_stream out = {0};
    int32_t *stop_ids = NULL;
    int n_stop = 0;
    kv_policy policy;
    TRY_GOTO(st, kv_policy_parse(policy_name, &policy), done);
    TRY_GOTO(st, snapkv_pooling_parse(pooling, &snap.pooling), done);
    TRY_GOTO(st, session_open(&so, &s), done);
    const snapkv_preset *preset = snapkv_params_fill(&snap, &s.m->cfg);
    if (policy == KV_POLICY_SNAPKV) TRY_GOTO(st, snapkv_params_validate(&snap), done);
    // Chat unless --raw, when the model has a template or --chat asks for one anyway.
    prompt_format pf = {.chat = !raw && (chat || tokenizer_chat_template(s.tok) != NULL)};
    if (pf.chat) {
        TRY_GOTO(st, chat_template_family(s.tok, &pf.family), done);
        pf.source = tokenizer_chat_template(s.tok) ? "model" : "assumed";
    }
    if (prompt_file) {
        size_t n_file = 0;
        TRY_GOTO(st, text_file_read(prompt_file, &file_text, &n_file), done);
        // The prompt is handled as a C string from here on: a NUL would silently cut it.
        const char *nul = memchr(file_text, '\0', n_file);
        if (nul) {
            st = snp_fail(SNP_ERR_ARGUMENT,
                          "generate: --prompt-file %s holds a NUL byte at byte offset %zu: a "
                          "prompt is text",
                          prompt_file, (size_t)(nul - file_text));
            goto done;
        }
        prompt = file_text;
    }
    if (pf.chat) TRY_GOTO(st, session_note_chat_template(&s, "generate"), done);
    TRY_GOTO(st, build_prompt(s.tok, prompt, pf.chat, system, &prompt_text), done);
    // A chat template writes its own BOS when the model wants one.
    TRY_GOTO(st,
             tokenizer_encode(s.tok, prompt_text, strlen(prompt_text), pf.chat ? 0 : -1, &ids,
                              &n_ids),
             done);
    stop_ids = malloc(sizeof(int32_t) * (size_t)s.m->cfg.n_vocab);
    if (!stop_ids) {
        st = snp_fail(SNP_ERR_MEMORY, "out of memory");
        goto done;
    }
    for (int32_t id = 0; id < s.m->cfg.n_vocab; id++)
        if (tokenizer_is_eog(s.tok, id)) stop_ids[n_stop++] = id;
    TRY_GOTO(st, forward_init(s.m, chunk, &f), done);
    TRY_GOTO(st, forward_set_comm(f, s.comm), done);
    text_stream_init(&out, s.tok, !json && session_is_root(&s));
    const engine_request req = {
        .comm = s.comm,
        .policy = policy,
        .snapkv = snap,
        .prompt = ids,
        .n_prompt = (int)n_ids,
        .max_tokens = max_tokens,
        .sampling = sp,
        .stop_ids = stop_ids,
        .n_stop_ids = n_stop,
    };
    engine_stats stats;
    st = engine_generate(f, s.m, &req, text_stream_token, &out, &stats);
    if (st == SNP_OK) st = out.st;
    if (st != SNP_OK) goto done;
    TRY_GOTO(st, text_stream_finish(&out), done);
    if (!session_is_root(&s)) {
        // Only rank 0 reports.
    } else if (json) {
        print_json(&s, &stats, out.text, policy, &snap, preset ? preset->name : NULL, &pf);
    } else {
        printf("\n");
        fflush(stdout); // the answer ends before the stats line on a shared terminal
        char format[96];
        if (pf.chat)
            snprintf(format, sizeof format, "chat template %s (%s)", pf.family,
                     strcmp(pf.source, "model") == 0 ? "the model's" : "assumed");
        else
            snprintf(format, sizeof format, "raw prompt");
        fprintf(stderr,
                "# %s | prompt %d tokens | prefill %.2f s, %.1f tokens/s | decode %d tokens, "
                "%.1f tokens/s | %s\n",
                format, stats.prompt_tokens, stats.prefill_s, stats.prefill_tokens_per_s,
                stats.generated_tokens, stats.decode_tokens_per_s,
                stats.stopped_by_eos ? "stopped at end of turn" : "stopped at --max-tokens");
    }
done:
    text_stream_free(&out);
    free(stop_ids);
    forward_free(f);
    free(ids);
    free(prompt_text);
    free(file_text);
    int code = st != SNP_OK ? session_report_error(&s, "generate", st) : 0;
    session_close(&s);
    return code;
}
