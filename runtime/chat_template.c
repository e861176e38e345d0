// chat_template: the one place that knows chat formats. Each family is a row of
// `families`: how to recognise its Jinja template, whether a vocabulary without a
// template implies it, and how to render system + user + generation prompt. There is
// no Jinja interpreter: a template that no row recognises is refused.
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer_internal.h"

typedef struct chat_family {
    const char *name;
    int (*matches)(const char *tmpl);
    int (*implied_by_vocab)(const tokenizer *t);
    snp_status (*render)(const tokenizer *t, const char *tmpl, const char *sys, const char *user,
                         tok_buf *out);
} chat_family;

static snp_status put(tok_buf *b, const char *s) {
    return tok_buf_append(b, s, strlen(s));
}

// The end of `needle` matched at p, or NULL, where a "\\n" in the needle also matches a raw
// newline: templates write their Jinja string literals either way.
static const char *match_at(const char *p, const char *needle) {
    const char *q = needle;
    while (*q) {
        if (q[0] == '\\' && q[1] == 'n' && *p == '\n') {
            p++;
            q += 2;
        } else if (*p == *q) {
            p++;
            q++;
        } else {
            return NULL;
        }
    }
    return p;
}

// Whether `needle` occurs in the template (match_at's rule).
static int has(const char *tmpl, const char *needle) {
    for (const char *start = tmpl; *start; start++)
        if (match_at(start, needle)) return 1;
    return 0;
}

// Python's str.isspace, which Jinja's `trim` filter (str.strip) uses.
static int py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point at s[i] of s[0..n); a sequence cut short by n (the text need not be
// NUL-terminated) counts as one byte that is not a space, and never reads past n
// (a heap overflow tests/fuzz/fuzz_chat_template found).
static uint32_t cp_at(const char *s, size_t i, size_t n, size_t *len) {
    const unsigned char *u = (const unsigned char *)s + i;
    int m = tok_utf8_len(u[0]);
    if (m <= 1 || (size_t)m > n - i) {
        *len = 1;
        return u[0];
    }
    uint32_t cp = u[0] & (0xFF >> (m + 1));
    for (int k = 1; k < m && u[k]; k++)
        cp = (cp << 6) | (u[k] & 0x3F);
    *len = (size_t)m;
    return cp;
}

void chat_template_trim(const char *s, size_t n, size_t *out_start, size_t *out_end) {
    size_t start = 0, end = 0, len;
    for (size_t i = 0; i < n; i += len) {
        uint32_t cp = cp_at(s, i, n, &len);
        if (!py_space(cp)) {
            if (end == 0) start = i;
            end = i + len;
        }
    }
    *out_start = start;
    *out_end = end > start ? end : start;
}

static snp_status put_trimmed(tok_buf *b, const char *s) {
    size_t start, end;
    chat_template_trim(s, strlen(s), &start, &end);
    return tok_buf_append(b, s + start, end - start);
}

// ---- ChatML as SmolLM2 writes it (optional default system prompt; InternLM2: BOS first) --
static const char *const chatml_turn =
    "'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'";

static int chatml_matches(const char *tmpl) {
    return has(tmpl, chatml_turn) && has(tmpl, "add_generation_prompt") && !has(tmpl, "tools") &&
           !has(tmpl, "enable_thinking");
}

static int chatml_vocab(const tokenizer *t) {
    return tokenizer_find(t, "<|im_start|>") >= 0 && tokenizer_find(t, "<think>") < 0;
}

// The default system prompt of templates written as
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...<|im_end|>\n'
//   }}
// with the Jinja string escapes undone; NULL-free: *out empty when there is none.
static snp_status chatml_default_system(const char *tmpl, tok_buf *out) {
    if (!has(tmpl, "messages[0]['role'] != 'system'")) return SNP_OK;
    const char *p = strstr(tmpl, "'<|im_start|>system");
    if (!p) return SNP_OK;
    p += strlen("'<|im_start|>system");
    if (*p == '\n')
        p++;
    else if (p[0] == '\\' && p[1] == 'n')
        p += 2;
    else
        return SNP_OK;
    const char *end = strstr(p, "<|im_end|>");
    if (!end) return SNP_OK;
    for (; p < end; p++) {
        char c = *p;
        if (c == '\\' && p + 1 < end) {
            c = *++p;
            c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        }
        TRY(tok_buf_append(out, &c, 1));
    }
    return SNP_OK;
}

static snp_status chatml_render(const tokenizer *t, const char *tmpl, const char *sys,
                                const char *user, tok_buf *out) {
    tok_buf dflt = {0};
    snp_status st = SNP_OK;
    // InternLM2's ChatML opens with {{ bos_token }}: the BOS is then part of the text
    // (the prompt is encoded without adding one).
    if (tmpl && has(tmpl, "{{ bos_token }}")) {
        size_t n = 0;
        const char *bos = tokenizer_piece(t, tokenizer_bos_id(t), &n);
        if (bos) TRY_GOTO(st, tok_buf_append(out, bos, n), done);
    }
    if (!sys && tmpl) TRY_GOTO(st, chatml_default_system(tmpl, &dflt), done);
    if (sys || dflt.n) {
        TRY_GOTO(st, put(out, "<|im_start|>system\n"), done);
        TRY_GOTO(st, sys ? put(out, sys) : tok_buf_append(out, dflt.p, dflt.n), done);
        TRY_GOTO(st, put(out, "<|im_end|>\n"), done);
    }
    TRY_GOTO(st, put(out, "<|im_start|>user\n"), done);
    TRY_GOTO(st, put(out, user), done);
    TRY_GOTO(st, put(out, "<|im_end|>\n<|im_start|>assistant\n"), done);
done:
    free(dflt.p);
    return st;
}

// ---- Qwen3 (ChatML with tools and <think>; enable_thinking left undefined) -----------
static int qwen3_matches(const char *tmpl) {
    return has(tmpl, "<|im_start|>") && has(tmpl, "enable_thinking") && has(tmpl, "<think>");
}

static int qwen3_vocab(const tokenizer *t) {
    return tokenizer_find(t, "<|im_start|>") >= 0 && tokenizer_find(t, "<think>") >= 0;
}

static snp_status qwen3_render(const tokenizer *t, const char *tmpl, const char *sys,
                               const char *user, tok_buf *out) {
    // With no tools and a system message first, Qwen3 writes exactly ChatML.
    (void)tmpl;
    return chatml_render(t, NULL, sys, user, out);
}

// ---- Qwen2.5 Instruct (ChatML with tools; a system turn always, the template's default ---
// when the messages bring none). Without tools (snaptp passes none) the template writes
//   {%- else %}                                       <- of {%- if tools %}
//       {%- if messages[0]['role'] == 'system' %}
//           {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
//       {%- else %}
//           {{- '<|im_start|>system\nDEFAULT<|im_end|>\n' }}
//   ...ChatML turns..., and '<|im_start|>assistant\n' last. DEFAULT is read from the template,
// so a derived one (Qwen2.5-Math: "Please reason step by step, ...") renders its own. The
// match skips whitespace between the pieces below, which is never output: each tag opens
// with "{%-" or "{{-", which strips the whitespace before it, and the one "}}" closes an
// expression.
static const char *const qwen25_head[] = {
    "{%- else %}",
    "{%- if messages[0]['role'] == 'system' %}",
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}",
    "{%- else %}",
    "{{- '<|im_start|>system\\n",
};
static const char *const qwen25_turns[] = {
    "}}",
    "{%- endif %}",
    "{%- endif %}",
    "{%- for message in messages %}",
    // One element, split over two lines (the parentheses say so to -Wstring-concatenation).
    ("{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
     "(message.role == \"assistant\" and not message.tool_calls) %}"),
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}",
};
static const char *const qwen25_tail[] = {
    "{%- if add_generation_prompt %}",
    "{{- '<|im_start|>assistant\\n' }}",
    "{%- endif %}",
};

// The end of needles[0..n) matched in order from p with whitespace between them, or NULL.
static const char *match_seq(const char *p, const char *const *needles, size_t n) {
    for (size_t i = 0; p && i < n; i++) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        p = match_at(p, needles[i]);
    }
    return p;
}

// The escapes of a Jinja string literal snaptp undoes; Jinja decodes the rest (\x, \u,
// octal, \a, ...) as Python's unicode-escape does, which a template snaptp recognises
// does not use.
static int jinja_escape(char c, char *out) {
    static const char from[] = "ntr\\'\"", to[] = "\n\t\r\\'\"";
    const char *at = c ? strchr(from, c) : NULL;
    if (!at) return 0;
    *out = to[at - from];
    return 1;
}

// qwen25_default_span: the Jinja source [*start, *end) of DEFAULT (escapes not undone);
// 1 when the template is Qwen2.5's, else 0.
static int qwen25_default_span(const char *tmpl, const char **start, const char **end) {
    const size_t n_head = sizeof qwen25_head / sizeof qwen25_head[0];
    const size_t n_turns = sizeof qwen25_turns / sizeof qwen25_turns[0];
    const size_t n_tail = sizeof qwen25_tail / sizeof qwen25_tail[0];
    static const char *const tools_first[] = {"{%- if tools %}"};
    if (!match_seq(tmpl, tools_first, 1)) return 0;
    for (const char *at = strstr(tmpl, qwen25_head[0]); at; at = strstr(at + 1, qwen25_head[0])) {
        const char *lit = match_seq(at, qwen25_head, n_head);
        if (!lit) continue;
        // The literal runs to its first unescaped quote; a raw CR (Jinja rewrites it)
        // or an escape not undone here is not the template snaptp knows.
        const char *p = lit;
        while (*p && *p != '\'' && *p != '\r') {
            char c;
            if (*p == '\\' && !jinja_escape(p[1], &c)) return 0;
            p += *p == '\\' ? 2 : 1;
        }
        if (*p != '\'') return 0;
        // It must end in "<|im_end|>\n", the newline escaped or raw: a backslash after
        // '>' starts an escape, so this suffix test reads the literal as Jinja does.
        const char *stop = p;
        if (stop - lit >= 2 && stop[-2] == '\\' && stop[-1] == 'n')
            stop -= 2;
        else if (stop - lit >= 1 && stop[-1] == '\n')
            stop -= 1;
        else
            return 0;
        const size_t n_end = strlen("<|im_end|>");
        if ((size_t)(stop - lit) < n_end || memcmp(stop - n_end, "<|im_end|>", n_end) != 0)
            return 0;
        if (!match_seq(p + 1, qwen25_turns, n_turns)) return 0;
        // The generation prompt ends the template (trim_blocks eats one newline after it).
        const char *gen = NULL;
        for (const char *g = strstr(tmpl, qwen25_tail[0]); g; g = strstr(g + 1, qwen25_tail[0]))
            gen = g;
        const char *rest = gen ? match_seq(gen, qwen25_tail, n_tail) : NULL;
        if (!rest || !(rest[0] == '\0' || (rest[0] == '\n' && rest[1] == '\0'))) return 0;
        *start = lit;
        *end = stop - n_end;
        return 1;
    }
    return 0;
}

// Apart from Qwen3's row (enable_thinking and <think>, neither allowed here) and ChatML's
// (no "tools" anywhere, where this one starts with "{%- if tools %}").
static int qwen25_matches(const char *tmpl) {
    const char *start, *end;
    return !has(tmpl, "enable_thinking") && !has(tmpl, "<think>") &&
           qwen25_default_span(tmpl, &start, &end);
}

static int qwen25_vocab(const tokenizer *t) {
    (void)t; // a Qwen2.5 vocabulary without a template gets plain ChatML (no default system)
    return 0;
}

static snp_status qwen25_render(const tokenizer *t, const char *tmpl, const char *sys,
                                const char *user, tok_buf *out) {
    (void)t;
    const char *start = NULL, *end = NULL;
    if (!tmpl || !qwen25_default_span(tmpl, &start, &end))
        return snp_fail(SNP_ERR_INTERNAL, "chat template: Qwen2.5's default system prompt "
                                          "is no longer where the match found it");
    TRY(put(out, "<|im_start|>system\n"));
    if (sys) {
        TRY(put(out, sys));
    } else {
        for (const char *p = start; p < end; p++) {
            char c = *p;
            if (c == '\\') jinja_escape(*++p, &c);
            TRY(tok_buf_append(out, &c, 1));
        }
    }
    TRY(put(out, "<|im_end|>\n<|im_start|>user\n"));
    TRY(put(out, user));
    return put(out, "<|im_end|>\n<|im_start|>assistant\n");
}

// ---- Llama 3 (the original 8B/70B Instruct template; 3.1+ adds dates and tools) ------
static int llama3_matches(const char *tmpl) {
    return has(tmpl, "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
                     "message['content'] | trim + '<|eot_id|>'") &&
           has(tmpl, "bos_token") && !has(tmpl, "Cutting Knowledge");
}

static int llama3_vocab(const tokenizer *t) {
    return tokenizer_find(t, "<|start_header_id|>") >= 0;
}

static snp_status llama3_render(const tokenizer *t, const char *tmpl, const char *sys,
                                const char *user, tok_buf *out) {
    (void)tmpl;
    size_t n = 0;
    const char *bos = tokenizer_piece(t, tokenizer_bos_id(t), &n);
    if (bos) TRY(tok_buf_append(out, bos, n));
    if (sys) {
        TRY(put(out, "<|start_header_id|>system<|end_header_id|>\n\n"));
        TRY(put_trimmed(out, sys));
        TRY(put(out, "<|eot_id|>"));
    }
    TRY(put(out, "<|start_header_id|>user<|end_header_id|>\n\n"));
    TRY(put_trimmed(out, user));
    TRY(put(out, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
    return SNP_OK;
}

// ---- Llama 3.1 / 3.2 / 3.3 (a system header with the knowledge cutoff and a date) ----
// The system turn is always written, system message or not; without tools (snaptp
// passes none) the rest is Llama 3's. 3.1 and 3.3 date it with their literal default
// ("26 Jul 2024"); 3.2 asks strftime_now("%d %b %Y"), which transformers defines
// (local time, today), falling back to the literal where it is not defined.
static const char *const llama31_turn = "'<|start_header_id|>' + message['role'] + "
                                        "'<|end_header_id|>\\n\\n'+ message['content'] | trim + "
                                        "'<|eot_id|>'";

static int llama31_matches(const char *tmpl) {
    return has(tmpl, "Cutting Knowledge Date: December 2023\\n") &&
           has(tmpl, "\"Today Date: \" + date_string + \"\\n\\n\"") &&
           has(tmpl, "set system_message = messages[0]['content']|trim") &&
           has(tmpl, llama31_turn) && has(tmpl, "{{- bos_token }}") &&
           has(tmpl, "set date_string = \"");
}

static int llama31_vocab(const tokenizer *t) {
    (void)t; // a vocabulary without a template gets Llama 3's plain format
    return 0;
}

// llama31_date: the template's literal default date, or today's when it asks for
// strftime_now. *out is NUL-terminated.
static snp_status llama31_date(const char *tmpl, char *out, size_t cap) {
    if (has(tmpl, "strftime_now(\"%d %b %Y\")")) {
        time_t now = time(NULL);
        struct tm tm;
        if (!localtime_r(&now, &tm) || strftime(out, cap, "%d %b %Y", &tm) == 0)
            return snp_fail(SNP_ERR_INTERNAL, "chat template: cannot format today's date");
        return SNP_OK;
    }
    const char *p = strstr(tmpl, "set date_string = \"");
    p += strlen("set date_string = \"");
    const char *end = strchr(p, '"');
    if (!end || (size_t)(end - p) >= cap)
        return snp_fail(SNP_ERR_FORMAT, "chat template: the Llama 3.1 template's default "
                                        "date_string is not a quoted string");
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return SNP_OK;
}

static snp_status llama31_render(const tokenizer *t, const char *tmpl, const char *sys,
                                 const char *user, tok_buf *out) {
    char date[64];
    TRY(llama31_date(tmpl, date, sizeof date));
    size_t n = 0;
    const char *bos = tokenizer_piece(t, tokenizer_bos_id(t), &n);
    if (bos) TRY(tok_buf_append(out, bos, n));
    TRY(put(out, "<|start_header_id|>system<|end_header_id|>\n\n"
                 "Cutting Knowledge Date: December 2023\nToday Date: "));
    TRY(put(out, date));
    TRY(put(out, "\n\n"));
    if (sys) TRY(put_trimmed(out, sys));
    TRY(put(out, "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"));
    TRY(put_trimmed(out, user));
    TRY(put(out, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
    return SNP_OK;
}

// ---- GLM-4-9B-Chat (and -1M): "[gMASK]<sop>" then <|role|>{metadata}\n{content} per
// message whose content is not empty, then <|assistant|> with no newline after it. There
// is no default system prompt (the long one is written only with tools) and nothing is
// trimmed, so an empty system message is dropped, as the template's `if item['content']`.
static int glm4_matches(const char *tmpl) {
    return has(tmpl, "[gMASK]<sop>") &&
           has(tmpl, "<|{{ item['role'] }}|>{{ item['metadata'] }}\n{{ item['content'] }}") &&
           has(tmpl, "<|assistant|>");
}

static int glm4_vocab(const tokenizer *t) {
    (void)t; // GLM checkpoints ship their template; the vocabulary alone implies none
    return 0;
}

static snp_status glm4_render(const tokenizer *t, const char *tmpl, const char *sys,
                              const char *user, tok_buf *out) {
    (void)t;
    (void)tmpl;
    TRY(put(out, "[gMASK]<sop>"));
    if (sys && *sys) {
        TRY(put(out, "<|system|>\n"));
        TRY(put(out, sys));
    }
    if (*user) {
        TRY(put(out, "<|user|>\n"));
        TRY(put(out, user));
    }
    return put(out, "<|assistant|>");
}

static const chat_family families[] = {
    {"qwen3", qwen3_matches, qwen3_vocab, qwen3_render},
    {"qwen2.5", qwen25_matches, qwen25_vocab, qwen25_render},
    {"llama3.1", llama31_matches, llama31_vocab, llama31_render},
    {"llama3", llama3_matches, llama3_vocab, llama3_render},
    {"chatml", chatml_matches, chatml_vocab, chatml_render},
    {"glm4", glm4_matches, glm4_vocab, glm4_render},
};

static snp_status pick(const tokenizer *t, const chat_family **out) {
    const char *tmpl = tokenizer_chat_template(t);
    size_t n = sizeof families / sizeof families[0];
    for (size_t i = 0; i < n; i++) {
        if (tmpl ? families[i].matches(tmpl) : families[i].implied_by_vocab(t)) {
            *out = &families[i];
            return SNP_OK;
        }
    }
    if (!tmpl)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "chat template: the model has none, and its vocabulary matches no built-in "
                        "family (chatml, llama3, qwen3)");
    return snp_fail(SNP_ERR_UNSUPPORTED,
                    "chat template from %s is not one snaptp knows (SmolLM2/ChatML, Llama 3, "
                    "Llama 3.1-3.3, Qwen2.5, Qwen3, GLM-4-9B-Chat); it starts: '%.80s'",
                    tokenizer_chat_template_source(t), tmpl);
}

snp_status chat_template_family(const tokenizer *t, const char **out_name) {
    const chat_family *f = NULL;
    TRY(pick(t, &f));
    *out_name = f->name;
    return SNP_OK;
}

snp_status chat_template_apply(const tokenizer *t, const char *system, const char *user,
                               char **out_text) {
    *out_text = NULL;
    if (!user) return snp_fail(SNP_ERR_ARGUMENT, "chat template: no user message");
    const chat_family *f = NULL;
    TRY(pick(t, &f));
    tok_buf out = {0};
    snp_status st = tok_buf_reserve(&out, 1);
    if (st == SNP_OK) {
        out.p[0] = '\0';
        st = f->render(t, tokenizer_chat_template(t), system, user, &out);
    }
    if (st != SNP_OK) {
        free(out.p);
        return st;
    }
    *out_text = out.p;
    return SNP_OK;
}

// A user message no template rewrites: no whitespace for `trim` to take, no Jinja, and
// control bytes that no real message holds, so finding it in the output is unambiguous.
static const char split_marker[] = "\x02snaptp-user-message\x03";

snp_status chat_template_split(const tokenizer *t, const char *system, char **out_head,
                               char **out_tail) {
    *out_head = *out_tail = NULL;
    char *text = NULL;
    TRY(chat_template_apply(t, system, split_marker, &text));
    char *at = strstr(text, split_marker);
    if (!at || strstr(at + 1, split_marker)) {
        free(text);
        return snp_fail(SNP_ERR_INTERNAL, "chat template: the user message does not appear "
                                          "exactly once in the rendered prompt");
    }
    *at = '\0';
    *out_head = strdup(text);
    *out_tail = strdup(at + strlen(split_marker));
    free(text);
    if (!*out_head || !*out_tail) {
        free(*out_head);
        free(*out_tail);
        *out_head = *out_tail = NULL;
        return snp_fail(SNP_ERR_MEMORY, "chat template: out of memory");
    }
    return SNP_OK;
}
