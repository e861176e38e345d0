// args: flag parsing and help for the subcommands.
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

void args_print_help(FILE *out, const arg_spec *specs, int n, const char *usage) {
    fprintf(out, "%s\n\noptions:\n", usage);
    for (int i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", specs[i].name, specs[i].meta ? " " : "",
                 specs[i].meta ? specs[i].meta : "");
        fprintf(out, "  %-26s %s\n", left, specs[i].help);
    }
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
}

int args_peer_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                       "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v) != 0;
    }
    return 0;
}

// peer_linger: the other ranks stay 300 ms before exiting: the first rank to exit
// non-zero makes mpirun kill the rest, which could otherwise take rank 0 down before
// its message is written (seen once in CI).
static int peer_linger(void) {
    const struct timespec t = {0, 300 * 1000 * 1000};
    nanosleep(&t, NULL);
    return 0;
}

// Flags are parsed before MPI starts and every rank meets the same bad flag: only
// rank 0 says so (all exit 2).
#define arg_error(...) (args_peer_rank() ? peer_linger() : fprintf(stderr, __VA_ARGS__))

static int parse_value(const arg_spec *s, const char *v, const char *command) {
    char *end = NULL;
    errno = 0;
    switch (s->kind) {
    case ARG_STRING:
        *(const char **)s->target = v;
        return 0;
    case ARG_STRINGS: {
        arg_strings *list = s->target;
        const char **grown = realloc(list->v, sizeof *grown * (size_t)(list->n + 1));
        if (!grown) {
            arg_error("snaptp %s: out of memory\n", command);
            return 2;
        }
        grown[list->n++] = v;
        list->v = grown;
        return 0;
    }
    case ARG_INT:
    case ARG_COUNT:
    case ARG_POSITIVE: {
        long x = strtol(v, &end, 10);
        if (errno || !*v || *end || x < INT_MIN || x > INT_MAX) break;
        const long lo = s->kind == ARG_POSITIVE ? 1 : s->kind == ARG_COUNT ? 0 : INT_MIN;
        if (x < lo) {
            arg_error("snaptp %s: %s must be at least %ld, got %s\n", command, s->name, lo, v);
            return 2;
        }
        *(int *)s->target = (int)x;
        return 0;
    }
    case ARG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || !*v || *end || v[0] == '-') break;
        *(uint64_t *)s->target = x;
        return 0;
    }
    case ARG_FLOAT: {
        float x = strtof(v, &end);
        // strtof also reads C's hex floats ("0x10" is 16): a flag value is decimal.
        if (errno || !*v || *end || !isfinite(x) || strpbrk(v, "xX")) break;
        *(float *)s->target = x;
        return 0;
    }
    case ARG_FLAG:
    case ARG_KIND_COUNT:
        break;
    }
    arg_error("snaptp %s: %s expects %s, got '%s'\n", command, s->name,
            s->kind == ARG_STRING || s->kind == ARG_STRINGS ? "a string"
            : s->kind == ARG_FLOAT                           ? "a decimal number"
                                                             : "an integer",
            v);
    return 2;
}

int args_parse(int argc, char **argv, const arg_spec *specs, int n, const char *command,
               const char *usage) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args_print_help(stdout, specs, n, usage);
            return 1;
        }
        const arg_spec *s = NULL;
        const char *inline_value = NULL;
        for (int j = 0; j < n && !s; j++) {
            size_t len = strlen(specs[j].name);
            if (strncmp(a, specs[j].name, len) == 0 && (a[len] == '\0' || a[len] == '=')) {
                s = &specs[j];
                if (a[len] == '=') inline_value = a + len + 1;
            }
        }
        if (!s) {
            arg_error("snaptp %s: unknown option '%s' (see snaptp %s --help)\n", command, a,
                    command);
            return 2;
        }
        if (s->seen) *s->seen = 1;
        if (s->kind == ARG_FLAG) {
            if (inline_value) {
                arg_error("snaptp %s: %s takes no value\n", command, s->name);
                return 2;
            }
            *(int *)s->target = 1;
            continue;
        }
        const char *v = inline_value;
        if (!v) {
            if (i + 1 >= argc) {
                arg_error("snaptp %s: %s needs a value (%s)\n", command, s->name,
                        s->meta ? s->meta : "value");
                return 2;
            }
            v = argv[++i];
        }
        int rc = parse_value(s, v, command);
        if (rc) return rc;
    }
    return 0;
}

void args_strings_free(arg_strings *s) {
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

const char *args_find_value(int argc, char **argv, const char *name) {
    const size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], name) == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    }
    return NULL;
}
