// tokenizer_core: the tokenizer object itself: allocation and free, the per-id tables
// the loaders fill, added tokens and their trie, the end-of-generation set, the
// accessors, reading (possibly gzip'd) files, and tokenizer_load's dispatch by path.
#include "tokenizer_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

const char *const tok_re_gpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char *const tok_re_llama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char *const tok_re_qwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

snp_status tok_alloc(tokenizer **out) {
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
    t->unk_id = t->bos_id = t->eos_id = -1;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    *out = t;
    return SNP_OK;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->pieces.p);
    free(t->piece_off);
    free(t->piece_len);
    free(t->piece_set);
    free(t->attr);
    tok_map_free(&t->vocab);
    tok_merges_free(&t->merges);
    free(t->added);
    free(t->added_text.p);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].from);
        free(t->norm[i].to);
    }
    for (int i = 0; i < t->n_splits; i++)
        pcre2_code_free(t->splits[i].re);
    free(t->chat_template);
    free(t);
}

snp_status tok_set_vocab_size(tokenizer *t, int32_t n_vocab) {
    if (n_vocab <= 0) return snp_fail(SNP_ERR_FORMAT, "tokenizer: empty vocabulary");
    t->n_vocab = n_vocab;
    t->piece_off = calloc((size_t)n_vocab, sizeof *t->piece_off);
    t->piece_len = calloc((size_t)n_vocab, sizeof *t->piece_len);
    t->attr = calloc((size_t)n_vocab, 1);
    t->piece_set = calloc((size_t)n_vocab, 1);
    if (!t->piece_off || !t->piece_len || !t->attr || !t->piece_set)
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (%d tokens)", n_vocab);
    return SNP_OK;
}

// Pieces are appended to one arena, so a later call for the same id (an added token
// overriding a vocabulary entry) simply points elsewhere.
snp_status tok_set_piece(tokenizer *t, int32_t id, const char *bytes, size_t n) {
    if (t->pieces.n + n > UINT32_MAX)
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: token pieces exceed 4 GiB");
    t->piece_off[id] = (uint32_t)t->pieces.n;
    t->piece_len[id] = (uint32_t)n;
    t->piece_set[id] = 1;
    return tok_buf_append(&t->pieces, bytes, n);
}

snp_status tok_add_added(tokenizer *t, int32_t id, const char *content, size_t n, int lstrip,
                         int rstrip, int normalized, int special, int single_word) {
    if (id < 0 || id >= t->n_vocab)
        return snp_fail(SNP_ERR_FORMAT, "tokenizer: added token '%.*s' has id %d outside 0..%d",
                        (int)(n > 64 ? 64 : n), content, id, t->n_vocab - 1);
    if (t->n_added % 64 == 0) {
        tok_added *a = realloc(t->added, (t->n_added + 64) * sizeof *a);
        if (!a) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (added tokens)");
        t->added = a;
    }
    if (t->added_text.n + n > UINT32_MAX)
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: added tokens exceed 4 GiB");
    tok_added *a = &t->added[t->n_added++];
    *a = (tok_added){.id = id,
                     .off = (uint32_t)t->added_text.n,
                     .len = (uint32_t)n,
                     .lstrip = (uint8_t)lstrip,
                     .rstrip = (uint8_t)rstrip,
                     .normalized = (uint8_t)normalized,
                     .special = (uint8_t)special,
                     .single_word = (uint8_t)single_word};
    TRY(tok_buf_append(&t->added_text, content, n));
    t->attr[id] |= TOK_ATTR_ADDED | (special ? TOK_ATTR_SPECIAL : 0);
    // HF decodes an added token by running its content through the model's decoder.
    tok_buf piece = {0};
    snp_status st = tok_decode_piece(t, content, n, &piece);
    if (st == SNP_OK) st = tok_set_piece(t, id, piece.p ? piece.p : "", piece.n);
    free(piece.p);
    return st;
}

static snp_status trie_insert(tok_trie *tr, const char *s, size_t n, int32_t added) {
    if (!tr->nodes) {
        tr->cap = 256;
        tr->nodes = malloc(tr->cap * sizeof *tr->nodes);
        if (!tr->nodes) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (trie)");
        tr->nodes[0] = (tok_trie_node){-1, -1, -1, 0};
        tr->n = 1;
    }
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != c)
            ch = tr->nodes[ch].sibling;
        if (ch < 0) {
            if (tr->n == tr->cap) {
                tok_trie_node *nn = realloc(tr->nodes, tr->cap * 2 * sizeof *nn);
                if (!nn) return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory (trie)");
                tr->nodes = nn;
                tr->cap *= 2;
            }
            ch = (int32_t)tr->n++;
            tr->nodes[ch] = (tok_trie_node){-1, tr->nodes[node].child, -1, c};
            tr->nodes[node].child = ch;
        }
        node = ch;
    }
    if (tr->nodes[node].added < 0) tr->nodes[node].added = added; // first spelling wins
    tr->first[(uint8_t)s[0]] = 1;
    return SNP_OK;
}

// Tokens that end a turn or a text in the families snaptp knows; marked as
// end-of-generation when the vocabulary has them as added/special tokens.
static const char *const eog_names[] = {
    "<|eot_id|>",    "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>",
    "<end_of_turn>", "<|end|>",    "</s>",       "<EOT>"};

static int has_meta_at(const char *s, size_t n, int at_end) {
    return n >= 3 && memcmp(at_end ? s + n - 3 : s, "\xE2\x96\x81", 3) == 0;
}

// Whether a SentencePiece text may be cut into words before each '▁' that follows
// another character (see tokenizer.spm_cut_words): true when no merge pair has a left
// side that does not end in '▁' and a right side that starts with '▁'.
static snp_status spm_check_cut(tokenizer *t) {
    t->spm_cut_words = 0;
    if (t->model != TOK_MODEL_SPM_BPE || t->n_splits > 0 || !t->merges.keys) return SNP_OK;
    uint32_t *off = calloc((size_t)t->n_vocab, sizeof *off);
    uint32_t *len = calloc((size_t)t->n_vocab, sizeof *len);
    if (!off || !len) {
        free(off);
        free(len);
        return snp_fail(SNP_ERR_MEMORY, "tokenizer: out of memory");
    }
    for (uint32_t e = 0; e < t->vocab.n; e++) {
        off[t->vocab.ents[e].val] = t->vocab.ents[e].off;
        len[t->vocab.ents[e].val] = t->vocab.ents[e].len;
    }
    int ok = 1;
    for (uint32_t i = 0; ok && i <= t->merges.mask; i++) {
        uint64_t k = t->merges.keys[i];
        if (k == UINT64_MAX) continue;
        uint32_t l = (uint32_t)(k >> 32), r = (uint32_t)k;
        const char *ks = t->vocab.keys.p;
        if (!has_meta_at(ks + off[l], len[l], 1) && has_meta_at(ks + off[r], len[r], 0)) ok = 0;
    }
    free(off);
    free(len);
    t->spm_cut_words = ok;
    return SNP_OK;
}

snp_status tok_finish(tokenizer *t, const char *what) {
    snp_status st = SNP_OK;
    tok_buf norm = {0};
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        const char *s = t->added_text.p + a->off;
        if (a->len == 0) continue;
        if (!a->normalized) {
            TRY_GOTO(st, trie_insert(&t->trie_raw, s, a->len, (int32_t)i), done);
        } else {
            // HF matches normalized tokens by their normalized spelling.
            norm.n = 0;
            TRY_GOTO(st, tok_normalize(t, s, a->len, &norm), done);
            if (norm.n) TRY_GOTO(st, trie_insert(&t->trie_norm, norm.p, norm.n, (int32_t)i), done);
        }
        for (size_t k = 0; k < sizeof eog_names / sizeof eog_names[0]; k++)
            if (strlen(eog_names[k]) == a->len && memcmp(eog_names[k], s, a->len) == 0)
                t->attr[a->id] |= TOK_ATTR_EOG;
    }
    if (t->eos_id >= 0) t->attr[t->eos_id] |= TOK_ATTR_EOG;
    TRY_GOTO(st, spm_check_cut(t), done);
    snprintf(t->desc, sizeof t->desc,
             "%s BPE, %d tokens, %u merges, %zu added, bos %d, eos %d, add_bos %d (%s)",
             t->model == TOK_MODEL_BYTE_BPE ? "byte-level" : "SentencePiece", t->n_vocab,
             t->merges.n, t->n_added, t->bos_id, t->eos_id, t->add_bos, what);
done:
    free(norm.p);
    return st;
}

snp_status tok_compile_split(tokenizer *t, const char *pattern, int removed, const char *what) {
    if (t->n_splits == TOK_MAX_SPLITS)
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer splits", what,
                        TOK_MAX_SPLITS);
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return snp_fail(SNP_ERR_UNSUPPORTED, "%s: regex /%s/ does not compile at offset %zu: %s",
                        what, pattern, (size_t)off, (const char *)msg);
    }
    // Without JIT (an unsupported CPU) pcre2_match interprets the pattern: slower, same result.
    t->splits[t->n_splits].jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    t->splits[t->n_splits].re = re;
    t->splits[t->n_splits].removed = removed;
    t->n_splits++;
    return SNP_OK;
}

// ---- accessors ---------------------------------------------------------------------
int32_t tokenizer_n_vocab(const tokenizer *t) {
    return t->n_vocab;
}
int32_t tokenizer_bos_id(const tokenizer *t) {
    return t->bos_id;
}
int32_t tokenizer_eos_id(const tokenizer *t) {
    return t->eos_id;
}
int tokenizer_add_bos_default(const tokenizer *t) {
    return t->add_bos && t->bos_id >= 0;
}
const char *tokenizer_chat_template(const tokenizer *t) {
    return t->chat_template;
}
const char *tokenizer_describe(const tokenizer *t) {
    return t->desc;
}

const char *tokenizer_chat_template_source(const tokenizer *t) {
    return t->chat_template_source ? t->chat_template_source : "";
}

int tokenizer_is_eog(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & TOK_ATTR_EOG);
}

int tokenizer_is_special(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & TOK_ATTR_SPECIAL);
}

const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *n_bytes) {
    if (id < 0 || id >= t->n_vocab) {
        *n_bytes = 0;
        return NULL;
    }
    *n_bytes = t->piece_len[id];
    return t->pieces.p + t->piece_off[id];
}

int32_t tokenizer_find(const tokenizer *t, const char *text) {
    size_t n = strlen(text);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added_text.p + t->added[i].off, text, n) == 0)
            return t->added[i].id;
    if (t->model == TOK_MODEL_BYTE_BPE) { // vocabulary keys are raw bytes
        tok_buf raw = {0};
        int32_t id = -1;
        if (tok_bytelevel_decode(text, n, &raw) == SNP_OK)
            id = tok_map_get(&t->vocab, raw.p, raw.n);
        free(raw.p);
        return id;
    }
    return tok_map_get(&t->vocab, text, n);
}

// ---- files ---------------------------------------------------------------------------
// ../shared/tokenizers ships gzip-compressed tokenizer.json files: zlib reads them.
static snp_status read_gzip(const char *path, tok_buf *out) {
    snp_status st = SNP_OK;
    gzFile gz = gzopen(path, "rb");
    if (!gz) return snp_fail(SNP_ERR_IO, "%s: cannot open as gzip: %s", path, strerror(errno));
    for (;;) {
        TRY_GOTO(st, tok_buf_reserve(out, 1 << 20), done);
        int got = gzread(gz, out->p + out->n, (unsigned)(out->cap - out->n - 1));
        if (got < 0) {
            int zerr = 0;
            st = snp_fail(SNP_ERR_FORMAT, "%s: corrupt gzip data after %zu bytes: %s", path,
                          out->n, gzerror(gz, &zerr));
            goto done;
        }
        if (got == 0) break;
        out->n += (size_t)got;
    }
    out->p[out->n] = '\0';
done:
    gzclose(gz);
    return st;
}

snp_status tok_read_file(const char *path, char **out, size_t *out_n) {
    snp_status st = SNP_OK;
    tok_buf b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return snp_fail(SNP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[2] = {0, 0};
    size_t got = fread(magic, 1, 2, f);
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        fclose(f);
        f = NULL;
        TRY_GOTO(st, read_gzip(path, &b), done);
        goto done;
    }
    TRY_GOTO(st, tok_buf_append(&b, magic, got), done);
    for (;;) {
        TRY_GOTO(st, tok_buf_reserve(&b, 1 << 20), done);
        size_t n = fread(b.p + b.n, 1, b.cap - b.n - 1, f);
        b.n += n;
        if (n == 0) break;
    }
    b.p[b.n] = '\0';
    if (ferror(f)) st = snp_fail(SNP_ERR_IO, "%s: read error: %s", path, strerror(errno));
done:
    if (f) fclose(f);
    if (st != SNP_OK) {
        free(b.p);
        return st;
    }
    *out = b.p;
    *out_n = b.n;
    return SNP_OK;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static snp_status load_gguf_path(const char *path, tokenizer **out) {
    gguf_file *g = NULL;
    TRY(gguf_open(path, &g));
    snp_status st = tokenizer_load_gguf(g, out);
    gguf_close(g);
    return st;
}

snp_status tokenizer_load(const char *path, tokenizer **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return snp_fail(SNP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        static const char *const names[] = {"tokenizer.json", "tokenizer.json.gz"};
        char buf[4096];
        for (size_t i = 0; i < 2; i++) {
            snprintf(buf, sizeof buf, "%s/%s", path, names[i]);
            if (file_exists(buf)) return tokenizer_load_json(buf, out);
        }
        // No tokenizer.json: a directory holding exactly one .gguf is that model.
        DIR *d = opendir(path);
        int n_gguf = 0;
        for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
            size_t n = strlen(e->d_name);
            if (n > 5 && strcmp(e->d_name + n - 5, ".gguf") == 0) {
                if (n_gguf++ == 0) snprintf(buf, sizeof buf, "%s/%s", path, e->d_name);
            }
        }
        if (d) closedir(d);
        if (n_gguf == 1 && file_exists(buf)) return load_gguf_path(buf, out);
        return snp_fail(SNP_ERR_IO,
                        "%s: directory holds no tokenizer.json or tokenizer.json.gz, and %s", path,
                        n_gguf ? "more than one .gguf file" : "no .gguf file");
    }
    FILE *f = fopen(path, "rb");
    if (!f) return snp_fail(SNP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return load_gguf_path(path, out);
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0)
        return snp_fail(SNP_ERR_FORMAT, "%s: not a GGUF file (no 'GGUF' magic)", path);
    return tokenizer_load_json(path, out);
}
