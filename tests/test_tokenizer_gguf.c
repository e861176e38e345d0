// test_tokenizer_gguf: the GGUF vocabulary loader without the SmolLM2 file. It writes
// small GGUF files (metadata only) and checks: (1) a "llama" (SentencePiece) vocabulary
// built from Llama 2's tokenizer.json gives HF's Llama 2 ids on the corpus; (2) a GGUF without a
// vocabulary, an unknown tokenizer.ggml.model, a broken merges array each fail with a message
// naming the file and the key. The scores are chosen to reproduce tokenizer.json's merge order, so
// the check is of the score-driven merging itself.
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/tokenizer.h"
#include "runtime/tokenizer_internal.h"

static int n_pass, n_fail;

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

// ---- a minimal GGUF v3 writer: metadata only, no tensors -------------------------------
typedef struct gw {
    FILE *f;
    uint64_t n_kv;
} gw;

static void w_u32(gw *g, uint32_t v) {
    fwrite(&v, 4, 1, g->f);
}
static void w_u64(gw *g, uint64_t v) {
    fwrite(&v, 8, 1, g->f);
}
static void w_str(gw *g, const char *s, size_t n) {
    w_u64(g, n);
    fwrite(s, 1, n, g->f);
}
static void w_key(gw *g, const char *key, uint32_t type) {
    w_str(g, key, strlen(key));
    w_u32(g, type);
}

static gw gw_open(const char *path, uint64_t n_kv) {
    gw g = {fopen(path, "wb"), n_kv};
    fwrite("GGUF", 1, 4, g.f);
    w_u32(&g, 3);
    w_u64(&g, 0); // tensors
    w_u64(&g, n_kv);
    return g;
}

static void kv_str(gw *g, const char *key, const char *val) {
    w_key(g, key, GGUF_TYPE_STRING);
    w_str(g, val, strlen(val));
}
static void kv_u32(gw *g, const char *key, uint32_t v) {
    w_key(g, key, GGUF_TYPE_UINT32);
    w_u32(g, v);
}
static void kv_bool(gw *g, const char *key, int v) {
    w_key(g, key, GGUF_TYPE_BOOL);
    uint8_t b = (uint8_t)v;
    fwrite(&b, 1, 1, g->f);
}
static void kv_arr_hdr(gw *g, const char *key, uint32_t elem, uint64_t n) {
    w_key(g, key, GGUF_TYPE_ARRAY);
    w_u32(g, elem);
    w_u64(g, n);
}

static int contains(const char *hay, const char *needle) {
    return strstr(hay, needle) != NULL;
}

// ---- (1) Llama 2 as a "llama" GGUF vocabulary -----------------------------------------
static int write_llama_gguf(const char *json_path, const char *out_path) {
    char *text = NULL;
    size_t n = 0;
    if (tok_read_file(json_path, &text, &n) != SNP_OK) return 0;
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "vocab");
    int n_vocab = cJSON_GetArraySize(vocab);
    const char **tokens = calloc((size_t)n_vocab, sizeof *tokens);
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (e->valueint >= 0 && e->valueint < n_vocab) tokens[e->valueint] = e->string;
    }
    // Scores that reproduce tokenizer.json's merge order: a token made by merge r scores
    // -r. A multi-character token no merge makes is marked unused (type 5), so neither
    // HF nor the score-based tokenizer can reach it.
    tok_map keys;
    tok_map_init(&keys, (size_t)n_vocab);
    for (int i = 0; i < n_vocab; i++)
        if (tokens[i]) tok_map_put(&keys, tokens[i], strlen(tokens[i]), i);
    float *scores = malloc((size_t)n_vocab * sizeof *scores);
    int32_t *types = malloc((size_t)n_vocab * sizeof *types);
    for (int i = 0; i < n_vocab; i++) {
        scores[i] = 1.0f; // "unset"
        const char *s = tokens[i] ? tokens[i] : "";
        size_t chars = 0;
        for (const char *p = s; *p; p++)
            chars += ((unsigned char)*p & 0xC0) != 0x80;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : chars > 1 ? 5 : 1;
    }
    int rank = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "merges")) {
        char joined[512];
        size_t k = 0;
        for (const char *p = e->valuestring; *p && k < sizeof joined - 1; p++)
            if (*p != ' ') joined[k++] = *p;
        int32_t id = tok_map_get(&keys, joined, k);
        if (id >= 0 && scores[id] > 0) {
            scores[id] = (float)-rank;
            types[id] = 1;
        }
        rank++;
    }
    for (int i = 0; i < n_vocab; i++)
        if (scores[i] > 0) scores[i] = 0.0f;
    tok_map_free(&keys);
    gw g = gw_open(out_path, 8);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, (uint64_t)n_vocab);
    for (int i = 0; i < n_vocab; i++)
        w_str(&g, tokens[i] ? tokens[i] : "", tokens[i] ? strlen(tokens[i]) : 0);
    kv_arr_hdr(&g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, (uint64_t)n_vocab);
    fwrite(scores, 4, (size_t)n_vocab, g.f);
    kv_arr_hdr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, (uint64_t)n_vocab);
    fwrite(types, 4, (size_t)n_vocab, g.f);
    free(scores);
    free(types);
    kv_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(&g, "tokenizer.ggml.unknown_token_id", 0);
    kv_bool(&g, "tokenizer.ggml.add_bos_token", 1);
    kv_bool(&g, "tokenizer.ggml.add_space_prefix", 1);
    fclose(g.f);
    free(tokens);
    cJSON_Delete(root);
    return 1;
}

static int32_t *read_ids(const char *path, size_t *n_ids) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, k = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    long v;
    while (fscanf(f, "%ld", &v) == 1) {
        if (k == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
        ids[k++] = (int32_t)v;
    }
    fclose(f);
    *n_ids = k;
    return ids;
}

static void check_llama_gguf(const char *src, const char *shared, const char *tmp) {
    char json[4096], gguf[4096], path[8192];
    snprintf(json, sizeof json, "%s/tokenizers/llama2/tokenizer.json.gz", shared);
    snprintf(gguf, sizeof gguf, "%s/llama2_vocab.gguf", tmp);
    if (!write_llama_gguf(json, gguf)) {
        check(0, "write %s from %s", gguf, json);
        return;
    }
    tokenizer *t = NULL;
    if (tokenizer_load(gguf, &t) != SNP_OK) {
        check(0, "load %s: %s", gguf, snp_error());
        return;
    }
    printf("llama GGUF: %s\n", tokenizer_describe(t));
    check(tokenizer_add_bos_default(t) && tokenizer_bos_id(t) == 1, "llama GGUF asks for BOS 1");
    static const char *const files[] = {"english",      "code",    "numbers_dates", "whitespace",
                                        "accents_nfc",  "cjk",     "arabic",        "emoji",
                                        "contractions", "scripts", "edge_space",    "edge_newline"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/tests/data/tokenizer/corpus/%s.txt", src, files[i]);
        FILE *f = fopen(path, "rb");
        char *text = malloc(1 << 16);
        size_t n = f ? fread(text, 1, 1 << 16, f) : 0;
        if (f) fclose(f);
        snprintf(path, sizeof path, "%s/tests/data/tokenizer/expected/llama2/%s.ids", src,
                 files[i]);
        size_t n_exp = 0, n_got = 0;
        int32_t *exp = read_ids(path, &n_exp), *got = NULL;
        int ok = exp && tokenizer_encode(t, text, n, 0, &got, &n_got) == SNP_OK;
        size_t d = 0;
        while (ok && d < n_got && d < n_exp && got[d] == exp[d])
            d++;
        check(ok && d == n_got && d == n_exp,
              "llama GGUF (scores) %-14s %5zu ids equal HF Llama 2 (first difference at %zu)",
              files[i], n_got, d);
        char *back = NULL;
        size_t n_back = 0;
        ok = ok && tokenizer_decode(t, got, n_got, &back, &n_back) == SNP_OK;
        check(ok && n_back == n && memcmp(back, text, n) == 0, "llama GGUF %-14s round trip",
              files[i]);
        free(back);
        free(exp);
        free(got);
        free(text);
    }
    tokenizer_free(t);
    unlink(gguf);
}

// ---- (2) bad GGUF vocabularies -------------------------------------------------------------
static void expect_fail(const char *path, snp_status want, const char *what, const char *needle) {
    tokenizer *t = NULL;
    snp_status st = tokenizer_load(path, &t);
    const char *msg = snp_error();
    check(st == want && t == NULL && contains(msg, path) && contains(msg, needle),
          "%s: status %d, message names the file and '%s': %s", what, st, needle, msg);
    tokenizer_free(t);
}

static void check_bad(const char *tmp) {
    char path[4096];
    snprintf(path, sizeof path, "%s/no_vocab.gguf", tmp);
    gw g = gw_open(path, 1);
    kv_str(&g, "general.architecture", "llama");
    fclose(g.f);
    expect_fail(path, SNP_ERR_FORMAT, "GGUF without a vocabulary", "tokenizer.ggml.tokens");
    unlink(path);

    snprintf(path, sizeof path, "%s/bert.gguf", tmp);
    g = gw_open(path, 2);
    kv_str(&g, "tokenizer.ggml.model", "bert");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 1);
    w_str(&g, "a", 1);
    fclose(g.f);
    expect_fail(path, SNP_ERR_UNSUPPORTED, "unknown tokenizer.ggml.model", "'bert'");
    unlink(path);

    snprintf(path, sizeof path, "%s/bad_merges.gguf", tmp);
    g = gw_open(path, 3);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 2);
    w_str(&g, "a", 1);
    w_str(&g, "b", 1);
    kv_arr_hdr(&g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 1);
    w_str(&g, "a b", 3); // "ab" is not a token
    fclose(g.f);
    expect_fail(path, SNP_ERR_FORMAT, "merge into a missing token", "tokenizer.ggml.merges[0]");
    unlink(path);

    // A gpt2 vocabulary of "a", "b", "ab" with the merge that makes "ab".
    snprintf(path, sizeof path, "%s/no_token_type.gguf", tmp);
    g = gw_open(path, 3);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 3);
    w_str(&g, "a", 1);
    w_str(&g, "b", 1);
    w_str(&g, "ab", 2);
    kv_arr_hdr(&g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 1);
    w_str(&g, "a b", 3);
    fclose(g.f);
    expect_fail(path, SNP_ERR_FORMAT, "no token types", "no tokenizer.ggml.token_type");
    unlink(path);

    snprintf(path, sizeof path, "%s/pad_out_of_range.gguf", tmp);
    g = gw_open(path, 5);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 3);
    w_str(&g, "a", 1);
    w_str(&g, "b", 1);
    w_str(&g, "ab", 2);
    kv_arr_hdr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, 3);
    for (int i = 0; i < 3; i++) w_u32(&g, 1); // normal
    kv_arr_hdr(&g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 1);
    w_str(&g, "a b", 3);
    kv_u32(&g, "tokenizer.ggml.padding_token_id", 7);
    fclose(g.f);
    expect_fail(path, SNP_ERR_FORMAT, "padding id outside the vocabulary",
                "tokenizer.ggml.padding_token_id = 7 is outside the vocabulary (3 tokens)");
    unlink(path);

    snprintf(path, sizeof path, "%s/tokens_not_strings.gguf", tmp);
    g = gw_open(path, 2);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_UINT32, 1);
    w_u32(&g, 7);
    fclose(g.f);
    expect_fail(path, SNP_ERR_FORMAT, "tokens of the wrong type", "tokenizer.ggml.tokens");
    unlink(path);

    snprintf(path, sizeof path, "%s/llama_no_scores.gguf", tmp);
    g = gw_open(path, 2);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_arr_hdr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 1);
    w_str(&g, "a", 1);
    fclose(g.f);
    expect_fail(path, SNP_ERR_FORMAT, "llama vocabulary without scores", "tokenizer.ggml.scores");
    unlink(path);
}

int main(void) {
    const char *src = getenv("SNAPTP_SOURCE_DIR");
    const char *shared = getenv("SNAPTP_SHARED_DIR");
    if (!src || !shared) {
        fprintf(stderr, "test_tokenizer_gguf: SNAPTP_SOURCE_DIR / SNAPTP_SHARED_DIR not set\n");
        return 1;
    }
    char tmp[] = "/tmp/snaptp_tok_gguf_XXXXXX";
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "test_tokenizer_gguf: mkdtemp failed\n");
        return 1;
    }
    check_llama_gguf(src, shared, tmp);
    check_bad(tmp);
    rmdir(tmp);
    printf("test_tokenizer_gguf: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
