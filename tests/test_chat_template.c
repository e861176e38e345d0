// test_chat_template: the real Llama 3.1-3.3, GLM-4-9B-Chat and Qwen2.5-Instruct chat templates
// (tests/data/chat_template, the Jinja text the models ship), each on a tokenizer of ../shared:
// the family is recognised, chat_template_apply equals transformers' apply_chat_template
// (golden.json, made by tests/gen_chat_template_golden.py) with and without a system message,
// the split around the user message adds up, and templates changed where snaptp relies on them
// are refused naming where they came from. Qwen2.5's template is also read from a GGUF's
// tokenizer.chat_template, and Qwen3's shipped one stays Qwen3's.
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/chat_template.h"
#include "../runtime/tokenizer.h"
#include "support/test_support.h"

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) s[n] = '\0';
    return s;
}

// load_with_template: the shared tokenizer `tok` (a folder of ../shared/tokenizers) with its
// tokenizer_config.json's chat_template replaced by `tmpl`, through a temporary directory (the
// loader reads the config beside tokenizer.json). NULL on failure, with the reason printed.
static tokenizer *load_with_template(const char *shared, const char *tok, const char *tmpl) {
    char src[4096], dir[] = "/tmp/snaptp_chat_XXXXXX", path[4200];
    if (!mkdtemp(dir)) return NULL;
    snprintf(src, sizeof src, "%s/tokenizers/%s/tokenizer_config.json", shared, tok);
    char *text = read_text(src);
    cJSON *cfg = text ? cJSON_Parse(text) : NULL;
    free(text);
    tokenizer *t = NULL;
    if (cfg) {
        if (cJSON_HasObjectItem(cfg, "chat_template")) // Llama 2's config has none
            cJSON_ReplaceItemInObject(cfg, "chat_template", cJSON_CreateString(tmpl));
        else
            cJSON_AddStringToObject(cfg, "chat_template", tmpl);
        char *out = cJSON_PrintUnformatted(cfg);
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        FILE *f = fopen(path, "wb");
        int ok = out && f && fputs(out, f) >= 0;
        if (f) fclose(f);
        free(out);
        snprintf(src, sizeof src, "%s/tokenizers/%s/tokenizer.json.gz", shared, tok);
        snprintf(path, sizeof path, "%s/tokenizer.json.gz", dir);
        if (ok && symlink(src, path) == 0) {
            snprintf(path, sizeof path, "%s/tokenizer.json.gz", dir);
            if (tokenizer_load(path, &t) != SNP_OK) printf("  load: %s\n", snp_error());
        }
    }
    cJSON_Delete(cfg);
    snprintf(path, sizeof path, "%s/tokenizer.json.gz", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
    return t;
}

// replaced: `s` with the first occurrence of `from` (every one when `all`) replaced by `to`;
// malloc'd, NULL when `from` does not occur.
static char *replaced(const char *s, const char *from, const char *to, int all) {
    size_t nf = strlen(from), nt = strlen(to), n = 0;
    for (const char *p = strstr(s, from); p; p = all ? strstr(p + nf, from) : NULL)
        n++;
    if (n == 0) return NULL;
    char *out = malloc(strlen(s) + n * nt + 1), *o = out;
    const char *p = s;
    for (const char *at = strstr(p, from); at && n--; at = strstr(p, from)) {
        memcpy(o, p, (size_t)(at - p));
        o += at - p;
        memcpy(o, to, nt);
        o += nt;
        p = at + nf;
    }
    strcpy(o, p);
    return out;
}

// with_today: `s` with "{TODAY}" replaced by today's date as strftime_now("%d %b %Y")
// writes it (transformers: datetime.now(), local time). malloc'd.
static char *with_today(const char *s) {
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%d %b %Y", &tm);
    const char *at = strstr(s, "{TODAY}");
    size_t n = strlen(s) + sizeof date;
    char *out = malloc(n);
    if (!at) {
        snprintf(out, n, "%s", s);
    } else {
        snprintf(out, n, "%.*s%s%s", (int)(at - s), s, date, at + strlen("{TODAY}"));
    }
    return out;
}

// One golden template: what snaptp must make of it, and edits (each on its own, the first
// occurrence) after which it is no longer a template snaptp knows.
typedef struct golden_template {
    const char *name;   // its key in golden.json's "templates"
    const char *family; // chat_template_family's answer
    int trims;          // the template trims the messages (Llama 3.1+)
    const char *refused[4][2];
} golden_template;

static const golden_template golden_templates[] = {
    {"llama3.1.jinja", "llama3.1", 1, {{"Today Date: ", "Today date: "}}},
    {"llama3.2.jinja", "llama3.1", 1, {{"Today Date: ", "Today date: "}}},
    {"glm4-9b-chat.jinja", "glm4", 0, {{"item['metadata']", "item['METADATA']"}}},
    {"qwen2.5.jinja",
     "qwen2.5",
     0,
     {// QwQ's generation prompt opens a <think> block.
      {"'<|im_start|>assistant\\n' }}", "'<|im_start|>assistant\\n<think>\\n' }}"},
      {"messages[0]['content'] + '<|im_end|>", "messages[0]['content'] | trim + '<|im_end|>"},
      // A Unicode escape in the default system prompt, which snaptp does not undo.
      {"helpful assistant.<|im_end|>", "helpful assistant.\\u00e9<|im_end|>"},
      {"message.role == \"user\"", "message.role == \"human\""}}},
    {"qwen2.5.jinja, Math default", "qwen2.5", 0, {{0}}},
    {"internlm2.jinja", "chatml", 0, {{0}}},
};

// template_text: golden.json's template `name`: its file in `dir` with the recorded edit made,
// and the shared tokenizer it is rendered on. malloc'd; NULL (reason printed) on failure.
static char *template_text(const cJSON *golden, const char *dir, const char *name,
                           const char **tok) {
    const cJSON *spec = cJSON_GetObjectItem(cJSON_GetObjectItem(golden, "templates"), name);
    const cJSON *file = cJSON_GetObjectItem(spec, "file");
    const cJSON *tok_item = cJSON_GetObjectItem(spec, "tokenizer");
    if (!cJSON_IsString(file) || !cJSON_IsString(tok_item)) {
        printf("  golden.json: no templates['%s'] with a file and a tokenizer\n", name);
        return NULL;
    }
    *tok = tok_item->valuestring;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file->valuestring);
    char *text = read_text(path);
    const cJSON *edit = cJSON_GetObjectItem(spec, "replace");
    if (text && edit) {
        char *out = replaced(text, cJSON_GetObjectItem(edit, "from")->valuestring,
                             cJSON_GetObjectItem(edit, "to")->valuestring, 1);
        free(text);
        text = out;
    }
    if (!text) printf("  %s: cannot read %s, or its edit does not apply\n", name, path);
    return text;
}

static void check_template(test_counts *tc, const char *shared, const char *dir,
                           const cJSON *golden, const golden_template *g) {
    const char *name = g->name, *tok = "";
    char *tmpl = template_text(golden, dir, name, &tok);
    tokenizer *t = tmpl ? load_with_template(shared, tok, tmpl) : NULL;
    if (!test_check(tc, t != NULL, "%s: cannot load the %s tokenizer with it", name, tok)) {
        free(tmpl);
        return;
    }
    const char *family = "";
    test_check(tc, chat_template_family(t, &family) == SNP_OK && strcmp(family, g->family) == 0,
               "%s: family '%s' (want %s)", name, family, g->family);
    int n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(golden, "cases")) {
        if (strcmp(cJSON_GetObjectItem(c, "template")->valuestring, name) != 0) continue;
        n_cases++;
        const cJSON *sys_item = cJSON_GetObjectItem(c, "system");
        const char *sys = cJSON_IsString(sys_item) ? sys_item->valuestring : NULL;
        const char *user = cJSON_GetObjectItem(c, "user")->valuestring;
        char *want = with_today(cJSON_GetObjectItem(c, "expected")->valuestring);
        char *got = NULL, *head = NULL, *tail = NULL;
        snp_status st = chat_template_apply(t, sys, user, &got);
        int same = st == SNP_OK && strcmp(got, want) == 0;
        test_check(tc, same, "%s (system %s%s%s) == transformers' apply_chat_template%s%s", name,
                   sys ? "'" : "absent", sys ? sys : "", sys ? "'" : "", st ? ": " : "",
                   st ? snp_error() : "");
        if (st == SNP_OK && !same) printf("        got:  %s\n        want: %s\n", got, want);
        // The split the KV store and qa use: head + user (trimmed where the template
        // trims it) + tail is the prompt.
        if (chat_template_split(t, sys, &head, &tail) == SNP_OK && got) {
            size_t s0 = 0, s1 = strlen(user);
            if (g->trims) chat_template_trim(user, strlen(user), &s0, &s1);
            size_t nh = strlen(head), nu = s1 - s0;
            int adds = strlen(got) == nh + nu + strlen(tail) && memcmp(got, head, nh) == 0 &&
                       memcmp(got + nh, user + s0, nu) == 0 && strcmp(got + nh + nu, tail) == 0;
            test_check(tc, adds, "%s: head + user + tail == the prompt", name);
        } else {
            test_check(tc, 0, "%s: split: %s", name, snp_error());
        }
        free(head);
        free(tail);
        free(got);
        free(want);
    }
    test_check(tc, n_cases >= 2, "%s: %d golden cases", name, n_cases);
    tokenizer_free(t);

    for (size_t k = 0; k < sizeof g->refused / sizeof g->refused[0] && g->refused[k][0]; k++) {
        const char *from = g->refused[k][0], *to = g->refused[k][1];
        char *changed = replaced(tmpl, from, to, 0);
        if (!test_check(tc, changed != NULL, "%s: has '%s'", name, from)) continue;
        t = load_with_template(shared, tok, changed);
        const char *fam = NULL;
        snp_status st = t ? chat_template_family(t, &fam) : SNP_ERR_INTERNAL;
        test_check(tc,
                   st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), "tokenizer_config.json") &&
                       strstr(snp_error(), "Qwen2.5"),
                   "%s with '%s': refused naming its source and the known families (%s)", name, to,
                   st ? snp_error() : fam);
        tokenizer_free(t);
        free(changed);
    }
    free(tmpl);
}

// GGUF metadata writers (little-endian, as GGUF v3 is on the hosts snaptp runs on).
static void put_u32(FILE *f, uint32_t v) {
    fwrite(&v, 4, 1, f);
}
static void put_u64(FILE *f, uint64_t v) {
    fwrite(&v, 8, 1, f);
}
static void put_str(FILE *f, const char *s) {
    put_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

enum { GGUF_T_INT32 = 5, GGUF_T_STRING = 8, GGUF_T_ARRAY = 9 };

// check_gguf: a tokenizer-only GGUF (a byte-level BPE vocabulary with ChatML's control
// tokens) whose tokenizer.chat_template holds Qwen2.5's template: recognised as from
// tokenizer_config.json, and rendered the same.
static void check_gguf(test_counts *tc, const char *dir, const cJSON *golden) {
    char path[4200], gguf[] = "/tmp/snaptp_chat_gguf_XXXXXX";
    snprintf(path, sizeof path, "%s/qwen2.5.jinja", dir);
    char *tmpl = read_text(path);
    int fd = tmpl ? mkstemp(gguf) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!test_check(tc, f != NULL, "GGUF: cannot write %s", gguf)) {
        free(tmpl);
        return;
    }
    static const char *const tokens[] = {"a", "<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    static const int32_t types[] = {1, 3, 3, 3}; // normal, then control tokens
    fwrite("GGUF", 1, 4, f);
    put_u32(f, 3);
    put_u64(f, 0); // tensors
    put_u64(f, 5); // key-value pairs
    put_str(f, "tokenizer.ggml.model");
    put_u32(f, GGUF_T_STRING);
    put_str(f, "gpt2");
    put_str(f, "tokenizer.ggml.tokens");
    put_u32(f, GGUF_T_ARRAY);
    put_u32(f, GGUF_T_STRING);
    put_u64(f, 4);
    for (int i = 0; i < 4; i++)
        put_str(f, tokens[i]);
    put_str(f, "tokenizer.ggml.token_type");
    put_u32(f, GGUF_T_ARRAY);
    put_u32(f, GGUF_T_INT32);
    put_u64(f, 4);
    fwrite(types, 4, 4, f);
    put_str(f, "tokenizer.ggml.merges");
    put_u32(f, GGUF_T_ARRAY);
    put_u32(f, GGUF_T_STRING);
    put_u64(f, 0);
    put_str(f, "tokenizer.chat_template");
    put_u32(f, GGUF_T_STRING);
    put_str(f, tmpl);
    int ok = fclose(f) == 0;
    free(tmpl);
    tokenizer *t = NULL;
    if (test_check(tc, ok && tokenizer_load(gguf, &t) == SNP_OK, "GGUF: load %s: %s", gguf,
                   ok ? snp_error() : "write failed")) {
        const char *family = "", *want = NULL;
        char *got = NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(golden, "cases")) {
            if (strcmp(cJSON_GetObjectItem(c, "template")->valuestring, "qwen2.5.jinja") == 0 &&
                cJSON_IsNull(cJSON_GetObjectItem(c, "system")) && !want) {
                want = cJSON_GetObjectItem(c, "expected")->valuestring;
                snp_status st =
                    chat_template_apply(t, NULL, cJSON_GetObjectItem(c, "user")->valuestring, &got);
                if (st != SNP_OK) printf("  GGUF apply: %s\n", snp_error());
            }
        }
        test_check(tc,
                   chat_template_family(t, &family) == SNP_OK && strcmp(family, "qwen2.5") == 0 &&
                       strcmp(tokenizer_chat_template_source(t), "tokenizer.chat_template") == 0,
                   "GGUF: Qwen2.5's template in tokenizer.chat_template: family '%s' (want "
                   "qwen2.5), from '%s'",
                   family, tokenizer_chat_template_source(t));
        test_check(tc, want && got && strcmp(got, want) == 0,
                   "GGUF: Qwen2.5 without a system message == transformers' (default system)");
        free(got);
    }
    tokenizer_free(t);
    unlink(gguf);
}

// check_qwen3: the Qwen3 tokenizer of ../shared as shipped (its <think> template) is still
// Qwen3's, not Qwen2.5's.
static void check_qwen3(test_counts *tc, const char *shared) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizers/qwen3", shared);
    tokenizer *t = NULL;
    const char *family = "";
    if (test_check(tc, tokenizer_load(path, &t) == SNP_OK, "load %s: %s", path, snp_error()))
        test_check(tc, chat_template_family(t, &family) == SNP_OK && strcmp(family, "qwen3") == 0,
                   "the shipped Qwen3 template: family '%s' (want qwen3)", family);
    tokenizer_free(t);
}

int main(void) {
    test_counts tc = {0};
    const char *shared = getenv("SNAPTP_SHARED_DIR");
    if (!shared) {
        fprintf(stderr, "test_chat_template: SNAPTP_SHARED_DIR not set\n");
        return 1;
    }
    char dir[4000], path[4200];
    test_source_path(dir, sizeof dir, "tests/data/chat_template");
    snprintf(path, sizeof path, "%s/golden.json", dir);
    cJSON *golden = test_read_json(path);
    if (!test_check(&tc, golden != NULL, "cannot read %s", path))
        return test_finish(&tc, "test_chat_template");
    printf("golden data from transformers %s\n",
           cJSON_GetObjectItem(golden, "transformers_version")->valuestring);
    for (size_t i = 0; i < sizeof golden_templates / sizeof golden_templates[0]; i++)
        check_template(&tc, shared, dir, golden, &golden_templates[i]);
    check_gguf(&tc, dir, golden);
    check_qwen3(&tc, shared);
    cJSON_Delete(golden);
    return test_finish(&tc, "test_chat_template");
}
