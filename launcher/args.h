// args: a small table-driven parser for the subcommands' `--name value` flags and
// the help text generated from the same table, so --help never drifts from parsing.
#ifndef SNAPTP_ARGS_H
#define SNAPTP_ARGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum arg_kind {
    ARG_FLAG,
    ARG_STRING,
    ARG_INT,
    ARG_COUNT,    // int >= 0 (--max-tokens, --top-k)
    ARG_POSITIVE, // int >= 1 (--threads, --tp, --chunk, --prompt-tokens): 0 or less is refused
    ARG_FLOAT,    // decimal only: hex ("0x10"), inf and nan are refused
    ARG_U64,
    ARG_STRINGS, // repeatable: every value is kept, in order
    ARG_KIND_COUNT
} arg_kind;

// The values of a repeatable string flag: v[0..n) point into argv; v is malloc'd
// (args_strings_free).
typedef struct arg_strings {
    const char **v;
    int n;
} arg_strings;

void args_strings_free(arg_strings *s);

typedef struct arg_spec {
    const char *name;  // "--max-tokens"
    arg_kind kind;
    void *target;      // int* (FLAG, INT, COUNT, POSITIVE), const char ** (STRING), float*, uint64_t*,
                       // arg_strings* (STRINGS)
    const char *meta;  // "N", "PATH"; NULL for flags
    const char *help;
    int *seen;         // optional: set to 1 when given
} arg_spec;

// args_parse: parses argv[1..argc) against specs (n of them). Returns 0, 1 when
// --help was asked (help printed to stdout), or 2 after printing an error naming
// the flag to stderr. `usage` is the first help line.
int args_parse(int argc, char **argv, const arg_spec *specs, int n, const char *command,
               const char *usage);

// args_peer_rank: 1 in a rank other than 0 of an mpirun/srun job, read from the
// launcher's environment (usable before MPI starts, and by commands that never join it).
int args_peer_rank(void);

// args_find_value: the value of flag `name` ("--config") in argv, as `--name V` or
// `--name=V`, or NULL; read before args_parse so a preset's values can be the
// defaults that the other flags override.
const char *args_find_value(int argc, char **argv, const char *name);

void args_print_help(FILE *out, const arg_spec *specs, int n, const char *usage);

#endif
