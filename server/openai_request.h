// openai_request: the body of POST /v1/completions and /v1/chat/completions, parsed
// and checked field by field into what snaptp runs. Pure (no model, no I/O), so it
// is fuzzed on its own (tests/fuzz/fuzz_openai_request.c). Unknown fields are
// tolerated, as OpenAI's clients send fields a server may not know; a known field
// of the wrong type or out of range, or one snaptp cannot honour (n > 1, logprobs),
// is an error naming it.
#ifndef SNAPTP_OPENAI_REQUEST_H
#define SNAPTP_OPENAI_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/status.h"

typedef enum api_kind { API_COMPLETIONS, API_CHAT } api_kind;

enum { API_MAX_STOP = 4 }; // OpenAI's limit on `stop` strings

// An OpenAI-style error: HTTP status, error.type, error.param (NULL: none) and the
// message (snp_error() of the failing call).
typedef struct api_error {
    int http_status;
    const char *type;  // "invalid_request_error", "not_found_error", ...
    char param[64];
} api_error;

typedef struct api_request {
    api_kind kind;
    char *model;          // NULL: not given
    // completions: `prompt` (a string, or an array of one string) or token ids
    char *prompt;
    int32_t *prompt_ids;  // `prompt` as an array of token ids
    size_t n_prompt_ids;
    // chat: one system message (NULL: none) and one user message
    char *system;
    char *user;
    int stream;
    int include_usage;    // stream_options.include_usage
    int max_tokens;       // -1: not given (the server's default applies)
    double temperature;   // -1: not given
    double top_p;         // -1: not given
    int top_k;            // -1: not given
    double repetition_penalty; // -1: not given
    int has_seed;
    uint64_t seed;
    char *stop[API_MAX_STOP];
    int n_stop;
    int ignore_eos;
    // snaptp's own fields: the request's KV policy and SnapKV settings (0: the
    // server's default, from --config or the model's preset)
    char *kv_policy;      // "full" | "snapkv" | NULL
    int window, budget, kernel;
    char *pooling;        // "avg" | "max" | NULL
} api_request;

// api_request_parse: body[0..n) as JSON for endpoint `kind` into *out (zeroed first;
// free with api_request_free even on failure). On failure *err says the HTTP status
// (400), type and the field at fault, and snp_error() the message.
snp_status api_request_parse(const char *body, size_t n, api_kind kind, api_request *out,
                             api_error *err);
void api_request_free(api_request *r);

#endif
