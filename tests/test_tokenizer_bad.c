// test_tokenizer_bad: bad input gets a clear message and a failing status, never a
// crash: truncated / malformed / unsupported tokenizer.json (message names the file and
// the field), invalid UTF-8 (message names the byte offset), ids out of range, unknown
// chat templates. Also the streaming decoder's UTF-8 safety on split characters.
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"

static int n_pass, n_fail;
static char tmp[] = "/tmp/snaptp_tok_bad_XXXXXX";

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(ok ? "  ok    " : "  FAIL  ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    ok ? n_pass++ : n_fail++;
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) len = 0;
    buf[len] = '\0';
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void write_file(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(s, 1, n, f);
    fclose(f);
}

// Loads `text` written as tokenizer.json and expects `want` with both needles in the message.
static void expect_json_fail(const char *what, const char *text, size_t n, snp_status want,
                             const char *needle) {
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
    write_file(path, text, n);
    tokenizer *t = NULL;
    snp_status st = tokenizer_load(path, &t);
    const char *msg = snp_error();
    check(st == want && !t && strstr(msg, path) && strstr(msg, needle),
          "%s: status %d, names file and '%s': %s", what, st, needle, msg);
    tokenizer_free(t);
    unlink(path);
}

// The tiny tokenizer.json with one change applied by `edit`.
static void expect_edit_fail(const char *what, const char *base, void (*edit)(cJSON *),
                             snp_status want, const char *needle) {
    cJSON *root = cJSON_Parse(base);
    edit(root);
    char *text = cJSON_PrintUnformatted(root);
    expect_json_fail(what, text, strlen(text), want, needle);
    free(text);
    cJSON_Delete(root);
}

static cJSON *model_of(cJSON *root) {
    return cJSON_GetObjectItem(root, "model");
}
static void edit_unigram(cJSON *r) {
    cJSON_ReplaceItemInObject(model_of(r), "type", cJSON_CreateString("Unigram"));
}
static void edit_no_vocab(cJSON *r) {
    cJSON_DeleteItemFromObject(model_of(r), "vocab");
}
static void edit_vocab_id(cJSON *r) {
    cJSON_AddItemToObject(cJSON_GetObjectItem(model_of(r), "vocab"), "zzz",
                          cJSON_CreateString("x"));
}
static void edit_merges(cJSON *r) {
    cJSON_InsertItemInArray(cJSON_GetObjectItem(model_of(r), "merges"), 0,
                            cJSON_CreateString("qqq rrr"));
}
static void edit_nfkc(cJSON *r) {
    cJSON *n = cJSON_CreateObject();
    cJSON_AddStringToObject(n, "type", "NFKC");
    cJSON_ReplaceItemInObject(r, "normalizer", n);
}
static void edit_regex(cJSON *r) {
    cJSON *p = cJSON_Parse("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\\\\p{L\"},"
                           "\"behavior\":\"Isolated\",\"invert\":false}");
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", p);
}
static void edit_behavior(cJSON *r) {
    cJSON *p = cJSON_Parse("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                           "\"behavior\":\"MergedWithNext\",\"invert\":false}");
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", p);
}
static void edit_added_id(cJSON *r) {
    cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "added_tokens"), 0);
    cJSON_ReplaceItemInObject(a, "id", cJSON_CreateString("seven"));
}

static void check_json(const char *base, size_t n_base) {
    expect_json_fail("truncated tokenizer.json", base, n_base / 2, SNP_ERR_FORMAT,
                     "truncated or malformed");
    expect_json_fail("empty tokenizer.json", "", 0, SNP_ERR_FORMAT, "not valid JSON");
    expect_json_fail("JSON array at top level", "[1, 2]", 6, SNP_ERR_FORMAT, "not a JSON object");
    expect_json_fail("no model", "{\"version\": \"1.0\"}", 18, SNP_ERR_FORMAT, "\"model\"");
    expect_edit_fail("model.type Unigram", base, edit_unigram, SNP_ERR_UNSUPPORTED,
                     "model.type 'Unigram'");
    expect_edit_fail("model.vocab missing", base, edit_no_vocab, SNP_ERR_FORMAT, "model.vocab");
    expect_edit_fail("model.vocab id not a number", base, edit_vocab_id, SNP_ERR_FORMAT,
                     "model.vocab['zzz']");
    expect_edit_fail("merge of unknown tokens", base, edit_merges, SNP_ERR_FORMAT,
                     "model.merges[0]");
    expect_edit_fail("normalizer NFKC", base, edit_nfkc, SNP_ERR_UNSUPPORTED,
                     "normalizer.type 'NFKC'");
    expect_edit_fail("regex that does not compile", base, edit_regex, SNP_ERR_UNSUPPORTED,
                     "does not compile");
    expect_edit_fail("Split behavior MergedWithNext", base, edit_behavior, SNP_ERR_UNSUPPORTED,
                     "pre_tokenizer.behavior 'MergedWithNext'");
    expect_edit_fail("added token id not a number", base, edit_added_id, SNP_ERR_FORMAT,
                     "added_tokens[0]");

    tokenizer *t = NULL;
    snp_status st = tokenizer_load("/nonexistent/tokenizer.json", &t);
    check(st == SNP_ERR_IO && strstr(snp_error(), "/nonexistent/tokenizer.json"),
          "missing file: %s", snp_error());
    st = tokenizer_load(tmp, &t); // a directory without tokenizer.json
    check(st == SNP_ERR_IO && strstr(snp_error(), "no tokenizer.json"), "empty directory: %s",
          snp_error());
}

static void check_utf8(const tokenizer *t) {
    static const struct {
        const char *text;
        size_t n, offset;
        const char *what;
    } bad[] = {
        {"abc\xff", 4, 3, "0xFF byte"},
        {"ok \xe2\x82", 5, 3, "truncated 3-byte sequence at the end"},
        {"ok\xc0\xaf", 4, 2, "overlong encoding"},
        {"\xed\xa0\x80x", 4, 0, "UTF-16 surrogate"},
        {"xy\xf4\x90\x80\x80", 6, 2, "code point above U+10FFFF"},
        {"\x80", 1, 0, "lone continuation byte"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        snp_status st = tokenizer_encode(t, bad[i].text, bad[i].n, 0, &ids, &n);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].offset);
        check(st == SNP_ERR_UTF8 && !ids && strstr(snp_error(), want), "invalid UTF-8 (%s): %s",
              bad[i].what, snp_error());
        free(ids);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    snp_status st = tokenizer_encode(t, "a\0b", 3, 0, &ids, &n);
    char *back = NULL;
    size_t n_back = 0;
    if (st == SNP_OK) st = tokenizer_decode(t, ids, n, &back, &n_back);
    check(st == SNP_OK && n_back == 3 && memcmp(back, "a\0b", 3) == 0, "a NUL byte round-trips");
    free(ids);
    free(back);
    int32_t bad_ids[] = {1, 999999};
    st = tokenizer_decode(t, bad_ids, 2, &back, &n_back);
    check(st == SNP_ERR_ARGUMENT && strstr(snp_error(), "999999"), "id out of range: %s",
          snp_error());
}

static int utf8_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        if (!len || i + len > n) return 0;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static void check_stream(const tokenizer *t) {
    const char *text = "é😀👨‍👩‍👧 中文 x";
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(t, text, strlen(text), 0, &ids, &n) != SNP_OK) {
        check(0, "encode for the stream test: %s", snp_error());
        return;
    }
    tokenizer_stream s;
    tokenizer_stream_init(&s, t);
    char acc[256];
    size_t n_acc = 0, n_empty = 0;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t k;
        ok &= tokenizer_stream_feed(&s, ids[i], &p, &k) == SNP_OK && utf8_ok(p, k);
        n_empty += k == 0;
        memcpy(acc + n_acc, p, k);
        n_acc += k;
    }
    check(ok && n_acc == strlen(text) && memcmp(acc, text, n_acc) == 0 && n_empty > 0,
          "stream: %zu ids, every chunk whole UTF-8, %zu ids held back until a character was "
          "whole",
          n, n_empty);
    // A sequence that ends inside a character: flush gives U+FFFD, nothing is lost.
    tokenizer_stream_free(&s);
    tokenizer_stream_init(&s, t);
    const char *p;
    size_t k;
    int32_t lead = tokenizer_find(t, "\xC3\x83"); // byte-level 'Ã' is the byte 0xC3
    size_t k_feed = 1;
    ok = lead >= 0 && tokenizer_stream_feed(&s, lead, &p, &k_feed) == SNP_OK;
    ok &= tokenizer_stream_flush(&s, &p, &k) == SNP_OK;
    check(ok && k_feed == 0 && k == 3 && memcmp(p, "\xEF\xBF\xBD", 3) == 0,
          "stream: a lone lead byte is held back, flush gives U+FFFD (%zu bytes)", k);
    tokenizer_stream_free(&s);
    free(ids);
}

// Random bytes (valid UTF-8 or not) and random id sequences: encode either succeeds or
// reports invalid UTF-8; streaming decode of any ids equals the whole decode, invalid
// byte sequences included. Fixed seed, so a failure reproduces.
static void check_random(const tokenizer *t) {
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int enc_ok = 1, stream_ok = 1, n_valid = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char text[64];
        size_t n = 0;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t len = x % sizeof text;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            // mostly whole characters (and special tokens), sometimes any byte
            static const char *const pool[] = {"a",
                                               "b",
                                               " ",
                                               "\n",
                                               "\t",
                                               "<|end|>",
                                               "<mask>",
                                               "[END]",
                                               "cat",
                                               "\xC3\xA9",
                                               "e\xCC\x81",
                                               "\xE2\x82\xAC",
                                               "\xF0\x9F\x98\x80",
                                               "\xE4\xB8\xAD"};
            const char *c = pool[(x >> 16) % (sizeof pool / sizeof pool[0])];
            size_t cl = strlen(c);
            if ((x >> 8) % 32 == 0) {
                c = (const char *)&x + 3; // one arbitrary byte
                cl = 1;
            }
            if (n + cl > sizeof text) break;
            memcpy(text + n, c, cl);
            n += cl;
        }
        int32_t *ids = NULL;
        size_t n_ids = 0;
        snp_status st = tokenizer_encode(t, text, n, 0, &ids, &n_ids);
        enc_ok &= st == SNP_OK || st == SNP_ERR_UTF8;
        n_valid += st == SNP_OK;
        free(ids);
        int32_t rid[12];
        for (int k = 0; k < 12; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            rid[k] = (int32_t)(x % (uint64_t)tokenizer_n_vocab(t));
        }
        char *whole = NULL, acc[16384];
        size_t n_whole = 0, n_acc = 0;
        if (tokenizer_decode(t, rid, 12, &whole, &n_whole) != SNP_OK) stream_ok = 0;
        tokenizer_stream s;
        tokenizer_stream_init(&s, t);
        for (int k = 0; k <= 12 && stream_ok; k++) {
            const char *p;
            size_t m;
            st = k < 12 ? tokenizer_stream_feed(&s, rid[k], &p, &m)
                        : tokenizer_stream_flush(&s, &p, &m);
            if (st != SNP_OK || n_acc + m > sizeof acc)
                stream_ok = 0;
            else
                memcpy(acc + n_acc, p, m), n_acc += m;
        }
        stream_ok &=
            whole && n_acc == n_whole && memcmp(acc, whole, n_acc) == 0 && utf8_ok(acc, n_acc);
        tokenizer_stream_free(&s);
        free(whole);
    }
    check(enc_ok, "3000 random byte strings: encode OK or invalid UTF-8 (%d valid)", n_valid);
    check(stream_ok, "3000 random id sequences: streaming decode == whole decode, valid UTF-8");
}

static void check_chat(const char *base, size_t n_base) {
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
    write_file(path, base, n_base);
    tokenizer *t = NULL;
    char *out = NULL;
    if (tokenizer_load(path, &t) == SNP_OK) {
        snp_status st = chat_template_apply(t, NULL, "hi", &out);
        check(st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), "has none"),
              "no template, no built-in family: %s", snp_error());
        tokenizer_free(t);
    }
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", tmp);
    const char *tmpl =
        "{\"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}";
    write_file(cfg, tmpl, strlen(tmpl));
    t = NULL;
    if (tokenizer_load(path, &t) == SNP_OK) {
        snp_status st = chat_template_apply(t, NULL, "hi", &out);
        check(st == SNP_ERR_UNSUPPORTED && strstr(snp_error(), "not one snaptp knows") &&
                  strstr(snp_error(), "tokenizer_config.json"),
              "unknown template is refused: %s", snp_error());
        tokenizer_free(t);
    }
    write_file(cfg, "{\"chat_template\": ", 18);
    t = NULL;
    snp_status st = tokenizer_load(path, &t);
    check(st == SNP_ERR_FORMAT && strstr(snp_error(), cfg), "truncated tokenizer_config.json: %s",
          snp_error());
    tokenizer_free(t);
    unlink(cfg);
    unlink(path);
    free(out);
}

int main(void) {
    const char *src = getenv("SNAPTP_SOURCE_DIR");
    if (!src || !mkdtemp(tmp)) {
        fprintf(stderr, "test_tokenizer_bad: SNAPTP_SOURCE_DIR not set or mkdtemp failed\n");
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer/tiny/tokenizer.json", src);
    size_t n = 0;
    char *base = read_file(path, &n);
    tokenizer *t = NULL;
    if (!base || tokenizer_load(path, &t) != SNP_OK) {
        fprintf(stderr, "test_tokenizer_bad: cannot load %s: %s\n", path, snp_error());
        return 1;
    }
    check_json(base, n);
    check_utf8(t);
    check_stream(t);
    check_random(t);
    check_chat(base, n);
    tokenizer_free(t);
    free(base);
    rmdir(tmp);
    printf("test_tokenizer_bad: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
