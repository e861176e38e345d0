// test_chat_template: the Llama 3.1-3.3 and GLM-4-9B-Chat chat templates (tests/data/chat_template,
// the Jinja text the models ship) on the Llama 3 tokenizer of ../shared: the family is recognised,
// chat_template_apply equals transformers' apply_chat_template (golden.json, made by
// tests/gen_chat_template_golden.py) with and without a system message, the split
// around the user message adds up, and a template changed in its system header is
// refused naming where it came from.
#include <cjson/cJSON.h>
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

// load_with_template: the shared Llama 3 tokenizer with its tokenizer_config.json's
// chat_template replaced by `tmpl`, through a temporary directory (the loader reads the
// config beside tokenizer.json). NULL on failure, with the reason printed.
static tokenizer *load_with_template(const char *shared, const char *tmpl) {
    char src[4096], dir[] = "/tmp/snaptp_chat_XXXXXX", path[4200];
    if (!mkdtemp(dir)) return NULL;
    snprintf(src, sizeof src, "%s/tokenizers/llama3/tokenizer_config.json", shared);
    char *text = read_text(src);
    cJSON *cfg = text ? cJSON_Parse(text) : NULL;
    free(text);
    tokenizer *t = NULL;
    if (cfg) {
        cJSON_ReplaceItemInObject(cfg, "chat_template", cJSON_CreateString(tmpl));
        char *out = cJSON_PrintUnformatted(cfg);
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        FILE *f = fopen(path, "wb");
        int ok = out && f && fputs(out, f) >= 0;
        if (f) fclose(f);
        free(out);
        snprintf(src, sizeof src, "%s/tokenizers/llama3/tokenizer.json.gz", shared);
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

static void check_template(test_counts *tc, const char *shared, const char *dir, const char *name,
                           const cJSON *cases) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *tmpl = read_text(path);
    tokenizer *t = tmpl ? load_with_template(shared, tmpl) : NULL;
    if (!test_check(tc, t != NULL, "%s: cannot load the Llama 3 tokenizer with it", name)) {
        free(tmpl);
        return;
    }
    // GLM-4 writes the messages as they are; Llama 3.1+ trims them.
    const int glm = strncmp(name, "glm", 3) == 0;
    const char *want_family = glm ? "glm4" : "llama3.1", *family = "";
    test_check(tc, chat_template_family(t, &family) == SNP_OK && strcmp(family, want_family) == 0,
               "%s: family '%s' (want %s)", name, family, want_family);
    int n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
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
        // The split the KV store and qa use: head + trim(user) + tail is the prompt.
        if (chat_template_split(t, sys, &head, &tail) == SNP_OK && got) {
            size_t s0 = 0, s1 = strlen(user);
            if (!glm) chat_template_trim(user, strlen(user), &s0, &s1);
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

    // The same template with its date line (GLM: the message line) changed is no longer
    // one snaptp knows.
    const char *from = glm ? "item['metadata']" : "Today Date: ";
    const char *to = glm ? "item['METADATA']" : "Today date: ";
    char *changed = strstr(tmpl, from);
    if (test_check(tc, changed != NULL, "%s: has '%s'", name, from)) {
        memcpy(changed, to, strlen(to));
        t = load_with_template(shared, tmpl);
        const char *fam = NULL;
        snp_status st = t ? chat_template_family(t, &fam) : SNP_ERR_INTERNAL;
        test_check(tc, st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), "tokenizer_config.json"),
                   "%s with '%s': refused naming its source (%s)", name, to,
                   st ? snp_error() : fam);
        tokenizer_free(t);
    }
    free(tmpl);
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
    const cJSON *cases = cJSON_GetObjectItem(golden, "cases");
    check_template(&tc, shared, dir, "llama3.1.jinja", cases);
    check_template(&tc, shared, dir, "llama3.2.jinja", cases);
    check_template(&tc, shared, dir, "glm4-9b-chat.jinja", cases);
    cJSON_Delete(golden);
    return test_finish(&tc, "test_chat_template");
}
