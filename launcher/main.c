// main: the `snaptp` binary; dispatches to a subcommand and prints the top help.
#include <stdio.h>
#include <string.h>

#include "commands.h"

#define SNAPTP_VERSION "0.1.0"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"generate", cmd_generate, "generate text from a prompt"},
    {"qa", cmd_qa, "answer a question about a long document (SnapKV-compressed prefill)"},
    {"serve", cmd_serve, "serve an OpenAI-compatible HTTP API with continuous batching"},
    {"bench", cmd_bench, "measure prefill and decode tokens/s at given prompt lengths"},
    {"inspect", cmd_inspect, "print a model's config and the memory plan of a request"},
    {"tokenize", cmd_tokenize, "print the token ids of text read on stdin"},
    {"detokenize", cmd_detokenize, "print the text of token ids read on stdin"},
};

static void print_help(FILE *out) {
    fprintf(out,
            "snaptp %s: tensor-parallel LLM inference for very long prompts\n\n"
            "usage: snaptp <command> [options]   (snaptp <command> --help for its options)\n\n"
            "commands:\n",
            SNAPTP_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("snaptp %s\n", SNAPTP_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "snaptp: unknown command '%s' (see snaptp --help)\n", argv[1]);
    return 2;
}
