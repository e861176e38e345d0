// qa_prompt: tokenizes the QA prompt piecewise (template text, document, question).
#include "qa_prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "chat_template.h"

// Between the document and the question, inside the user message.
static const char instruction[] = "\n\nAnswer the question using the document above.\nQuestion: ";

struct qa_prompt {
    const tokenizer *tok;
    int parse_special;
    char *tail;       // the template after the user message
    int32_t *prefix;  // template head + document
    size_t n_prefix;
};

// encode_piece: user text plain (or parsed, with --parse-special); template text parsed.
static snp_status encode_piece(const qa_prompt *p, const char *s, size_t n, int user_text,
                               const char *name, int32_t **ids, size_t *n_ids) {
    snp_status st = user_text && !p->parse_special ? tokenizer_encode_plain(p->tok, s, n, ids, n_ids)
                                                   : tokenizer_encode(p->tok, s, n, 0, ids, n_ids);
    if (st == SNP_OK || !name) return st;
    char why[1024];
    snprintf(why, sizeof why, "%s", snp_error());
    return snp_fail(st, "qa: %s: %s", name, why);
}

// check_utf8: names the first invalid byte of user text by its offset in that text
// (not in the prompt it becomes part of).
static snp_status check_utf8(const char *s, size_t n, const char *name) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0)
            return snp_fail(SNP_ERR_UTF8, "qa: %s is not valid UTF-8: byte 0x%02X at byte offset %zu",
                            name, (unsigned)(unsigned char)s[i], i);
        i += (size_t)k;
    }
    return SNP_OK;
}

static snp_status append(int32_t **dst, size_t *n, const int32_t *src, size_t k) {
    int32_t *grown = realloc(*dst, sizeof(int32_t) * (*n + k + 1));
    if (!grown) return snp_fail(SNP_ERR_MEMORY, "qa: out of memory for the prompt");
    memcpy(grown + *n, src, sizeof(int32_t) * k);
    *dst = grown;
    *n += k;
    return SNP_OK;
}

snp_status qa_prompt_init(const tokenizer *t, const char *system, const char *document,
                          size_t n_bytes, const char *document_name, int parse_special,
                          qa_prompt **out) {
    *out = NULL;
    qa_prompt *p = calloc(1, sizeof *p);
    if (!p) return snp_fail(SNP_ERR_MEMORY, "qa: out of memory");
    p->tok = t;
    p->parse_special = parse_special;
    snp_status st = SNP_OK;
    char *head = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    TRY_GOTO(st, check_utf8(document, n_bytes, document_name), fail);
    TRY_GOTO(st, chat_template_split(t, system, &head, &p->tail), fail);
    TRY_GOTO(st, encode_piece(p, head, strlen(head), 0, NULL, &p->prefix, &p->n_prefix), fail);
    // Templates that trim the user message (Llama 3) would drop the document's leading
    // blanks; drop them here for every template, so the split prompt equals the whole.
    size_t start, end;
    chat_template_trim(document, n_bytes, &start, &end);
    TRY_GOTO(st,
             encode_piece(p, document + start, n_bytes - start, 1, document_name, &ids, &n_ids),
             fail);
    TRY_GOTO(st, append(&p->prefix, &p->n_prefix, ids, n_ids), fail);
    free(ids);
    free(head);
    *out = p;
    return SNP_OK;
fail:
    free(ids);
    free(head);
    qa_prompt_free(p);
    return st;
}

void qa_prompt_free(qa_prompt *p) {
    if (!p) return;
    free(p->tail);
    free(p->prefix);
    free(p);
}

const int32_t *qa_prompt_prefix(const qa_prompt *p, int *n_tokens) {
    *n_tokens = (int)p->n_prefix;
    return p->prefix;
}

snp_status qa_prompt_build(const qa_prompt *p, const char *question, const char *question_name,
                           int32_t **out_ids, size_t *out_n) {
    *out_ids = NULL;
    *out_n = 0;
    snp_status st = SNP_OK;
    int32_t *ids = NULL, *piece = NULL;
    size_t n = 0, n_piece = 0;
    char *user = NULL;
    size_t start, end;
    TRY_GOTO(st, check_utf8(question, strlen(question), question_name), done);
    chat_template_trim(question, strlen(question), &start, &end);
    if (end == start) {
        st = snp_fail(SNP_ERR_ARGUMENT, "qa: %s is empty", question_name);
        goto done;
    }
    const size_t n_user = sizeof instruction - 1 + (end - start);
    if (!(user = malloc(n_user + 1))) {
        st = snp_fail(SNP_ERR_MEMORY, "qa: out of memory for the prompt");
        goto done;
    }
    memcpy(user, instruction, sizeof instruction - 1);
    memcpy(user + sizeof instruction - 1, question + start, end - start);
    user[n_user] = '\0';
    TRY_GOTO(st, append(&ids, &n, p->prefix, p->n_prefix), done);
    TRY_GOTO(st, encode_piece(p, user, n_user, 1, question_name, &piece, &n_piece), done);
    TRY_GOTO(st, append(&ids, &n, piece, n_piece), done);
    free(piece);
    piece = NULL;
    TRY_GOTO(st, encode_piece(p, p->tail, strlen(p->tail), 0, NULL, &piece, &n_piece), done);
    TRY_GOTO(st, append(&ids, &n, piece, n_piece), done);
    *out_ids = ids;
    *out_n = n;
    ids = NULL;
done:
    free(ids);
    free(piece);
    free(user);
    return st;
}
