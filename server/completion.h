// completion: one OpenAI completion or chat completion while it runs: the prompt
// tokenized (through the model's chat template for chat), checked and submitted to
// the scheduler, and its tokens turned into text (stop strings applied) and into
// the response: SSE events for a stream, one JSON object otherwise. Two sides hold
// it: the scheduler's thread writes (its callbacks), an HTTP thread reads; the last
// to let go frees it.
#ifndef SNAPTP_COMPLETION_H
#define SNAPTP_COMPLETION_H

#include <stddef.h>

#include "openai_request.h"
#include "serve.h"

typedef struct completion completion;

// completion_start: turns *r into a scheduler request and submits it. Fails with
// *err filled: 400 (a prompt over the context, a request over the KV pool, bad
// settings, an unknown model name), 404, 429 (the queue is full), 503 (draining);
// the message is in snp_error(). `client_fd` is the connection's socket, watched
// for the client going away (-1: not watched).
snp_status completion_start(serve_ctx *sc, const api_request *r, int client_fd, completion **out,
                            api_error *err);

// completion_read_stream: the next bytes of a stream's SSE output, at most `max`.
// Blocks until there are some or the stream ends (*end = 1, 0 returned). A client
// that closed its connection cancels the request, which frees its KV at the next
// scheduler step.
size_t completion_read_stream(completion *c, char *buf, size_t max, int *end);

// completion_wait_json: a non-streamed request: blocks until it ends (cancelling it
// if the client goes away) and returns the response body (malloc'd) and its HTTP
// status (200, or 500 when the request failed in the model).
char *completion_wait_json(completion *c, int *http_status);

// completion_cancel: the client is gone (the HTTP library says so).
void completion_cancel(completion *c);

// completion_release: the HTTP side is done with c.
void completion_release(completion *c);

// api_error_json: {"error": {"message", "type", "param", "code"}} (malloc'd).
char *api_error_json(const api_error *err, const char *message);

#endif
