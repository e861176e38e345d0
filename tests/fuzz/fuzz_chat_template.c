// fuzz_chat_template: the chat-template renderer (runtime/chat_template.c) on an
// arbitrary Jinja template, system and user message (the input's three NUL-separated
// parts) over the tiny test tokenizer: family recognition, apply, split, and the
// trim that Llama 3's template applies, on an exact-size (unterminated) copy.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer_internal.h"

#ifndef SNAPTP_FUZZ_SOURCE_DIR
#error "SNAPTP_FUZZ_SOURCE_DIR (the source tree, for the tiny tokenizer) must be defined"
#endif

static tokenizer *tiny(void) {
    static tokenizer *t;
    if (t) return t;
    const char *path = SNAPTP_FUZZ_SOURCE_DIR "/tests/data/tokenizer/tiny/tokenizer.json";
    if (tokenizer_load_json(path, &t) != SNP_OK) {
        fprintf(stderr, "fuzz_chat_template: %s\n", snp_error());
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tokenizer *t = tiny();
    char *part[3];
    fuzz_split(data, size, part, 3);
    char *saved = t->chat_template;
    t->chat_template = part[0][0] ? part[0] : NULL; // none: the vocabulary decides
    const char *family = NULL;
    if (chat_template_family(t, &family) == SNP_OK) {
        char *text = NULL, *head = NULL, *tail = NULL;
        const char *sys = part[1][0] ? part[1] : NULL;
        if (chat_template_apply(t, sys, part[2], &text) == SNP_OK) free(text);
        if (chat_template_split(t, sys, &head, &tail) == SNP_OK) {
            free(head);
            free(tail);
        }
    }
    t->chat_template = saved;
    // Unterminated, as the contract allows (s[0..n)): a read past n is a bug.
    const size_t n = strlen(part[2]);
    char *exact = malloc(n ? n : 1);
    if (exact) {
        memcpy(exact, part[2], n);
        size_t start = 0, end = 0;
        chat_template_trim(exact, n, &start, &end);
        if (start > end || end > n) __builtin_trap();
        free(exact);
    }
    fuzz_split_free(part, 3);
    return 0;
}
