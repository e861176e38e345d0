// completion: a request's life on rank 0, from its parsed body to its last byte.
#define _GNU_SOURCE // POLLRDHUP: a peer that closed its end
#include "completion.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "../runtime/chat_template.h"
#include "stop_text.h"

struct completion {
    serve_ctx *sc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;              // the HTTP side and the scheduler (until on_done)
    api_kind kind;
    int stream, include_usage;
    char id[48];
    long long created;
    uint64_t sched_id;
    int client_fd;
    atomic_int cancelled;
    // Text: decoded per token, stop strings applied.
    tokenizer_stream ts;
    stop_text stop;
    char *stops[API_MAX_STOP];
    int n_stops;
    char *text;            // everything released so far (non-streamed answer)
    size_t n_text, cap_text;
    char *out;             // SSE bytes not yet read by the HTTP side
    size_t n_out, cap_out, out_at;
    int first_chunk;       // chat streams open with the assistant role
    // The end.
    int done;
    sched_finish finish;
    int stopped_by_string;
    sched_seq_stats stats;
    snp_status text_st;    // a failure inside the callbacks (out of memory)
    kv_policy policy_asked, policy_run;
    double t_arrival, t_last_token;
};

// ---- errors ---------------------------------------------------------------------

char *api_error_json(const api_error *err, const char *message) {
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", err->type ? err->type : "invalid_request_error");
    if (err->param[0]) cJSON_AddStringToObject(e, "param", err->param);
    else cJSON_AddNullToObject(e, "param");
    cJSON_AddNumberToObject(e, "code", err->http_status);
    cJSON_AddItemToObject(o, "error", e);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static snp_status fail(api_error *err, int status, const char *type, const char *param,
                       snp_status st) {
    err->http_status = status;
    err->type = type;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    return st;
}

// ---- output ---------------------------------------------------------------------

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    char *b = realloc(*buf, c);
    if (!b) return 0;
    *buf = b;
    *cap = c;
    return 1;
}

// push_event: one SSE event "data: <json>\n\n" for the HTTP side (c->mu held).
static void push_event(completion *c, const char *json) {
    const size_t n = strlen(json);
    if (!grow(&c->out, &c->cap_out, c->n_out + n + 9)) {
        c->text_st = snp_fail(SNP_ERR_MEMORY, "out of memory for the stream");
        return;
    }
    memcpy(c->out + c->n_out, "data: ", 6);
    memcpy(c->out + c->n_out + 6, json, n);
    memcpy(c->out + c->n_out + 6 + n, "\n\n", 2);
    c->n_out += n + 8;
    pthread_cond_broadcast(&c->cv);
}

static cJSON *response_head(const completion *c, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)c->created);
    cJSON_AddStringToObject(o, "model", c->sc->model_id);
    return o;
}

static void add_usage(cJSON *o, const completion *c) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", c->stats.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", c->stats.generated_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", c->stats.prompt_tokens + c->stats.generated_tokens);
}

// add_snaptp: snaptp's own figures for the request, beside OpenAI's fields.
static void add_snaptp(cJSON *o, const completion *c) {
    cJSON *s = cJSON_AddObjectToObject(o, "snaptp");
    cJSON_AddStringToObject(s, "kv_policy", kv_policy_name(c->policy_asked));
    cJSON_AddStringToObject(s, "kv_policy_run", kv_policy_name(c->policy_run));
    cJSON_AddNumberToObject(s, "kv_bytes", (double)c->stats.kv_bytes);
    cJSON_AddNumberToObject(s, "queued_s", c->stats.queued_s);
    cJSON_AddNumberToObject(s, "ttft_s", c->stats.ttft_s);
    cJSON_AddNumberToObject(s, "total_s", c->stats.total_s);
    cJSON_AddNumberToObject(s, "tp", c->sc->tp_size);
}

static const char *finish_reason(const completion *c) {
    return c->finish == SCHED_FINISH_LENGTH ? "length" : "stop";
}

// push_chunk: a stream event carrying `piece` (or the finish reason when fin).
static void push_chunk(completion *c, const char *piece, size_t n, int fin) {
    const int chat = c->kind == API_CHAT;
    cJSON *o = response_head(c, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    char *p = strndup(piece, n);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (c->first_chunk) cJSON_AddStringToObject(d, "role", "assistant");
        if (!fin || n) cJSON_AddStringToObject(d, "content", p ? p : "");
    } else {
        cJSON_AddStringToObject(ch, "text", p ? p : "");
    }
    free(p);
    c->first_chunk = 0;
    cJSON_AddNullToObject(ch, "logprobs");
    if (fin) cJSON_AddStringToObject(ch, "finish_reason", finish_reason(c));
    else cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (js) push_event(c, js);
    else c->text_st = snp_fail(SNP_ERR_MEMORY, "out of memory for a stream chunk");
    free(js);
}

// release_text: text that has passed the stop strings (c->mu held).
static void release_text(completion *c, const char *p, size_t n) {
    if (n == 0) return;
    if (c->stream) {
        push_chunk(c, p, n, 0);
        return;
    }
    if (!grow(&c->text, &c->cap_text, c->n_text + n + 1)) {
        c->text_st = snp_fail(SNP_ERR_MEMORY, "out of memory for the answer");
        return;
    }
    memcpy(c->text + c->n_text, p, n);
    c->n_text += n;
    c->text[c->n_text] = '\0';
}

// ---- the scheduler's callbacks (its thread) -------------------------------------

static void drop_ref(completion *c);

static int on_token(void *user, int32_t token) {
    completion *c = user;
    // A cancelled request (scheduler_cancel) ends at the next step, as "cancelled".
    const double now = engine_now_s();
    metrics_observe_token(c->sc->met, now, c->t_last_token > 0 ? now - c->t_last_token : -1);
    if (c->t_last_token == 0) metrics_observe_ttft(c->sc->met, now - c->t_arrival);
    c->t_last_token = now;
    const char *p, *q;
    size_t n, m;
    snp_status st = tokenizer_stream_feed(&c->ts, token, &p, &n);
    if (st == SNP_OK) st = stop_text_feed(&c->stop, p, n, &q, &m);
    pthread_mutex_lock(&c->mu);
    if (st != SNP_OK) c->text_st = st;
    else release_text(c, q, m);
    const int stop = c->stop.stopped || c->text_st != SNP_OK;
    c->stopped_by_string = c->stop.stopped;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

static void on_done(void *user, sched_finish why, const sched_seq_stats *stats) {
    completion *c = user;
    metrics_observe_request(c->sc->met, stats->total_s);
    pthread_mutex_lock(&c->mu);
    c->finish = why;
    c->stats = *stats;
    if (why == SCHED_FINISH_STOP || why == SCHED_FINISH_LENGTH) {
        // The end of the text: a character cut by the last token, and what the stop
        // strings held back.
        const char *p, *q;
        size_t n, m;
        if (!c->stop.stopped && tokenizer_stream_flush(&c->ts, &p, &n) == SNP_OK &&
            stop_text_feed(&c->stop, p, n, &q, &m) == SNP_OK)
            release_text(c, q, m);
        stop_text_flush(&c->stop, &q, &m);
        release_text(c, q, m);
    }
    if (c->stream && why != SCHED_FINISH_CANCELLED) {
        if (why == SCHED_FINISH_ERROR) {
            const api_error e = {.http_status = 500, .type = "server_error"};
            char *js = api_error_json(&e, stats->error);
            if (js) push_event(c, js);
            free(js);
        } else {
            push_chunk(c, "", 0, 1);
            if (c->include_usage) {
                cJSON *o = response_head(c, c->kind == API_CHAT ? "chat.completion.chunk"
                                                                : "text_completion");
                cJSON_AddArrayToObject(o, "choices");
                add_usage(o, c);
                char *js = cJSON_PrintUnformatted(o);
                cJSON_Delete(o);
                if (js) push_event(c, js);
                free(js);
            }
        }
        push_event(c, "[DONE]");
    }
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    drop_ref(c);
}

// ---- lifetime -------------------------------------------------------------------

static void completion_free(completion *c) {
    atomic_fetch_sub(&c->sc->live, 1);
    if (c->ts.tok) tokenizer_stream_free(&c->ts);
    stop_text_free(&c->stop);
    for (int i = 0; i < c->n_stops; i++) free(c->stops[i]);
    free(c->text);
    free(c->out);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void drop_ref(completion *c) {
    pthread_mutex_lock(&c->mu);
    const int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) completion_free(c);
}

void completion_release(completion *c) {
    if (c) drop_ref(c);
}

void completion_cancel(completion *c) {
    if (atomic_exchange(&c->cancelled, 1)) return;
    scheduler_cancel(c->sc->sched, c->sched_id);
}

// ---- building the request -------------------------------------------------------

// prompt_ids: the request's prompt as token ids: through the chat template for chat,
// as given for completions (text, or ids checked against the vocabulary).
static snp_status prompt_ids(serve_ctx *sc, const api_request *r, int32_t **ids, size_t *n,
                             api_error *err) {
    if (r->kind == API_CHAT) {
        if (!sc->has_chat)
            return fail(err, 400, "invalid_request_error", "messages",
                        snp_fail(SNP_ERR_UNSUPPORTED,
                                 "the model has no chat template: use /v1/completions"));
        char *text = NULL;
        snp_status st = chat_template_apply(sc->tok, r->system, r->user, &text);
        // A chat template writes its own BOS when the model wants one (chat_template.h).
        if (st == SNP_OK) st = tokenizer_encode(sc->tok, text, strlen(text), 0, ids, n);
        free(text);
        if (st != SNP_OK) return fail(err, 400, "invalid_request_error", "messages", st);
        return SNP_OK;
    }
    if (r->prompt_ids) {
        const int32_t V = sc->cfg->n_vocab;
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] >= V)
                return fail(err, 400, "invalid_request_error", "prompt",
                            snp_fail(SNP_ERR_ARGUMENT,
                                     "prompt token id %d at index %zu is not in the model's "
                                     "vocabulary of %d",
                                     r->prompt_ids[i], i, V));
        *ids = malloc(sizeof(int32_t) * (r->n_prompt_ids ? r->n_prompt_ids : 1));
        if (!*ids) return snp_fail(SNP_ERR_MEMORY, "out of memory");
        memcpy(*ids, r->prompt_ids, sizeof(int32_t) * r->n_prompt_ids);
        *n = r->n_prompt_ids;
        return SNP_OK;
    }
    snp_status st = tokenizer_encode(sc->tok, r->prompt, strlen(r->prompt), -1, ids, n);
    if (st != SNP_OK) return fail(err, 400, "invalid_request_error", "prompt", st);
    return SNP_OK;
}

// sched_params: the server's defaults under the request's own settings.
static snp_status sched_params(serve_ctx *sc, const api_request *r, int n_prompt,
                               sched_request *q, api_error *err) {
    const serve_defaults *d = &sc->def;
    q->policy = d->policy;
    if (r->kv_policy) kv_policy_parse(r->kv_policy, &q->policy); // checked by the parser
    q->snapkv = d->snapkv;
    if (r->window) q->snapkv.window = r->window;
    if (r->budget) q->snapkv.budget = r->budget;
    if (r->kernel) q->snapkv.kernel = r->kernel;
    if (r->pooling) snapkv_pooling_parse(r->pooling, &q->snapkv.pooling);
    q->sampling = d->sampling;
    if (r->temperature >= 0) q->sampling.temperature = (float)r->temperature;
    if (r->top_p >= 0) q->sampling.top_p = (float)r->top_p;
    if (r->top_k >= 0) q->sampling.top_k = r->top_k;
    if (r->repetition_penalty >= 0) q->sampling.repetition_penalty = (float)r->repetition_penalty;
    static atomic_ullong counter;
    // Without a seed, each request draws its own stream (as OpenAI's API does).
    q->sampling.seed = r->has_seed ? r->seed
                                   : (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^
                                         atomic_fetch_add(&counter, 1) * 0xbf58476d1ce4e5b9ull;
    int max = r->max_tokens > 0 ? r->max_tokens : d->max_tokens;
    // No max_tokens: the default, within what the context leaves (as vLLM does).
    if (r->max_tokens <= 0 && n_prompt + max > sc->cfg->n_ctx) max = sc->cfg->n_ctx - n_prompt;
    q->max_tokens = max;
    q->ignore_eos = r->ignore_eos;
    if (q->policy == KV_POLICY_SNAPKV) {
        if (q->snapkv.budget <= q->snapkv.window)
            return fail(err, 400, "invalid_request_error", "snapkv_budget",
                        snp_fail(SNP_ERR_ARGUMENT, "the SnapKV budget %d must exceed its window %d",
                                 q->snapkv.budget, q->snapkv.window));
        // A prompt within the budget keeps every row: SnapKV would select them all, so
        // the full cache gives the same attention without the selection's work.
        if (n_prompt <= q->snapkv.budget) q->policy = KV_POLICY_FULL;
    }
    return SNP_OK;
}

snp_status completion_start(serve_ctx *sc, const api_request *r, int client_fd, completion **out,
                            api_error *err) {
    *out = NULL;
    memset(err, 0, sizeof *err);
    if (r->model && strcmp(r->model, sc->model_id) != 0 && strcmp(r->model, sc->model_path) != 0)
        return fail(err, 404, "invalid_request_error", "model",
                    snp_fail(SNP_ERR_ARGUMENT, "the model '%s' does not exist here: this server "
                             "serves '%s' (GET /v1/models)", r->model, sc->model_id));
    int32_t *ids = NULL;
    size_t n_ids = 0;
    TRY(prompt_ids(sc, r, &ids, &n_ids, err));
    if (n_ids == 0 || n_ids > (size_t)sc->cfg->n_ctx) {
        snp_status st = snp_fail(SNP_ERR_ARGUMENT,
                                 n_ids ? "the prompt has %zu tokens; the model's context is %d "
                                         "tokens"
                                       : "the prompt is empty (%zu tokens; context %d)",
                                 n_ids, sc->cfg->n_ctx);
        free(ids);
        return fail(err, 400, "invalid_request_error", r->kind == API_CHAT ? "messages" : "prompt", st);
    }
    completion *c = calloc(1, sizeof *c);
    if (!c) {
        free(ids);
        return snp_fail(SNP_ERR_MEMORY, "out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    atomic_fetch_add(&sc->live, 1);
    c->sc = sc;
    c->refs = 1;
    c->kind = r->kind;
    c->stream = r->stream;
    c->include_usage = r->include_usage;
    c->first_chunk = 1;
    c->client_fd = client_fd;
    c->created = (long long)time(NULL);
    c->t_arrival = engine_now_s();
    for (int i = 0; i < r->n_stop; i++)
        if ((c->stops[c->n_stops] = strdup(r->stop[i]))) c->n_stops++;
    stop_text_init(&c->stop, c->stops, c->n_stops);
    tokenizer_stream_init(&c->ts, sc->tok);
    sched_request q = {.prompt = ids, .n_prompt = (int)n_ids,
                       .cb = {.on_token = on_token, .on_done = on_done, .user = c}};
    snp_status st = sched_params(sc, r, (int)n_ids, &q, err);
    c->policy_asked = r->kv_policy ? (strcmp(r->kv_policy, "full") == 0 ? KV_POLICY_FULL
                                                                        : KV_POLICY_SNAPKV)
                                   : sc->def.policy;
    c->policy_run = q.policy;
    if (st == SNP_OK) {
        st = scheduler_check(sc->sched, &q);
        if (st != SNP_OK) {
            const char *param = strstr(snp_error(), "max_tokens") ? "max_tokens"
                                : strstr(snp_error(), "KV pool") ? NULL
                                : strstr(snp_error(), "snapkv") || strstr(snp_error(), "--")
                                    ? "snapkv"
                                    : r->kind == API_CHAT ? "messages" : "prompt";
            fail(err, 400, "invalid_request_error", param, st);
        }
    }
    // The id before the submit: the scheduler's thread may write chunks at once.
    static atomic_ullong n_made;
    snprintf(c->id, sizeof c->id, "%s-%llu", r->kind == API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)atomic_fetch_add(&n_made, 1) + 1);
    if (st == SNP_OK) {
        c->refs = 2; // the scheduler's, given back in on_done
        st = scheduler_submit(sc->sched, &q, &c->sched_id);
        if (st == SNP_ERR_BUSY) fail(err, 429, "rate_limit_error", NULL, st);
        else if (st == SNP_ERR_UNSUPPORTED) fail(err, 503, "server_error", NULL, st);
        if (st != SNP_OK) c->refs = 1;
    }
    free(ids);
    if (st != SNP_OK) {
        if (!err->http_status) fail(err, 500, "server_error", NULL, st);
        completion_free(c);
        return st;
    }
    *out = c;
    return SNP_OK;
}

// ---- the HTTP side --------------------------------------------------------------

// client_gone: the peer closed its end of the connection (or it broke).
static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return 1;
    char byte;
    const ssize_t k = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// wait_a_little: waits on c->cv (c->mu held) for up to 50 ms, then checks the client.
static void wait_a_little(completion *c) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    if (!c->done && client_gone(c->client_fd)) {
        pthread_mutex_unlock(&c->mu);
        completion_cancel(c);
        pthread_mutex_lock(&c->mu);
    }
}

size_t completion_read_stream(completion *c, char *buf, size_t max, int *end) {
    *end = 0;
    pthread_mutex_lock(&c->mu);
    while (c->out_at == c->n_out && !c->done) wait_a_little(c);
    size_t n = c->n_out - c->out_at;
    if (n > max) n = max;
    memcpy(buf, c->out + c->out_at, n);
    c->out_at += n;
    if (c->out_at == c->n_out) c->out_at = c->n_out = 0; // everything read: reuse the buffer
    if (n == 0 && c->done) *end = 1;
    pthread_mutex_unlock(&c->mu);
    return n;
}

char *completion_wait_json(completion *c, int *http_status) {
    pthread_mutex_lock(&c->mu);
    while (!c->done) wait_a_little(c);
    pthread_mutex_unlock(&c->mu);
    if (c->finish == SCHED_FINISH_ERROR || c->text_st != SNP_OK) {
        *http_status = 500;
        const api_error e = {.http_status = 500, .type = "server_error"};
        return api_error_json(&e, c->finish == SCHED_FINISH_ERROR ? c->stats.error : snp_error());
    }
    *http_status = 200;
    const int chat = c->kind == API_CHAT;
    cJSON *o = response_head(c, chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (chat) {
        cJSON *msg = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", c->text ? c->text : "");
    } else {
        cJSON_AddStringToObject(ch, "text", c->text ? c->text : "");
    }
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", finish_reason(c));
    cJSON_AddItemToArray(choices, ch);
    add_usage(o, c);
    add_snaptp(o, c);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return js;
}
