// tokenizer_gguf: builds a tokenizer from a GGUF file's tokenizer.ggml.* metadata:
// model "gpt2" (byte-level BPE with merges; pre-tokenizer chosen from
// tokenizer.ggml.pre) and "llama" (SentencePiece BPE: merges derived from scores).
// Reading the file itself is gguf.c's job.
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// llama.cpp's token types (tokenizer.ggml.token_type).
enum {
    GGUF_TOK_NORMAL = 1,
    GGUF_TOK_UNKNOWN = 2,
    GGUF_TOK_CONTROL = 3,
    GGUF_TOK_USER = 4,
    GGUF_TOK_UNUSED = 5,
    GGUF_TOK_BYTE = 6
};

typedef struct gguf_pre {
    const char *name;
    const char *regex;
} gguf_pre;

// tokenizer.ggml.pre -> the split regex. "smollm": llama.cpp isolates digits first, but
// transformers' GGUF converter (the reference the parity tests use) builds plain GPT-2
// ByteLevel; the two differ only on a whitespace run directly before a digit.
static const gguf_pre gguf_pres[] = {
    {"default", NULL},       {"gpt2", NULL},       {"gpt-2", NULL},    {"smollm", NULL},
    {"llama-bpe", "llama3"}, {"llama3", "llama3"}, {"qwen2", "qwen2"},
};

static snp_status get_opt_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t *out) {
    if (gguf_find_key(f, key) < 0) return SNP_OK;
    uint32_t v = 0;
    TRY(gguf_get_u32(f, key, &v));
    if (v >= (uint32_t)n_vocab)
        return snp_fail(SNP_ERR_FORMAT, "%s: %s = %u is outside the vocabulary (%d tokens)",
                        gguf_path(f), key, v, n_vocab);
    *out = (int32_t)v;
    return SNP_OK;
}

static snp_status get_opt_bool(const gguf_file *f, const char *key, int *out) {
    if (gguf_find_key(f, key) < 0) return SNP_OK;
    return gguf_get_bool(f, key, out);
}

static snp_status typed_array(const gguf_file *f, const char *key, gguf_value_type want,
                              uint64_t n_want, const void **data) {
    gguf_value_type ty;
    uint64_t n = 0;
    TRY(gguf_get_arr(f, key, &ty, &n));
    if (ty != want || n != n_want)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: %s has element type %d and %llu entries; expected type %d and %llu",
                        gguf_path(f), key, (int)ty, (unsigned long long)n, (int)want,
                        (unsigned long long)n_want);
    return gguf_get_arr_data(f, key, data);
}

static snp_status load_gpt2_merges(tokenizer *t, const gguf_file *f) {
    const char *key = "tokenizer.ggml.merges";
    gguf_value_type ty;
    uint64_t n = 0;
    if (gguf_find_key(f, key) < 0)
        return snp_fail(SNP_ERR_FORMAT, "%s: model 'gpt2' has no %s", gguf_path(f), key);
    TRY(gguf_get_arr(f, key, &ty, &n));
    if (ty != GGUF_TYPE_STRING)
        return snp_fail(SNP_ERR_FORMAT, "%s: %s is not a string array", gguf_path(f), key);
    TRY(tok_merges_init(&t->merges, (size_t)n));
    snp_status st = SNP_OK;
    tok_buf a = {0}, b = {0}, ab = {0};
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        TRY_GOTO(st, gguf_get_arr_str(f, key, i, &s), done);
        const char *sp = memchr(s.ptr, ' ', s.len);
        if (!sp || memchr(sp + 1, ' ', s.len - (size_t)(sp - s.ptr) - 1)) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: %s[%llu] '%.*s' is not two tokens", gguf_path(f),
                          key, (unsigned long long)i, (int)(s.len > 80 ? 80 : s.len), s.ptr);
            goto done;
        }
        a.n = b.n = ab.n = 0;
        TRY_GOTO(st, tok_bytelevel_decode(s.ptr, (size_t)(sp - s.ptr), &a), done);
        TRY_GOTO(st, tok_bytelevel_decode(sp + 1, s.len - (size_t)(sp - s.ptr) - 1, &b), done);
        TRY_GOTO(st, tok_buf_append(&ab, a.p, a.n), done);
        TRY_GOTO(st, tok_buf_append(&ab, b.p, b.n), done);
        int32_t l = tok_map_get(&t->vocab, a.p, a.n), r = tok_map_get(&t->vocab, b.p, b.n);
        int32_t id = tok_map_get(&t->vocab, ab.p, ab.n);
        if (l < 0 || r < 0 || id < 0) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: %s[%llu] '%.*s': a part or the merge is not a token",
                          gguf_path(f), key, (unsigned long long)i, (int)(s.len > 80 ? 80 : s.len),
                          s.ptr);
            goto done;
        }
        TRY_GOTO(st, tok_merges_put(&t->merges, l, r, (uint32_t)i, id), done);
    }
done:
    free(a.p);
    free(b.p);
    free(ab.p);
    return st;
}

typedef struct scored {
    float score;
    int32_t id;
} scored;

static int by_score_desc(const void *x, const void *y) {
    const scored *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id - b->id;
}

// llama.cpp's SentencePiece tokenizer merges the adjacent pair whose concatenation is a
// token with the highest score (leftmost among equal scores). The same order as a
// rank table: every split of a token into two tokens is a merge, ranked by the dense
// rank of the token's score, so equal scores tie and the position decides.
static snp_status load_spm_merges(tokenizer *t, const float *scores, const int32_t *types) {
    int32_t n = t->n_vocab;
    scored *order = malloc((size_t)n * sizeof *order);
    uint32_t *rank = malloc((size_t)n * sizeof *rank);
    snp_status st = SNP_OK;
    if (!order || !rank) {
        st = snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (%d scores)", n);
        goto done;
    }
    for (int32_t i = 0; i < n; i++)
        order[i] = (scored){scores[i], i};
    qsort(order, (size_t)n, sizeof *order, by_score_desc);
    uint32_t r = 0;
    for (int32_t i = 0; i < n; i++) {
        if (i > 0 && order[i].score != order[i - 1].score) r++;
        rank[order[i].id] = r;
    }
    TRY_GOTO(st, tok_merges_init(&t->merges, (size_t)n * 4), done);
    // Keys (the '▁' spelling) live in the vocab map's entries; walk those.
    for (uint32_t k = 0; k < t->vocab.n; k++) {
        const tok_map_entry *e = &t->vocab.ents[k];
        int32_t id = e->val;
        if (types && types[id] != GGUF_TOK_NORMAL && types[id] != GGUF_TOK_USER) continue;
        const char *s = t->vocab.keys.p + e->off;
        for (uint32_t cut = 1; cut < e->len; cut++) {
            if (((uint8_t)s[cut] & 0xC0) == 0x80) continue; // not a character boundary
            int32_t l = tok_map_get(&t->vocab, s, cut);
            int32_t rr = tok_map_get(&t->vocab, s + cut, e->len - cut);
            if (l >= 0 && rr >= 0)
                TRY_GOTO(st, tok_merges_put(&t->merges, l, rr, rank[id], id), done);
        }
    }
done:
    free(order);
    free(rank);
    return st;
}

static snp_status choose_pre(tokenizer *t, const gguf_file *f) {
    const char *key = "tokenizer.ggml.pre";
    char name[64] = "default";
    if (gguf_find_key(f, key) >= 0) {
        gguf_str s;
        TRY(gguf_get_str(f, key, &s));
        snprintf(name, sizeof name, "%.*s", (int)(s.len < 63 ? s.len : 63), s.ptr);
    }
    for (size_t i = 0; i < sizeof gguf_pres / sizeof gguf_pres[0]; i++) {
        if (strcmp(gguf_pres[i].name, name) != 0) continue;
        const char *re = !gguf_pres[i].regex                         ? tok_re_gpt2
                         : strcmp(gguf_pres[i].regex, "llama3") == 0 ? tok_re_llama3
                                                                     : tok_re_qwen2;
        return tok_compile_split(t, re, 0, gguf_path(f));
    }
    return snp_fail(SNP_ERR_UNSUPPORTED,
                    "%s: %s '%s' is not supported (known: default, gpt2, smollm, llama-bpe, "
                    "llama3, qwen2)",
                    gguf_path(f), key, name);
}

snp_status tokenizer_load_gguf(const gguf_file *f, tokenizer **out) {
    *out = NULL;
    const char *path = gguf_path(f);
    if (gguf_find_key(f, "tokenizer.ggml.model") < 0 ||
        gguf_find_key(f, "tokenizer.ggml.tokens") < 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: no vocabulary (tokenizer.ggml.model / tokenizer.ggml.tokens absent)",
                        path);
    gguf_str model;
    TRY(gguf_get_str(f, "tokenizer.ggml.model", &model));
    int is_gpt2 = model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0;
    int is_llama = model.len == 5 && memcmp(model.ptr, "llama", 5) == 0;
    if (!is_gpt2 && !is_llama)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model '%.*s' is not supported (gpt2 or llama)", path,
                        (int)(model.len > 40 ? 40 : model.len), model.ptr);
    gguf_value_type ty;
    uint64_t n = 0;
    TRY(gguf_get_arr(f, "tokenizer.ggml.tokens", &ty, &n));
    if (ty != GGUF_TYPE_STRING || n == 0 || n >= (1u << 30))
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: tokenizer.ggml.tokens must be a non-empty string array (type %d, %llu "
                        "entries)",
                        path, (int)ty, (unsigned long long)n);
    snp_status st = SNP_OK;
    tokenizer *t = NULL;
    tok_buf key = {0}, piece = {0};
    const int32_t *types = NULL;
    const float *scores = NULL;
    TRY_GOTO(st, tok_alloc(&t), done);
    t->model = is_gpt2 ? TOK_MODEL_BYTE_BPE : TOK_MODEL_SPM_BPE;
    TRY_GOTO(st, tok_set_vocab_size(t, (int32_t)n), done);
    if (gguf_find_key(f, "tokenizer.ggml.token_type") >= 0)
        TRY_GOTO(
            st,
            typed_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, n, (const void **)&types),
            done);
    if (is_llama) {
        if (gguf_find_key(f, "tokenizer.ggml.scores") < 0) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: model 'llama' has no tokenizer.ggml.scores", path);
            goto done;
        }
        TRY_GOTO(
            st,
            typed_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, n, (const void **)&scores),
            done);
        t->dec_meta = t->dec_bytes = 1;
    }
    TRY_GOTO(st, tok_map_init(&t->vocab, (size_t)n), done);
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        TRY_GOTO(st, gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s), done);
        key.n = piece.n = 0;
        if (is_gpt2)
            TRY_GOTO(st, tok_bytelevel_decode(s.ptr, s.len, &key), done);
        else
            TRY_GOTO(st, tok_buf_append(&key, s.ptr, s.len), done);
        int32_t type = types ? types[i] : GGUF_TOK_NORMAL;
        if (type == GGUF_TOK_UNKNOWN || type == GGUF_TOK_CONTROL || type == GGUF_TOK_USER) {
            // Matched in the text before splitting, as transformers' GGUF converter does.
            TRY_GOTO(st,
                     tok_add_added(t, (int32_t)i, s.ptr, s.len, 0, 0, 0, type != GGUF_TOK_USER, 0),
                     done);
            if (type == GGUF_TOK_USER)
                TRY_GOTO(st, tok_map_put(&t->vocab, key.p, key.n, (int32_t)i), done);
            continue;
        }
        TRY_GOTO(st, tok_map_put(&t->vocab, key.p, key.n, (int32_t)i), done);
        TRY_GOTO(st, tok_decode_piece(t, s.ptr, s.len, &piece), done);
        TRY_GOTO(st, tok_set_piece(t, (int32_t)i, piece.p ? piece.p : "", piece.n), done);
        if (is_llama && type == GGUF_TOK_BYTE && piece.n == 1) {
            t->byte_id[(uint8_t)piece.p[0]] = (int32_t)i;
            t->byte_fallback = 1;
        }
    }
    if (is_gpt2) {
        for (int b = 0; b < 256; b++) {
            char raw = (char)b;
            t->byte_id[b] = tok_map_get(&t->vocab, &raw, 1);
        }
        TRY_GOTO(st, load_gpt2_merges(t, f), done);
        TRY_GOTO(st, choose_pre(t, f), done);
    } else {
        TRY_GOTO(st, load_spm_merges(t, scores, types), done);
    }
    // Without token types every control token would be read as text: <|im_start|>
    // spelled in a template would no longer open a turn, silently.
    if (gguf_find_key(f, "tokenizer.ggml.token_type") < 0) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "%s: no tokenizer.ggml.token_type: snaptp cannot tell its control tokens "
                      "from text (llama.cpp's convert_hf_to_gguf.py writes it; convert again)",
                      path);
        goto done;
    }
    TRY_GOTO(st, get_opt_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos_id), done);
    TRY_GOTO(st, get_opt_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos_id), done);
    if (is_llama)
        TRY_GOTO(st, get_opt_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk_id),
                 done);
    // Ids snaptp does not use must still be ids of this vocabulary: one outside it is a
    // broken file.
    static const char *const unused_ids[] = {
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id"};
    for (size_t k = 0; k < sizeof unused_ids / sizeof unused_ids[0]; k++) {
        int32_t unused = -1;
        TRY_GOTO(st, get_opt_id(f, unused_ids[k], t->n_vocab, &unused), done);
    }
    int32_t eot = -1, eom = -1;
    TRY_GOTO(st, get_opt_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, &eot), done);
    TRY_GOTO(st, get_opt_id(f, "tokenizer.ggml.eom_token_id", t->n_vocab, &eom), done);
    t->add_bos = is_llama;
    TRY_GOTO(st, get_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos), done);
    int space_prefix = is_llama;
    TRY_GOTO(st, get_opt_bool(f, "tokenizer.ggml.add_space_prefix", &space_prefix), done);
    if (is_llama) {
        tok_norm_op *op = &t->norm[t->n_norm];
        if (space_prefix) {
            *op++ = (tok_norm_op){TOK_NORM_PREPEND, NULL, strdup("\xE2\x96\x81")};
            t->n_norm++;
            t->dec_strip_space = 1;
        }
        *op = (tok_norm_op){TOK_NORM_REPLACE, strdup(" "), strdup("\xE2\x96\x81")};
        t->n_norm++;
        for (int k = 0; k < t->n_norm; k++)
            if (!t->norm[k].to || (t->norm[k].kind == TOK_NORM_REPLACE && !t->norm[k].from)) {
                st = snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
                goto done;
            }
    } else if (space_prefix) {
        t->add_prefix_space = 1;
    }
    if (gguf_find_key(f, "tokenizer.chat_template") >= 0) {
        gguf_str s;
        TRY_GOTO(st, gguf_get_str(f, "tokenizer.chat_template", &s), done);
        t->chat_template = strndup(s.ptr, s.len);
        if (!t->chat_template) {
            st = snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
            goto done;
        }
        t->chat_template_source = "tokenizer.chat_template";
    }
    TRY_GOTO(st, tok_finish(t, path), done);
    if (eot >= 0) t->attr[eot] |= TOK_ATTR_EOG;
    if (eom >= 0) t->attr[eom] |= TOK_ATTR_EOG;
    *out = t;
    t = NULL;
done:
    tokenizer_free(t);
    free(key.p);
    free(piece.p);
    return st;
}
