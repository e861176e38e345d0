// http_server: routing and responses over libmicrohttpd.
#include "http_server.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "completion.h"
#include "openai_request.h"

struct http_server {
    serve_ctx *sc;
    struct MHD_Daemon *d;
    int port;
    struct sockaddr_storage addr;
};

// The state of one request across the handler's calls (MHD's con_cls).
typedef struct conn {
    char *body;
    size_t n, cap;
    int too_big;
} conn;

// ---- responses ------------------------------------------------------------------

static enum MHD_Result respond(serve_ctx *sc, struct MHD_Connection *con, int status,
                               const char *type, char *body /* freed */) {
    struct MHD_Response *r = MHD_create_response_from_buffer(body ? strlen(body) : 0, body,
                                                             MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 429) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    metrics_count_http(sc->met, status);
    enum MHD_Result ok = MHD_queue_response(con, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond_error(serve_ctx *sc, struct MHD_Connection *con, int status,
                                     const char *type, const char *param, const char *message) {
    api_error e = {.http_status = status, .type = type};
    snprintf(e.param, sizeof e.param, "%s", param ? param : "");
    // snp_error()'s "  at file:line" trace is for snaptp's developers, not its clients.
    char text[1024];
    snprintf(text, sizeof text, "%s", message);
    char *trace = strstr(text, "\n  at ");
    if (trace) *trace = '\0';
    return respond(sc, con, status, "application/json", api_error_json(&e, text));
}

static enum MHD_Result respond_json(serve_ctx *sc, struct MHD_Connection *con, int status, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return respond_error(sc, con, 500, "server_error", NULL, "out of memory");
    return respond(sc, con, status, "application/json", s);
}

// ---- GET routes -----------------------------------------------------------------

static enum MHD_Result get_models(serve_ctx *sc, struct MHD_Connection *con) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", sc->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)(long long)sc->created);
    cJSON_AddStringToObject(m, "owned_by", "snaptp");
    cJSON_AddStringToObject(m, "root", sc->model_path);
    cJSON_AddNullToObject(m, "parent");
    cJSON_AddNumberToObject(m, "max_model_len", sc->cfg->n_ctx);
    cJSON_AddItemToArray(data, m);
    return respond_json(sc, con, 200, o);
}

static enum MHD_Result get_health(serve_ctx *sc, struct MHD_Connection *con) {
    sched_snapshot s;
    scheduler_snapshot(sc->sched, &s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", s.draining ? "draining" : "ok");
    cJSON_AddNumberToObject(o, "running", s.running);
    cJSON_AddNumberToObject(o, "waiting", s.waiting);
    return respond_json(sc, con, s.draining ? 503 : 200, o);
}

static enum MHD_Result get_metrics(serve_ctx *sc, struct MHD_Connection *con) {
    sched_snapshot s;
    scheduler_snapshot(sc->sched, &s);
    char *text = metrics_render(sc->met, &s, sc->model_id);
    if (!text) return respond_error(sc, con, 500, "server_error", NULL, "out of memory");
    return respond(sc, con, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}

// ---- completions ----------------------------------------------------------------

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    int end = 0;
    const size_t n = completion_read_stream(cls, buf, max, &end);
    return end ? MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

// stream_done: the response is gone: finished, or the client went away mid-stream,
// in which case the request is cancelled (its KV freed at the next step).
static void stream_done(void *cls) {
    completion_cancel(cls);
    completion_release(cls);
}

static int client_fd(struct MHD_Connection *con) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static enum MHD_Result post_completion(serve_ctx *sc, struct MHD_Connection *con, conn *cs,
                                       api_kind kind) {
    api_request r;
    api_error err;
    if (api_request_parse(cs->body, cs->n, kind, &r, &err) != SNP_OK) {
        api_request_free(&r);
        return respond_error(sc, con, err.http_status, err.type, err.param, snp_error());
    }
    completion *c = NULL;
    const int stream = r.stream;
    snp_status st = completion_start(sc, &r, client_fd(con), &c, &err);
    api_request_free(&r);
    if (st != SNP_OK) return respond_error(sc, con, err.http_status, err.type, err.param, snp_error());
    if (!stream) {
        int status = 200;
        char *body = completion_wait_json(c, &status);
        completion_release(c);
        if (!body) return respond_error(sc, con, 500, "server_error", NULL, "out of memory");
        return respond(sc, con, status, "application/json", body);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, c, stream_done);
    if (!resp) {
        stream_done(c);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    metrics_count_http(sc->met, 200);
    enum MHD_Result ok = MHD_queue_response(con, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ok;
}

// ---- the handler ----------------------------------------------------------------

static int authorized(const serve_ctx *sc, struct MHD_Connection *con) {
    if (!sc->api_key) return 1;
    const char *h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return h && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, sc->api_key) == 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *con, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
    (void)version;
    serve_ctx *sc = cls;
    const int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    const int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    if (!*con_cls) { // headers only so far
        conn *cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        *con_cls = cs;
        if (post) return MHD_YES; // the body comes in the next calls
    }
    conn *cs = *con_cls;
    if (post && *upload_size) {
        // Past the limit the rest is read and dropped, so the answer can be a 413.
        if (!cs->too_big && cs->n + *upload_size > sc->max_body_bytes) {
            cs->too_big = 1;
            free(cs->body);
            cs->body = NULL;
            cs->n = cs->cap = 0;
        }
        if (!cs->too_big) {
            if (cs->n + *upload_size + 1 > cs->cap) {
                size_t cap = (cs->n + *upload_size + 1) * 2;
                if (cap > sc->max_body_bytes + 1) cap = sc->max_body_bytes + 1;
                char *b = realloc(cs->body, cap);
                if (!b) return MHD_NO;
                cs->body = b;
                cs->cap = cap;
            }
            memcpy(cs->body + cs->n, upload, *upload_size);
            cs->n += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const int completions = strcmp(url, "/v1/completions") == 0;
    const int chat = strcmp(url, "/v1/chat/completions") == 0;
    const int models = strcmp(url, "/v1/models") == 0;
    if ((completions || chat || models || strncmp(url, "/v1/", 4) == 0) && !authorized(sc, con))
        return respond_error(sc, con, 401, "authentication_error", NULL,
                             "a valid API key is required: 'Authorization: Bearer <key>' (--api-key)");
    if (completions || chat) {
        if (!post) return respond_error(sc, con, 405, "invalid_request_error", NULL, "use POST");
        if (cs->too_big) {
            char msg[160];
            snprintf(msg, sizeof msg, "the request body is over the server's limit of %zu bytes "
                     "(--max-body)", sc->max_body_bytes);
            return respond_error(sc, con, 413, "invalid_request_error", NULL, msg);
        }
        return post_completion(sc, con, cs, chat ? API_CHAT : API_COMPLETIONS);
    }
    if (models || strcmp(url, "/health") == 0 || strcmp(url, "/metrics") == 0) {
        if (!get) return respond_error(sc, con, 405, "invalid_request_error", NULL, "use GET");
        if (models) return get_models(sc, con);
        return url[1] == 'h' ? get_health(sc, con) : get_metrics(sc, con);
    }
    char msg[160];
    snprintf(msg, sizeof msg, "no route %s %.100s", method, url);
    return respond_error(sc, con, 404, "not_found_error", NULL, msg);
}

static void request_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                              enum MHD_RequestTerminationCode code) {
    (void)cls, (void)con, (void)code;
    conn *cs = *con_cls;
    if (!cs) return;
    free(cs->body);
    free(cs);
    *con_cls = NULL;
}

// ---- lifetime -------------------------------------------------------------------

static snp_status resolve(const char *host, int port, struct sockaddr_storage *out, socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    const int rc = getaddrinfo(host, port_s, &hints, &ai);
    if (rc != 0 || !ai)
        return snp_fail(SNP_ERR_ARGUMENT, "serve: --host '%s': %s", host, gai_strerror(rc));
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return SNP_OK;
}

snp_status http_server_start(serve_ctx *sc, const char *host, int port, http_server **out) {
    *out = NULL;
    if (port < 0 || port > 65535) return snp_fail(SNP_ERR_ARGUMENT, "serve: --port %d", port);
    http_server *h = calloc(1, sizeof *h);
    if (!h) return snp_fail(SNP_ERR_MEMORY, "serve: out of memory");
    h->sc = sc;
    socklen_t len = 0;
    snp_status st = resolve(host, port, &h->addr, &len);
    if (st != SNP_OK) {
        free(h);
        return st;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (h->addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle, sc,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->addr,
                            MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
                            // Idle keep-alive connections go after 10 minutes; a
                            // request that runs long is not idle (its thread waits).
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return snp_fail(SNP_ERR_IO, "serve: cannot listen on %s:%d (in use, or not this host's "
                        "address?)", host, port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : port;
    *out = h;
    return SNP_OK;
}

int http_server_port(const http_server *h) { return h->port; }

void http_server_quiesce(http_server *h) {
    if (!h || !h->d) return;
    const MHD_socket s = MHD_quiesce_daemon(h->d);
    if (s != MHD_INVALID_SOCKET) close(s);
}

void http_server_stop(http_server *h) {
    if (!h) return;
    if (h->d) MHD_stop_daemon(h->d);
    free(h);
}
