// chat_template: turns a system + user message into the prompt text a model was
// trained on, for the template families snaptp ships (SmolLM2/ChatML, Llama 3, Llama
// 3.1-3.3, Qwen2.5, Qwen3, GLM-4-9B-Chat).
// The family is recognised from the model's Jinja template (or, when it has none, from
// its vocabulary); an unknown template is an error, never a guess.
#ifndef SNAPTP_CHAT_TEMPLATE_H
#define SNAPTP_CHAT_TEMPLATE_H

#include "status.h"
#include "tokenizer.h"

// chat_template_family: the family name ("chatml", "llama3", "llama3.1", "qwen2.5",
// "qwen3", "glm4") that chat_template_apply would use for `t`, or SNP_ERR_UNSUPPORTED
// naming the template's source and start.
snp_status chat_template_family(const tokenizer *t, const char **out_name);

// chat_template_apply: exactly what transformers' apply_chat_template([system?, user],
// add_generation_prompt=True, tokenize=False) gives for the model. `system` may be NULL
// (a template's default system prompt then applies). *out_text is malloc'd. When the
// template writes the BOS token itself (Llama 3), the text starts with it: encode it
// with add_bos = 0.
snp_status chat_template_apply(const tokenizer *t, const char *system, const char *user,
                               char **out_text);

// chat_template_split: the same prompt cut where the user message goes: *out_head is
// the text before it (system turn, user header), *out_tail the text after it (end of
// turn, generation prompt); both malloc'd. head + trimmed(user) + tail equals
// chat_template_apply's text for templates that trim the message (Llama 3), and
// head + user + tail for the others. Lets a caller tokenize the template's text
// (special tokens parsed) apart from user text (special tokens spelled).
snp_status chat_template_split(const tokenizer *t, const char *system, char **out_head,
                               char **out_tail);

// chat_template_trim: the span [*start, *end) of s[0..n) that Jinja's `trim` keeps
// (Python str.strip()).
void chat_template_trim(const char *s, size_t n, size_t *start, size_t *end);

#endif
