// tokenizer: text <-> token ids, byte-exact with Hugging Face `tokenizers` for the
// model families snaptp ships (byte-level BPE: Llama 3, Qwen, SmolLM2/GPT-2; and
// SentencePiece-style BPE: Llama 2). Chat formatting lives in chat_template.h.
#ifndef SNAPTP_TOKENIZER_H
#define SNAPTP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct tokenizer tokenizer;

// tokenizer_load: `path` is a .gguf file, a tokenizer.json (optionally gzip-compressed,
// .json.gz) or a directory holding tokenizer.json / tokenizer.json.gz (or else exactly
// one .gguf). On success *out owns everything it needs (no reference to the file is kept).
snp_status tokenizer_load(const char *path, tokenizer **out);

// tokenizer_load_json: a Hugging Face tokenizer.json (or .json.gz). A
// tokenizer_config.json beside it, when present, supplies chat_template, add_bos_token,
// bos_token and eos_token.
snp_status tokenizer_load_json(const char *path, tokenizer **out);

// tokenizer_load_gguf: the vocabulary in `f`'s metadata (tokenizer.ggml.*, model "gpt2"
// or "llama"). `f` may be closed afterwards.
snp_status tokenizer_load_gguf(const gguf_file *f, tokenizer **out);

void tokenizer_free(tokenizer *t); // NULL is a no-op

// tokenizer_encode: `text` (n_bytes of UTF-8, NUL bytes allowed) to ids in *out_ids
// (malloc'd, caller frees; *out_n may be 0). Added/special tokens written in the text
// are recognised, as HF does by default. add_bos: 1 prepends the BOS id (if the model
// has one), 0 does not, -1 follows tokenizer_add_bos_default. Invalid UTF-8 fails with
// SNP_ERR_UTF8 naming the byte offset. Thread-safe on a shared tokenizer.
snp_status tokenizer_encode(const tokenizer *t, const char *text, size_t n_bytes, int add_bos,
                            int32_t **out_ids, size_t *out_n);

// tokenizer_encode_plain: as tokenizer_encode without BOS, but special tokens spelled
// in the text (<|im_start|>, <|eot_id|>) are encoded as the plain text they are, as
// HF's encode(split_special_tokens=True): user text (a document, a question) cannot
// open or close a chat turn. Non-special added tokens are still matched.
snp_status tokenizer_encode_plain(const tokenizer *t, const char *text, size_t n_bytes,
                                  int32_t **out_ids, size_t *out_n);

int32_t tokenizer_n_vocab(const tokenizer *t); // largest id + 1
int32_t tokenizer_bos_id(const tokenizer *t);  // -1 if none
int32_t tokenizer_eos_id(const tokenizer *t);  // -1 if none
// tokenizer_add_bos_default: 1 when the model's own files ask for a BOS on encode
// (tokenizer_config add_bos_token, a TemplateProcessing post-processor, or
// tokenizer.ggml.add_bos_token), as HF's encode(add_special_tokens=True) would.
int tokenizer_add_bos_default(const tokenizer *t);
// tokenizer_is_eog: 1 if generation should stop at `id`: the declared eos/eot/eom ids
// and the end-of-turn specials the vocabulary holds (<|eot_id|>, <|im_end|>, ...).
int tokenizer_is_eog(const tokenizer *t, int32_t id);
// tokenizer_is_special: 1 for added/control tokens (BOS, <|im_start|>, ...).
int tokenizer_is_special(const tokenizer *t, int32_t id);

// tokenizer_piece: the bytes `id` decodes to on its own (for SentencePiece models
// with '▁' already turned into ' '), not NUL-terminated; NULL and 0 if out of range.
const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *n_bytes);
// tokenizer_find: the id of an added token or vocabulary entry spelled `text` in
// the model's own alphabet ("<|im_end|>"), -1 if none.
int32_t tokenizer_find(const tokenizer *t, const char *text);
// tokenizer_chat_template: the model's Jinja chat template (NULL if it has none) and
// where it came from ("tokenizer_config.json", "tokenizer.chat_template").
const char *tokenizer_chat_template(const tokenizer *t);
const char *tokenizer_chat_template_source(const tokenizer *t);
// tokenizer_describe: a one-line summary ("byte-level BPE, 128256 tokens, ...").
const char *tokenizer_describe(const tokenizer *t);

// tokenizer_decode: ids back to text, as HF decode(ids, skip_special_tokens=False):
// byte-level bytes are reassembled, '▁' becomes ' ', <0xNN> become bytes, a
// SentencePiece model's leading space is stripped. Invalid UTF-8 that the ids spell
// is replaced by U+FFFD per maximal invalid subpart. *out_text is malloc'd and
// NUL-terminated; an id out of range fails with SNP_ERR_ARGUMENT.
snp_status tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n_ids, char **out_text,
                            size_t *out_n);

// Streaming decode: feed one id at a time; each call hands back the bytes that now
// form whole UTF-8 characters (a character split over two tokens comes out once it
// is whole). The returned pointer is valid until the next call on the stream.
typedef struct tokenizer_stream {
    const tokenizer *tok;
    char *buf; // output of the last call, owned by the stream
    size_t cap;
    unsigned char pending[4]; // an incomplete UTF-8 sequence carried to the next id
    int n_pending;
    int strip_left; // leading spaces still to strip (SentencePiece decoders strip one)
    int n_fed;      // 0 until the first id (a Metaspace decoder treats it apart)
} tokenizer_stream;

void tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t);
snp_status tokenizer_stream_feed(tokenizer_stream *s, int32_t id, const char **out, size_t *out_n);
// tokenizer_stream_flush: the end of the sequence; an incomplete tail becomes U+FFFD.
snp_status tokenizer_stream_flush(tokenizer_stream *s, const char **out, size_t *out_n);
void tokenizer_stream_free(tokenizer_stream *s); // frees the buffer, not the struct

#endif
