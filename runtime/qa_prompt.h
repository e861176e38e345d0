// qa_prompt: the prompt of `snaptp qa`, built so the document's tokens are the same
// whatever the question: the chat template is cut at the user message and the pieces
// are tokenized apart and concatenated,
//   [template head | document] [instruction + question | template tail]
// the template's text with its special tokens parsed, the user's text (document,
// question) as plain text, so a document cannot open or close a chat turn. The first
// bracket is the document prefix a KV store keeps; the question goes last, inside
// SnapKV's observation window.
#ifndef SNAPTP_QA_PROMPT_H
#define SNAPTP_QA_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tokenizer.h"

typedef struct qa_prompt qa_prompt;

// qa_prompt_init: tokenizes the template head and the document (n_bytes of UTF-8)
// once. `system` may be NULL. parse_special: special tokens spelled in the document
// and questions are parsed as control tokens (the old, unsafe behaviour). Invalid
// UTF-8 fails naming the byte offset within the document, and `document_name`.
snp_status qa_prompt_init(const tokenizer *t, const char *system, const char *document,
                          size_t n_bytes, const char *document_name, int parse_special,
                          qa_prompt **out);
void qa_prompt_free(qa_prompt *p); // NULL is a no-op

// qa_prompt_prefix: the document prefix's ids (valid while p lives).
const int32_t *qa_prompt_prefix(const qa_prompt *p, int *n_tokens);

// qa_prompt_build: the whole prompt for `question` (the prefix, then the question's
// part); *out_ids malloc'd. `question_name` ("question 2") names it in errors.
snp_status qa_prompt_build(const qa_prompt *p, const char *question, const char *question_name,
                           int32_t **out_ids, size_t *out_n);

#endif
