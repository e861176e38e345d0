// cmd_tokenize: `snaptp tokenize` (stdin text -> ids) and `snaptp detokenize` (stdin ids
// -> text), the tools for looking at what a prompt really becomes; the parity tests
// drive them too. Tokenization itself is runtime/tokenizer*.c.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"

typedef struct tok_args {
    const char *path;
    int json, pieces, chat, bos; // bos: -1 = the model's default
    const char *system;
    const char *input;
} tok_args;

static void usage(FILE *to, const char *cmd) {
    if (strcmp(cmd, "detokenize") == 0) {
        fprintf(
            to,
            "usage: snaptp detokenize (--model PATH | --tokenizer PATH) [--json] [--input FILE]\n"
            "  Reads token ids from stdin (whitespace/comma separated, or a JSON array) and\n"
            "  writes the decoded text to stdout (with --json: as a JSON string).\n");
        return;
    }
    fprintf(to,
            "usage: snaptp tokenize (--model PATH | --tokenizer PATH) [options] < text\n"
            "  Reads UTF-8 text from stdin and prints its token ids, one per line.\n"
            "  --model PATH      a .gguf file, or a model directory (tokenizer.json or one .gguf)\n"
            "  --tokenizer PATH  a tokenizer.json (or .json.gz) or a directory holding one\n"
            "  --json            print the ids as one JSON array\n"
            "  --pieces          print 'id<TAB>piece' per line (piece JSON-escaped)\n"
            "  --bos / --no-bos  force the BOS token on or off (default: the model's choice)\n"
            "  --chat            wrap the text as a user message in the model's chat template\n"
            "  --system TEXT     with --chat: the system message\n"
            "  --input FILE      read FILE instead of stdin\n"
            "Special tokens written in the text (<|im_start|>, ...) are recognised, as in HF.\n");
}

static int parse_args(int argc, char **argv, tok_args *a) {
    const char *cmd = argv[0];
    memset(a, 0, sizeof *a);
    a->bos = -1;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout, cmd);
            return 0;
        } else if ((strcmp(s, "--model") == 0 || strcmp(s, "--tokenizer") == 0) && has_val) {
            a->path = argv[++i];
        } else if (strcmp(s, "--input") == 0 && has_val) {
            a->input = argv[++i];
        } else if (strcmp(s, "--system") == 0 && has_val) {
            a->system = argv[++i];
        } else if (strcmp(s, "--json") == 0) {
            a->json = 1;
        } else if (strcmp(s, "--pieces") == 0) {
            a->pieces = 1;
        } else if (strcmp(s, "--chat") == 0) {
            a->chat = 1;
        } else if (strcmp(s, "--bos") == 0) {
            a->bos = 1;
        } else if (strcmp(s, "--no-bos") == 0) {
            a->bos = 0;
        } else {
            fprintf(stderr, "snaptp %s: unknown or incomplete option '%s' (see --help)\n", cmd, s);
            return 2;
        }
    }
    if (!a->path) {
        fprintf(stderr, "snaptp %s: --model or --tokenizer is required (see --help)\n", cmd);
        return 2;
    }
    return -1; // go on
}

static int read_all(const char *cmd, const char *path, char **out, size_t *out_n) {
    FILE *f = path ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "snaptp %s: %s: cannot open: %s\n", cmd, path, strerror(errno));
        return 1;
    }
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *b2 = realloc(buf, cap * 2);
        if (!b2) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b2;
        cap *= 2;
    }
    int err = ferror(f);
    if (path) fclose(f);
    if (!buf || err) {
        free(buf);
        fprintf(stderr, "snaptp %s: cannot read %s\n", cmd, path ? path : "stdin");
        return 1;
    }
    buf[n] = '\0';
    *out = buf;
    *out_n = n;
    return 0;
}

static void json_string(FILE *to, const char *s, size_t n) {
    fputc('"', to);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(to, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", to);
        else if (c == '\t')
            fputs("\\t", to);
        else if (c == '\r')
            fputs("\\r", to);
        else if (c < 0x20)
            fprintf(to, "\\u%04x", c);
        else
            fputc(c, to);
    }
    fputc('"', to);
}

// Prints the runtime's message; `where` (a file name, "stdin") prefixes it when given.
static int fail(const char *cmd, const char *where) {
    fprintf(stderr, "snaptp %s: %s%s%s\n", cmd, where ? where : "", where ? ": " : "", snp_error());
    return 1;
}

// tokenize and detokenize need no ranks (they never join MPI), and only rank 0 gets
// stdin under mpirun: the others leave at once (args_peer_rank) rather than each print
// a copy of an empty result.
int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize";
    tok_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (args_peer_rank()) return 0;
    tokenizer *t = NULL;
    char *text = NULL, *chat = NULL;
    int32_t *ids = NULL;
    size_t n_text = 0, n_ids = 0;
    if (tokenizer_load(a.path, &t) != SNP_OK) return fail(cmd, NULL);
    rc = read_all(cmd, a.input, &text, &n_text);
    if (rc) goto done;
    const char *src = text;
    if (a.chat) {
        if (strlen(text) != n_text) {
            fprintf(stderr, "snaptp %s: --chat input holds a NUL byte\n", cmd);
            rc = 1;
            goto done;
        }
        if (chat_template_apply(t, a.system, text, &chat) != SNP_OK) {
            rc = fail(cmd, NULL);
            goto done;
        }
        src = chat;
        n_text = strlen(chat);
        // Templates that write the BOS text themselves (Llama 3) must not get a second one.
        size_t n_bos = 0;
        const char *bos = tokenizer_piece(t, tokenizer_bos_id(t), &n_bos);
        if (a.bos < 0 && bos && n_bos && n_text >= n_bos && memcmp(chat, bos, n_bos) == 0)
            a.bos = 0;
    }
    if (tokenizer_encode(t, src, n_text, a.bos, &ids, &n_ids) != SNP_OK) {
        rc = fail(cmd, a.input ? a.input : "stdin");
        goto done;
    }
    if (a.json) {
        fputc('[', stdout);
        for (size_t i = 0; i < n_ids; i++)
            printf(i ? ", %d" : "%d", ids[i]);
        fputs("]\n", stdout);
    } else {
        for (size_t i = 0; i < n_ids; i++) {
            if (a.pieces) {
                size_t n = 0;
                const char *p = tokenizer_piece(t, ids[i], &n);
                printf("%d\t", ids[i]);
                json_string(stdout, p, n);
                fputc('\n', stdout);
            } else {
                printf("%d\n", ids[i]);
            }
        }
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    free(chat);
    free(text);
    tokenizer_free(t);
    return rc;
}

// Ids separated by whitespace or commas, or one JSON array of them: a '[' may only
// open the input and must be closed by a ']' that only whitespace follows.
static int parse_ids(const char *cmd, const char *where, const char *s, size_t n, int32_t **out,
                     size_t *out_n) {
    size_t cap = 1024, k = 0, open_at = 0, at = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    int state = 0; // 0: no id yet, 1: plain list, 2: inside [ ], 3: after ]
    const char *why = NULL;
    size_t i = 0;
    while (ids && i < n && !why) {
        char c = s[i];
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        at = i; // where a complaint points
        if (state == 3) {
            why = "text after the closing ']' of the JSON array";
        } else if (c == '[') {
            if (state != 0) why = "a '[' that does not open the input";
            state = 2;
            open_at = i++;
        } else if (c == ']') {
            if (state != 2) why = "a ']' that closes no '['";
            state = 3;
            i++;
        } else if (c == ',') {
            i++;
        } else {
            char *end = NULL;
            errno = 0;
            long v = (c >= '0' && c <= '9') || c == '-' ? strtol(s + i, &end, 10) : 0;
            if (!end || end == s + i || errno || v < INT32_MIN || v > INT32_MAX) {
                why = "not a token id";
                break;
            }
            if (k == cap) {
                int32_t *b = realloc(ids, cap * 2 * sizeof *ids);
                if (!b) {
                    free(ids);
                    ids = NULL;
                    break;
                }
                ids = b;
                cap *= 2;
            }
            ids[k++] = (int32_t)v;
            if (state == 0) state = 1;
            i = (size_t)(end - s);
        }
    }
    if (!ids) {
        fprintf(stderr, "snaptp %s: out of memory\n", cmd);
        return 1;
    }
    if (!why && state == 2) {
        fprintf(stderr,
                "snaptp %s: %s: the JSON array opened at byte offset %zu is not closed (no ']' "
                "before the end)\n",
                cmd, where, open_at);
        free(ids);
        return 1;
    }
    if (why) {
        fprintf(stderr, "snaptp %s: %s: %s at byte offset %zu\n", cmd, where, why, at);
        free(ids);
        return 1;
    }
    *out = ids;
    *out_n = k;
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *cmd = "detokenize";
    tok_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (args_peer_rank()) return 0;
    tokenizer *t = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_text = 0, n_ids = 0;
    tokenizer_stream s;
    if (tokenizer_load(a.path, &t) != SNP_OK) return fail(cmd, NULL);
    tokenizer_stream_init(&s, t);
    rc = read_all(cmd, a.input, &text, &n_text);
    if (!rc) rc = parse_ids(cmd, a.input ? a.input : "stdin", text, n_text, &ids, &n_ids);
    if (rc) goto done;
    if (a.json) { // whole-sequence decode, printed as one JSON string
        char *out = NULL;
        size_t n = 0;
        if (tokenizer_decode(t, ids, n_ids, &out, &n) != SNP_OK) {
            rc = fail(cmd, NULL);
            goto done;
        }
        json_string(stdout, out, n);
        fputc('\n', stdout);
        free(out);
    } else { // streamed, as generation prints it
        const char *p;
        size_t n;
        for (size_t i = 0; i < n_ids; i++) {
            if (tokenizer_stream_feed(&s, ids[i], &p, &n) != SNP_OK) {
                rc = fail(cmd, NULL);
                goto done;
            }
            fwrite(p, 1, n, stdout);
        }
        if (tokenizer_stream_flush(&s, &p, &n) != SNP_OK) {
            rc = fail(cmd, NULL);
            goto done;
        }
        fwrite(p, 1, n, stdout);
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    tokenizer_stream_free(&s);
    free(ids);
    free(text);
    tokenizer_free(t);
    return rc;
}
