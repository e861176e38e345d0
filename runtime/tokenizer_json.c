// tokenizer_json: loads a Hugging Face tokenizer.json (BPE model, with the normalizers,
// pre-tokenizers, post-processor and decoder real models use) and the
// tokenizer_config.json beside it. Anything else is refused naming the field.
#include "tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct json_ctx {
    tokenizer *t;
    const char *path;
    int byte_level; // a ByteLevel pre-tokenizer was seen
} json_ctx;

static const char *type_of(const cJSON *o) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

static int bool_field(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static const char *str_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static snp_status unsupported(const json_ctx *c, const char *field, const char *type) {
    return snp_fail(SNP_ERR_UNSUPPORTED, "%s: %s '%s' is not supported", c->path, field,
                    type ? type : "(no type)");
}

static snp_status add_norm(json_ctx *c, tok_norm_kind kind, const char *from, const char *to,
                           const char *field) {
    tokenizer *t = c->t;
    if (t->n_norm == TOK_MAX_NORM_OPS)
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: %s: more than %d normalizers", c->path, field,
                        TOK_MAX_NORM_OPS);
    tok_norm_op *op = &t->norm[t->n_norm++];
    op->kind = kind;
    op->from = from ? strdup(from) : NULL;
    op->to = to ? strdup(to) : NULL;
    if ((from && !op->from) || (to && !op->to))
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
    return SNP_OK;
}

static snp_status parse_normalizer(json_ctx *c, const cJSON *n, const char *field) {
    if (!n || cJSON_IsNull(n)) return SNP_OK;
    const char *ty = type_of(n);
    char sub[160];
    if (!ty) return snp_fail(SNP_ERR_FORMAT, "%s: %s has no \"type\"", c->path, field);
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(arr))
            return snp_fail(SNP_ERR_FORMAT, "%s: %s.normalizers is not an array", c->path, field);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", field, i++);
            TRY(parse_normalizer(c, e, sub));
        }
        return SNP_OK;
    }
    if (strcmp(ty, "NFC") == 0) return add_norm(c, TOK_NORM_NFC, NULL, NULL, field);
    if (strcmp(ty, "Prepend") == 0) {
        const char *p = str_field(n, "prepend");
        if (!p) return snp_fail(SNP_ERR_FORMAT, "%s: %s.prepend is not a string", c->path, field);
        return add_norm(c, TOK_NORM_PREPEND, NULL, p, field);
    }
    if (strcmp(ty, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = str_field(pat, "String");
        const char *to = str_field(n, "content");
        if (!from || !*from || !to)
            return snp_fail(SNP_ERR_UNSUPPORTED,
                            "%s: %s: only Replace with a non-empty String pattern is supported",
                            c->path, field);
        return add_norm(c, TOK_NORM_REPLACE, from, to, field);
    }
    snprintf(sub, sizeof sub, "%s.type", field);
    return unsupported(c, sub, ty);
}

// A literal pattern as a regex: PCRE2 \Q..\E, with any "\E" inside spelled out.
static snp_status literal_regex(const char *s, tok_buf *out) {
    TRY(tok_buf_append(out, "\\Q", 2));
    for (const char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] == 'E') {
            TRY(tok_buf_append(out, "\\E\\\\E\\Q", 8));
            p++;
        } else {
            TRY(tok_buf_append(out, p, 1));
        }
    }
    return tok_buf_append(out, "\\E", 2);
}

// Metaspace's replacement (only '▁') and prepend scheme (or the older add_prefix_space).
static snp_status parse_metaspace(json_ctx *c, const cJSON *m, const char *field, int *prepend) {
    const char *rep = str_field(m, "replacement");
    if (rep && strcmp(rep, "\xE2\x96\x81") != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: %s.replacement '%s' is not supported (only '▁')",
                        c->path, field, rep);
    const char *scheme = str_field(m, "prepend_scheme");
    if (!scheme) {
        *prepend = bool_field(m, "add_prefix_space", 1) ? TOK_META_ALWAYS : TOK_META_NEVER;
    } else if (strcmp(scheme, "always") == 0) {
        *prepend = TOK_META_ALWAYS;
    } else if (strcmp(scheme, "first") == 0) {
        *prepend = TOK_META_FIRST;
    } else if (strcmp(scheme, "never") == 0) {
        *prepend = TOK_META_NEVER;
    } else {
        char sub[160];
        snprintf(sub, sizeof sub, "%s.prepend_scheme", field);
        return unsupported(c, sub, scheme);
    }
    return SNP_OK;
}

static snp_status parse_pretok(json_ctx *c, const cJSON *p, const char *field) {
    if (!p || cJSON_IsNull(p)) return SNP_OK;
    tokenizer *t = c->t;
    const char *ty = type_of(p);
    char sub[160];
    if (!ty) return snp_fail(SNP_ERR_FORMAT, "%s: %s has no \"type\"", c->path, field);
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return snp_fail(SNP_ERR_FORMAT, "%s: %s.pretokenizers is not an array", c->path, field);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", field, i++);
            TRY(parse_pretok(c, e, sub));
        }
        return SNP_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        c->byte_level = 1;
        if (bool_field(p, "add_prefix_space", 0)) {
            if (t->n_splits > 0)
                return snp_fail(SNP_ERR_UNSUPPORTED,
                                "%s: %s: add_prefix_space after another pre-tokenizer is not "
                                "supported",
                                c->path, field);
            t->add_prefix_space = 1;
        }
        if (bool_field(p, "use_regex", 1)) return tok_compile_split(t, tok_re_gpt2, 0, c->path);
        return SNP_OK;
    }
    if (strcmp(ty, "Metaspace") == 0) {
        TRY(parse_metaspace(c, p, field, &t->meta_prepend));
        if (t->n_splits > 0)
            return snp_fail(SNP_ERR_UNSUPPORTED,
                            "%s: %s: Metaspace after another pre-tokenizer is not supported",
                            c->path, field);
        t->meta_pretok = 1;
        t->meta_split = bool_field(p, "split", 1);
        return SNP_OK;
    }
    if (strcmp(ty, "Digits") == 0) {
        const char *re = bool_field(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+";
        return tok_compile_split(t, re, 0, c->path);
    }
    if (strcmp(ty, "Split") == 0) {
        const char *behavior = str_field(p, "behavior");
        int removed;
        if (behavior && strcmp(behavior, "Isolated") == 0) {
            removed = 0;
        } else if (behavior && strcmp(behavior, "Removed") == 0) {
            removed = 1;
        } else {
            snprintf(sub, sizeof sub, "%s.behavior", field);
            return unsupported(c, sub, behavior);
        }
        if (bool_field(p, "invert", 0))
            return snp_fail(SNP_ERR_UNSUPPORTED, "%s: %s.invert true is not supported", c->path,
                            field);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = str_field(pat, "Regex");
        const char *lit = str_field(pat, "String");
        if (re) return tok_compile_split(t, re, removed, c->path);
        if (!lit)
            return snp_fail(SNP_ERR_FORMAT, "%s: %s.pattern has no Regex or String", c->path,
                            field);
        tok_buf b = {0};
        snp_status st = literal_regex(lit, &b);
        if (st == SNP_OK) st = tok_compile_split(t, b.p, removed, c->path);
        free(b.p);
        return st;
    }
    snprintf(sub, sizeof sub, "%s.type", field);
    return unsupported(c, sub, ty);
}

static snp_status parse_decoder(json_ctx *c, const cJSON *d, const char *field) {
    if (!d || cJSON_IsNull(d)) return SNP_OK;
    tokenizer *t = c->t;
    const char *ty = type_of(d);
    char sub[160];
    if (!ty) return snp_fail(SNP_ERR_FORMAT, "%s: %s has no \"type\"", c->path, field);
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (!cJSON_IsArray(arr))
            return snp_fail(SNP_ERR_FORMAT, "%s: %s.decoders is not an array", c->path, field);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.decoders[%d]", field, i++);
            TRY(parse_decoder(c, e, sub));
        }
        return SNP_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0 || strcmp(ty, "Fuse") == 0) return SNP_OK;
    if (strcmp(ty, "Metaspace") == 0) { // '▁' -> ' ', except in the first token: dropped
        int prepend = TOK_META_ALWAYS;
        TRY(parse_metaspace(c, d, field, &prepend));
        t->dec_meta = 1;
        t->dec_first_drop = prepend != TOK_META_NEVER;
        return SNP_OK;
    }
    if (strcmp(ty, "ByteFallback") == 0) {
        t->dec_bytes = 1;
        return SNP_OK;
    }
    if (strcmp(ty, "Replace") == 0) {
        const char *from = str_field(cJSON_GetObjectItemCaseSensitive(d, "pattern"), "String");
        const char *to = str_field(d, "content");
        if (from && to && strcmp(from, "\xE2\x96\x81") == 0 && strcmp(to, " ") == 0) {
            t->dec_meta = 1;
            return SNP_OK;
        }
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: %s: only Replace '▁' -> ' ' is supported",
                        c->path, field);
    }
    if (strcmp(ty, "Strip") == 0) {
        const char *content = str_field(d, "content");
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(d, "start");
        const cJSON *stop = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (!content || strcmp(content, " ") != 0 || !cJSON_IsNumber(start) ||
            (cJSON_IsNumber(stop) && stop->valueint != 0))
            return snp_fail(SNP_ERR_UNSUPPORTED,
                            "%s: %s: only Strip of leading ' ' (stop 0) is supported", c->path,
                            field);
        t->dec_strip_space = start->valueint;
        return SNP_OK;
    }
    snprintf(sub, sizeof sub, "%s.type", field);
    return unsupported(c, sub, ty);
}

// TemplateProcessing that opens with a special token is how tokenizer.json asks for BOS.
static snp_status parse_post(json_ctx *c, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return SNP_OK;
    const char *ty = type_of(p);
    if (ty && strcmp(ty, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "processors"))
            TRY(parse_post(c, e));
        return SNP_OK;
    }
    if (!ty || strcmp(ty, "TemplateProcessing") != 0) return SNP_OK;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(p, "single"), 0);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const char *name = str_field(sp, "id");
    if (!name) return SNP_OK;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(p, "special_tokens"), name);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids");
    const cJSON *id = cJSON_GetArrayItem(ids, 0);
    if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= c->t->n_vocab)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: post_processor.special_tokens['%s'].ids is not a valid id", c->path,
                        name);
    c->t->bos_id = id->valueint;
    c->t->add_bos = 1;
    return SNP_OK;
}

// The key of a vocabulary entry in the model's alphabet: raw bytes for byte-level.
static snp_status model_key(const tokenizer *t, const char *s, tok_buf *out) {
    out->n = 0;
    if (t->model == TOK_MODEL_BYTE_BPE) return tok_bytelevel_decode(s, strlen(s), out);
    return tok_buf_append(out, s, strlen(s));
}

static snp_status parse_merges(json_ctx *c, const cJSON *merges, tok_buf *ka, tok_buf *kb) {
    tokenizer *t = c->t;
    TRY(tok_merges_init(&t->merges, (size_t)cJSON_GetArraySize(merges)));
    uint32_t rank = 0;
    const cJSON *m;
    tok_buf joined = {0};
    snp_status st = SNP_OK;
    cJSON_ArrayForEach(m, merges) {
        const char *a, *b;
        char *dup = NULL;
        if (cJSON_IsString(m)) { // "a b"
            dup = strdup(m->valuestring);
            char *sp = dup ? strchr(dup, ' ') : NULL;
            if (!sp || strchr(sp + 1, ' ')) {
                free(dup);
                st = snp_fail(SNP_ERR_FORMAT, "%s: model.merges[%u] '%s' is not two tokens",
                              c->path, rank, m->valuestring);
                goto done;
            }
            *sp = '\0';
            a = dup;
            b = sp + 1;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            a = cJSON_GetArrayItem(m, 0)->valuestring;
            b = cJSON_GetArrayItem(m, 1)->valuestring;
        } else {
            st = snp_fail(SNP_ERR_FORMAT, "%s: model.merges[%u] is not a string or a pair", c->path,
                          rank);
            goto done;
        }
        st = model_key(t, a, ka);
        if (st == SNP_OK) st = model_key(t, b, kb);
        joined.n = 0;
        if (st == SNP_OK) st = tok_buf_append(&joined, ka->p, ka->n);
        if (st == SNP_OK) st = tok_buf_append(&joined, kb->p, kb->n);
        int32_t left = tok_map_get(&t->vocab, ka->p, ka->n);
        int32_t right = tok_map_get(&t->vocab, kb->p, kb->n);
        int32_t id = tok_map_get(&t->vocab, joined.p, joined.n);
        if (st == SNP_OK && (left < 0 || right < 0 || id < 0))
            st = snp_fail(SNP_ERR_FORMAT,
                          "%s: model.merges[%u] ('%s' '%s'): '%s%s' not in model.vocab", c->path,
                          rank, a, b,
                          left < 0    ? a
                          : right < 0 ? b
                                      : a,
                          left < 0 || right < 0 ? "" : b);
        free(dup);
        if (st != SNP_OK) goto done;
        TRY_GOTO(st, tok_merges_put(&t->merges, left, right, rank, id), done);
        rank++;
    }
done:
    free(joined.p);
    return st;
}

static snp_status parse_model(json_ctx *c, const cJSON *model) {
    tokenizer *t = c->t;
    const char *ty = type_of(model);
    if (!cJSON_IsObject(model)) return snp_fail(SNP_ERR_FORMAT, "%s: no \"model\" object", c->path);
    if (!ty || strcmp(ty, "BPE") != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: model.type '%s' is not supported (only BPE)",
                        c->path, ty ? ty : "(missing)");
    const char *cont = str_field(model, "continuing_subword_prefix");
    const char *suffix = str_field(model, "end_of_word_suffix");
    if ((cont && *cont) || (suffix && *suffix))
        return snp_fail(
            SNP_ERR_UNSUPPORTED,
            "%s: model.continuing_subword_prefix / end_of_word_suffix are not supported", c->path);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: model.dropout %g is not supported", c->path,
                        dropout->valuedouble);
    t->fuse_unk = bool_field(model, "fuse_unk", 0);
    t->byte_fallback = bool_field(model, "byte_fallback", 0);
    t->ignore_merges = bool_field(model, "ignore_merges", 0);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab))
        return snp_fail(SNP_ERR_FORMAT, "%s: model.vocab is not an object", c->path);
    if (!cJSON_IsArray(merges))
        return snp_fail(SNP_ERR_FORMAT, "%s: model.merges is not an array", c->path);

    snp_status st = SNP_OK;
    tok_buf key = {0}, key2 = {0}, piece = {0};
    TRY_GOTO(st, tok_map_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab)), done);
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= t->n_vocab) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: model.vocab['%s'] is not an id in 0..%d", c->path,
                          e->string, t->n_vocab - 1);
            goto done;
        }
        int32_t id = e->valueint;
        if (e->valuedouble != (double)id || t->piece_set[id]) {
            st = snp_fail(SNP_ERR_FORMAT,
                          "%s: model.vocab['%s'] = %g: %s", c->path, e->string, e->valuedouble,
                          e->valuedouble != (double)id ? "not an integer id"
                                                       : "that id belongs to an earlier entry too");
            goto done;
        }
        TRY_GOTO(st, model_key(t, e->string, &key), done);
        TRY_GOTO(st, tok_map_put(&t->vocab, key.p, key.n, id), done);
        piece.n = 0;
        TRY_GOTO(st, tok_decode_piece(t, e->string, strlen(e->string), &piece), done);
        TRY_GOTO(st, tok_set_piece(t, id, piece.p, piece.n), done);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        if (t->model == TOK_MODEL_BYTE_BPE) {
            char raw = (char)b;
            t->byte_id[b] = tok_map_get(&t->vocab, &raw, 1);
        } else {
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_id[b] = tok_map_get(&t->vocab, name, 6);
        }
    }
    const char *unk = str_field(model, "unk_token");
    if (unk) {
        TRY_GOTO(st, model_key(t, unk, &key), done);
        t->unk_id = tok_map_get(&t->vocab, key.p, key.n);
        if (t->unk_id < 0) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: model.unk_token '%s' is not in model.vocab", c->path,
                          unk);
            goto done;
        }
    }
    st = parse_merges(c, merges, &key, &key2);
done:
    free(key.p);
    free(key2.p);
    free(piece.p);
    return st;
}

// The largest id over model.vocab and added_tokens, checked as it goes.
static snp_status count_vocab(json_ctx *c, const cJSON *model, const cJSON *added, int32_t *out) {
    double max_id = -1;
    int64_t n_entries = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(model, "vocab")) {
        if (cJSON_IsNumber(e) && e->valuedouble > max_id) max_id = e->valuedouble;
        n_entries++;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsNumber(id) && id->valuedouble > max_id) max_id = id->valuedouble;
        n_entries++;
    }
    if (max_id < 0) return snp_fail(SNP_ERR_FORMAT, "%s: model.vocab is empty", c->path);
    if (max_id >= (1 << 30))
        return snp_fail(SNP_ERR_FORMAT, "%s: token id %.0f is too large", c->path, max_id);
    // Tables are sized by the largest id: real vocabularies are dense (a few reserved
    // holes at most), so an id far past the entries' count is a broken file, not a
    // reason to allocate gigabytes (found by fuzz_tokenizer_json).
    if (max_id >= 2.0 * (double)n_entries + 1024)
        return snp_fail(SNP_ERR_FORMAT,
                        "%s: token id %.0f, but only %lld vocabulary and added entries: a "
                        "vocabulary this sparse is not a tokenizer's",
                        c->path, max_id, (long long)n_entries);
    *out = (int32_t)max_id + 1;
    return SNP_OK;
}

static snp_status parse_added(json_ctx *c, const cJSON *added) {
    if (!added || cJSON_IsNull(added)) return SNP_OK;
    if (!cJSON_IsArray(added))
        return snp_fail(SNP_ERR_FORMAT, "%s: added_tokens is not an array", c->path);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = str_field(e, "content");
        if (!cJSON_IsNumber(id) || !content)
            return snp_fail(SNP_ERR_FORMAT, "%s: added_tokens[%d] lacks a numeric id or a content",
                            c->path, i);
        TRY(tok_add_added(c->t, id->valueint, content, strlen(content), bool_field(e, "lstrip", 0),
                          bool_field(e, "rstrip", 0), bool_field(e, "normalized", 0),
                          bool_field(e, "special", 0), bool_field(e, "single_word", 0)));
        i++;
    }
    return SNP_OK;
}

static const char *token_field(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return str_field(v, "content"); // {"content": "<s>", "lstrip": false, ...}
}

// tokenizer_config.json: chat template, BOS/EOS and add_bos_token, as transformers
// reads them. Absent file: nothing to do; a malformed one is an error.
static snp_status parse_config(json_ctx *c, const char *cfg_path) {
    tokenizer *t = c->t;
    FILE *probe = fopen(cfg_path, "rb");
    if (!probe) return SNP_OK;
    fclose(probe);
    char *text = NULL;
    size_t n = 0;
    TRY(tok_read_file(cfg_path, &text, &n));
    snp_status st = SNP_OK;
    cJSON *cfg = cJSON_ParseWithLength(text, n);
    if (!cJSON_IsObject(cfg)) {
        const char *err = cJSON_GetErrorPtr();
        st = snp_fail(SNP_ERR_FORMAT, "%s: not a valid JSON object (error near byte %td)", cfg_path,
                      err && err >= text && err <= text + n ? err - text : (ptrdiff_t)-1);
        goto done;
    }
    const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const char *tmpl_s = cJSON_IsString(tmpl) ? tmpl->valuestring : NULL;
    if (cJSON_IsArray(tmpl)) { // [{"name": "default", "template": "..."}, ...]
        const cJSON *e;
        cJSON_ArrayForEach(e, tmpl) {
            const char *name = str_field(e, "name");
            if (name && strcmp(name, "default") == 0) tmpl_s = str_field(e, "template");
        }
    }
    if (tmpl_s) {
        t->chat_template = strdup(tmpl_s);
        if (!t->chat_template) {
            st = snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
            goto done;
        }
        t->chat_template_source = "tokenizer_config.json";
    }
    const char *bos = token_field(cfg, "bos_token");
    const char *eos = token_field(cfg, "eos_token");
    if (bos) {
        t->bos_id = tokenizer_find(t, bos);
        if (t->bos_id < 0) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: bos_token '%s' is not in the vocabulary", cfg_path,
                          bos);
            goto done;
        }
    }
    if (eos) {
        t->eos_id = tokenizer_find(t, eos);
        if (t->eos_id < 0) {
            st = snp_fail(SNP_ERR_FORMAT, "%s: eos_token '%s' is not in the vocabulary", cfg_path,
                          eos);
            goto done;
        }
    }
    const cJSON *add_bos = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    if (cJSON_IsBool(add_bos)) t->add_bos = cJSON_IsTrue(add_bos);
done:
    cJSON_Delete(cfg);
    free(text);
    return st;
}

snp_status tokenizer_load_json(const char *path, tokenizer **out) {
    *out = NULL;
    char *text = NULL;
    size_t n = 0;
    TRY(tok_read_file(path, &text, &n));
    snp_status st = SNP_OK;
    tokenizer *t = NULL;
    cJSON *root = cJSON_ParseWithLength(text, n);
    if (!root) {
        const char *err = cJSON_GetErrorPtr();
        st = snp_fail(SNP_ERR_FORMAT,
                      "%s: not valid JSON (truncated or malformed near byte %td of %zu)", path,
                      err && err >= text && err <= text + n ? err - text : (ptrdiff_t)-1, n);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = snp_fail(SNP_ERR_FORMAT, "%s: top level is not a JSON object", path);
        goto done;
    }
    TRY_GOTO(st, tok_alloc(&t), done);
    json_ctx c = {.t = t, .path = path};
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(model)) {
        st = snp_fail(SNP_ERR_FORMAT, "%s: no \"model\" object", path);
        goto done;
    }
    int32_t n_vocab = 0;
    TRY_GOTO(st, count_vocab(&c, model, added, &n_vocab), done);
    TRY_GOTO(st, tok_set_vocab_size(t, n_vocab), done);
    TRY_GOTO(
        st,
        parse_normalizer(&c, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer"),
        done);
    TRY_GOTO(
        st,
        parse_pretok(&c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer"),
        done);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    TRY_GOTO(st, parse_decoder(&c, dec, "decoder"), done);
    const char *dec_ty = type_of(dec);
    t->model = c.byte_level || (dec_ty && strcmp(dec_ty, "ByteLevel") == 0) ? TOK_MODEL_BYTE_BPE
                                                                            : TOK_MODEL_SPM_BPE;
    TRY_GOTO(st, parse_model(&c, model), done);
    TRY_GOTO(st, parse_added(&c, added), done);
    // Ids run 0..n_vocab-1: one no entry names would decode to nothing, silently.
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (!t->piece_set[id]) {
            st = snp_fail(SNP_ERR_FORMAT,
                          "%s: id %d has no token in model.vocab or added_tokens (ids must run "
                          "0..%d without gaps)",
                          path, id, t->n_vocab - 1);
            goto done;
        }
    TRY_GOTO(st, parse_post(&c, cJSON_GetObjectItemCaseSensitive(root, "post_processor")), done);

    // tokenizer_config.json beside the file.
    const char *slash = strrchr(path, '/');
    size_t dir_n = slash ? (size_t)(slash - path) + 1 : 0;
    char *cfg = malloc(dir_n + sizeof "tokenizer_config.json");
    if (!cfg) {
        st = snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
        goto done;
    }
    memcpy(cfg, path, dir_n);
    strcpy(cfg + dir_n, "tokenizer_config.json");
    st = parse_config(&c, cfg);
    free(cfg);
    if (st != SNP_OK) goto done;
    TRY_GOTO(st, tok_finish(t, path), done);
    *out = t;
    t = NULL;
done:
    tokenizer_free(t);
    cJSON_Delete(root);
    free(text);
    return st;
}
