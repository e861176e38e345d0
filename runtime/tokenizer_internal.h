// tokenizer_internal: the tokenizer's private layout and helpers, shared by the
// tokenizer_*.c files only (the loaders fill it, the encoder and decoder read it).
// Nothing here is part of the public API in tokenizer.h.
#ifndef SNAPTP_TOKENIZER_INTERNAL_H
#define SNAPTP_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

// ---- growable byte buffer and id vector --------------------------------------------
typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;

snp_status tok_buf_reserve(tok_buf *b, size_t extra);
snp_status tok_buf_append(tok_buf *b, const void *src, size_t n);

typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;

snp_status tok_ids_push(tok_ids *ids, int32_t id);

// ---- bytes -> int32 hash map (vocabulary, word cache) ------------------------------
typedef struct tok_map_entry {
    uint32_t hash, off, len;
    int32_t val;
} tok_map_entry;

typedef struct tok_map {
    uint32_t *slots; // entry index + 1; 0 = empty
    uint32_t mask;
    tok_map_entry *ents;
    uint32_t n, cap;
    tok_buf keys; // key bytes of every entry, back to back
} tok_map;

uint64_t tok_hash(const void *p, size_t n);
snp_status tok_map_init(tok_map *m, size_t expected);
// tok_map_put: inserts or overwrites (the later value wins, as in a Rust HashMap
// built by collect()).
snp_status tok_map_put(tok_map *m, const char *key, size_t n, int32_t val);
int32_t tok_map_get(const tok_map *m, const char *key, size_t n); // -1 if absent
void tok_map_free(tok_map *m);

// ---- (left id, right id) -> (rank, merged id) -------------------------------------
typedef struct tok_merges {
    uint64_t *keys; // (left << 32) | right; UINT64_MAX = empty
    uint64_t *vals; // (rank << 32) | merged id
    uint32_t mask;
    uint32_t n;
} tok_merges;

snp_status tok_merges_init(tok_merges *m, size_t expected);
snp_status tok_merges_put(tok_merges *m, int32_t left, int32_t right, uint32_t rank, int32_t id);
void tok_merges_free(tok_merges *m);

static inline int tok_merges_get(const tok_merges *m, int32_t left, int32_t right, uint32_t *rank,
                                 int32_t *id) {
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (uint32_t i = (uint32_t)(h >> 32) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) {
            *rank = (uint32_t)(m->vals[i] >> 32);
            *id = (int32_t)(uint32_t)m->vals[i];
            return 1;
        }
        if (m->keys[i] == UINT64_MAX) return 0;
    }
}

// ---- added tokens and the byte trie that finds them ------------------------------
typedef struct tok_added {
    int32_t id;
    uint32_t off, len; // content in tokenizer.added_text
    uint8_t lstrip, rstrip, normalized, special, single_word;
} tok_added;

typedef struct tok_trie_node {
    int32_t child, sibling; // node indices, -1 = none
    int32_t added;          // index into tokenizer.added, -1 = not a token end
    uint8_t byte;
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes; // node 0 is the root
    size_t n, cap;
    uint8_t first[256]; // 1 for bytes that start some token
} tok_trie;

// ---- the tokenizer ---------------------------------------------------------------
typedef enum tok_model {
    TOK_MODEL_BYTE_BPE, // GPT-2 byte-level alphabet; vocabulary keys are raw bytes
    TOK_MODEL_SPM_BPE,  // characters with '▁'; byte fallback to <0xNN>
} tok_model;

typedef enum tok_norm_kind { TOK_NORM_NFC, TOK_NORM_PREPEND, TOK_NORM_REPLACE } tok_norm_kind;

typedef struct tok_norm_op {
    tok_norm_kind kind;
    char *from, *to; // PREPEND uses `to`; REPLACE replaces every `from` by `to`
} tok_norm_op;

enum { TOK_MAX_NORM_OPS = 8, TOK_MAX_SPLITS = 6 };
enum { TOK_META_NEVER, TOK_META_ALWAYS, TOK_META_FIRST };

typedef struct tok_split {
    pcre2_code *re;
    int removed; // 0: matches and gaps are both pieces ("Isolated"); 1: matches dropped
    int jit;     // compiled by PCRE2's JIT: pcre2_jit_match skips the generic entry checks
} tok_split;

enum {
    TOK_ATTR_ADDED = 1,   // matched in the text before splitting
    TOK_ATTR_SPECIAL = 2, // control / special
    TOK_ATTR_EOG = 4,     // ends generation
};

struct tokenizer {
    tok_model model;
    int32_t n_vocab;
    tok_buf pieces; // decoded bytes of every id, back to back
    uint32_t *piece_off, *piece_len;
    uint8_t *piece_set; // [n_vocab] 1 once an id has its piece (duplicates and gaps are errors)
    uint8_t *attr;

    tok_map
        vocab; // model-alphabet key -> id (added tokens are not in it unless the model has them)
    tok_merges merges;
    int32_t byte_id[256]; // byte-level: id of each single byte; SPM: id of <0xNN>; -1 if none
    int32_t unk_id;
    int fuse_unk, byte_fallback, ignore_merges;

    tok_added *added;
    size_t n_added;
    tok_buf added_text;
    tok_trie trie_raw;  // added tokens matched on the raw text
    tok_trie trie_norm; // added tokens matched after normalization

    tok_norm_op norm[TOK_MAX_NORM_OPS];
    int n_norm;
    tok_split splits[TOK_MAX_SPLITS];
    int n_splits;
    int add_prefix_space; // byte-level: prepend ' ' to each piece that lacks one
    // Metaspace pre-tokenizer: ' ' -> '▁', then '▁' prepended (never / always / only to
    // the text's first segment), then cut before every '▁' when meta_split.
    int meta_pretok, meta_prepend, meta_split;
    // SentencePiece text is one word to HF; when no merge joins a symbol ending in a
    // non-'▁' character to one starting with '▁', cutting before each such '▁' gives
    // the same ids, and the short words can use the cache (set by tok_finish).
    int spm_cut_words;

    int dec_meta;        // character BPE decoder turns '▁' into ' '
    int dec_bytes;       // character BPE decoder turns <0xNN> into a byte (ByteFallback)
    int dec_strip_space; // leading ' ' the decoder strips from the text (Strip)
    int dec_first_drop;  // Metaspace decoder: the first token's '▁' vanish instead of ' '

    int32_t bos_id, eos_id;
    int add_bos;
    char *chat_template;
    const char *chat_template_source;
    char desc[192];
};

// ---- per-call BPE scratch (tokenizer_bpe.c) ----------------------------------------
typedef struct tok_bpe_heap_item {
    uint32_t rank;
    int32_t pos, id;
} tok_bpe_heap_item;

typedef struct tok_bpe_ctx {
    int32_t *id, *prev, *next, *merged; // symbols of the current word, linked in order
    uint32_t *rank;
    size_t n, cap;
    tok_bpe_heap_item *heap;
    size_t heap_n, heap_cap;
    tok_map cache; // word bytes -> offset in cache_ids (count, then the ids)
    tok_ids cache_ids;
} tok_bpe_ctx;

// tok_bpe_word: the ids of one pre-tokenized word (model alphabet), appended to out.
snp_status tok_bpe_word(const tokenizer *t, tok_bpe_ctx *b, const char *s, size_t n, tok_ids *out);
void tok_bpe_ctx_free(tok_bpe_ctx *b);

// Shared by the loaders (tokenizer_core.c).
snp_status tok_alloc(tokenizer **out);
snp_status tok_set_vocab_size(tokenizer *t, int32_t n_vocab);
snp_status tok_set_piece(tokenizer *t, int32_t id, const char *bytes, size_t n);
snp_status tok_add_added(tokenizer *t, int32_t id, const char *content, size_t n, int lstrip,
                         int rstrip, int normalized, int special, int single_word);
snp_status tok_finish(tokenizer *t, const char *what); // tries, EOG set, description
snp_status tok_compile_split(tokenizer *t, const char *pattern, int removed, const char *what);
snp_status tok_read_file(const char *path, char **out, size_t *out_n);

// tok_normalize: the tokenizer's normalizer (NFC, prepend, replace) applied to s,
// appended to out (tokenizer_encode.c).
snp_status tok_normalize(const tokenizer *t, const char *s, size_t n, tok_buf *out);

// GPT-2 byte-level alphabet: byte -> code point and back.
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); // -1 if cp is not in the alphabet
// tok_bytelevel_decode: `s` in the byte-level alphabet to raw bytes; when some
// character is outside it, the raw UTF-8 of `s` is used, as HF's ByteLevel decoder does.
snp_status tok_bytelevel_decode(const char *s, size_t n, tok_buf *out);
// tok_spm_piece: character-BPE decoding of one token: '▁' -> ' ' when `meta`,
// "<0xNN>" -> one byte when `bytes`.
snp_status tok_spm_piece(const char *s, size_t n, int meta, int bytes, tok_buf *out);
// tok_decode_piece: one token's model string through the tokenizer's decoder.
snp_status tok_decode_piece(const tokenizer *t, const char *s, size_t n, tok_buf *out);

// UTF-8 helpers.
size_t tok_utf8_valid_prefix(const unsigned char *s, size_t n); // length of the valid prefix
int tok_utf8_len(unsigned char lead);                           // 1..4, 0 for a non-lead byte

// Built-in pre-tokenizer regexes (tokenizer_core.c).
extern const char *const tok_re_gpt2;
extern const char *const tok_re_llama3;
extern const char *const tok_re_qwen2;

#endif
