// http_server: the HTTP side of `snaptp serve` on rank 0, on libmicrohttpd (GNU's
// small embeddable HTTP/1.1 server: a Debian package, a thread per connection so a
// handler may block while its request runs, chunked responses for SSE, and no
// parser of ours). Routes:
//   POST /v1/completions, /v1/chat/completions   (completion.h)
//   GET  /v1/models, /health, /metrics
// Errors are OpenAI-style JSON ({"error": {"message", "type", "param", "code"}}).
#ifndef SNAPTP_HTTP_SERVER_H
#define SNAPTP_HTTP_SERVER_H

#include "../runtime/status.h"
#include "serve.h"

typedef struct http_server http_server;

// http_server_start: listens on host:port (port 0: any free port; see
// http_server_port) and serves sc from its own threads.
snp_status http_server_start(serve_ctx *sc, const char *host, int port, http_server **out);
int http_server_port(const http_server *h);

// http_server_quiesce: stops accepting connections (the listening socket closes);
// connections already open are still served. For a drain.
void http_server_quiesce(http_server *h);

// http_server_stop: closes every connection and joins the server's threads.
void http_server_stop(http_server *h); // NULL is a no-op

#endif
