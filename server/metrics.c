// metrics: Prometheus text exposition (format 0.0.4).
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double ttft_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5};
static const double e2e_bounds[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640};

static void histogram_init(histogram *h, const double *b, int n) {
    memset(h, 0, sizeof *h);
    h->bounds = b;
    h->n_bounds = n;
}

static void histogram_add(histogram *h, double v) {
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

void metrics_init(metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    histogram_init(&m->ttft, ttft_bounds, sizeof ttft_bounds / sizeof ttft_bounds[0]);
    histogram_init(&m->itl, itl_bounds, sizeof itl_bounds / sizeof itl_bounds[0]);
    histogram_init(&m->e2e, e2e_bounds, sizeof e2e_bounds / sizeof e2e_bounds[0]);
}

void metrics_free(metrics *m) { pthread_mutex_destroy(&m->mu); }

void metrics_observe_ttft(metrics *m, double s) {
    pthread_mutex_lock(&m->mu);
    histogram_add(&m->ttft, s);
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_request(metrics *m, double s) {
    pthread_mutex_lock(&m->mu);
    histogram_add(&m->e2e, s);
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_token(metrics *m, double now_s, double since_last_s) {
    const int64_t sec = (int64_t)now_s;
    const int slot = (int)(sec % (METRICS_RATE_SECONDS + 1));
    pthread_mutex_lock(&m->mu);
    if (since_last_s >= 0) histogram_add(&m->itl, since_last_s);
    if (m->second[slot] != sec) {
        m->second[slot] = sec;
        m->per_second[slot] = 0;
    }
    m->per_second[slot]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_http(metrics *m, int status) {
    const int cls = status / 100;
    pthread_mutex_lock(&m->mu);
    if (cls >= 1 && cls <= 5) m->http_requests[cls]++;
    pthread_mutex_unlock(&m->mu);
}

// A growing text buffer; a failed append leaves ok = 0.
typedef struct text {
    char *s;
    size_t n, cap;
    int ok;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    if (!t->ok) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s + t->n, t->cap - t->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->ok = 0;
            return;
        }
        if ((size_t)k < t->cap - t->n) {
            t->n += (size_t)k;
            return;
        }
        size_t cap = 2 * t->cap + (size_t)k + 1;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->ok = 0;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
}

static void put_histogram(text *t, const char *name, const char *help, const histogram *h,
                          const char *labels) {
    put(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        put(t, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    put(t, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    put(t, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
        (unsigned long long)h->n);
}

static void put_value(text *t, const char *name, const char *type, const char *help,
                      const char *labels, double v) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n", name, help, name, type, name, labels, v);
}

char *metrics_render(metrics *m, const sched_snapshot *s, const char *model_id) {
    text t = {.s = malloc(4096), .cap = 4096, .ok = 1};
    if (!t.s) return NULL;
    t.s[0] = '\0';
    char labels[256];
    // Model ids are file names: quotes and backslashes would break the label.
    char id[160];
    size_t k = 0;
    for (const char *p = model_id; *p && k + 2 < sizeof id; p++)
        if (*p != '"' && *p != '\\' && *p != '\n') id[k++] = *p;
    id[k] = '\0';
    snprintf(labels, sizeof labels, "model_name=\"%s\"", id);
    pthread_mutex_lock(&m->mu);
    const metrics c = *m; // a consistent copy; its mutex is not used
    pthread_mutex_unlock(&m->mu);
    put_value(&t, "snaptp_num_requests_running", "gauge",
              "Sequences admitted: prefilling or decoding.", labels, s->running);
    put_value(&t, "snaptp_num_requests_waiting", "gauge", "Requests queued for admission.", labels,
              s->waiting);
    put_value(&t, "snaptp_num_requests_prefilling", "gauge", "Sequences whose prefill is running.",
              labels, s->prefilling);
    put_value(&t, "snaptp_kv_cache_bytes_used", "gauge",
              "KV pool bytes held by caches and the running prefill, rank 0.", labels,
              (double)s->kv_bytes_used);
    put_value(&t, "snaptp_kv_cache_bytes_free", "gauge", "KV pool bytes free, rank 0.", labels,
              (double)(s->kv_bytes_pool > s->kv_bytes_used ? s->kv_bytes_pool - s->kv_bytes_used : 0));
    put_value(&t, "snaptp_kv_cache_usage_ratio", "gauge", "KV pool in use, 0 to 1.", labels,
              s->kv_bytes_pool ? (double)s->kv_bytes_used / (double)s->kv_bytes_pool : 0);
    put_value(&t, "snaptp_prompt_tokens_total", "counter", "Prompt tokens prefilled.", labels,
              (double)s->prompt_tokens_total);
    put_value(&t, "snaptp_generation_tokens_total", "counter", "Tokens generated.", labels,
              (double)s->generated_tokens_total);
    put_value(&t, "snaptp_scheduler_steps_total", "counter", "Scheduler steps run.", labels,
              (double)s->steps);
    put_value(&t, "snaptp_decode_steps_total", "counter", "Batched decode steps run.", labels,
              (double)s->decode_steps);
    put_value(&t, "snaptp_prefill_layers_total", "counter",
              "Prefill layers run (interleaved with decode steps).", labels,
              (double)s->prefill_layers);
    put_value(&t, "snaptp_prefill_seconds_total", "counter",
              "Seconds spent in prefill layers (rank 0).", labels, s->prefill_s);
    put_value(&t, "snaptp_decode_seconds_total", "counter",
              "Seconds spent in batched decode steps (rank 0).", labels, s->decode_s);
    // The rate over the last full seconds (the current one is still filling).
    int64_t now = 0;
    for (int i = 0; i <= METRICS_RATE_SECONDS; i++)
        if (c.second[i] > now) now = c.second[i];
    uint64_t recent = 0;
    for (int i = 0; i <= METRICS_RATE_SECONDS; i++)
        if (c.second[i] < now && c.second[i] >= now - METRICS_RATE_SECONDS) recent += c.per_second[i];
    put_value(&t, "snaptp_generation_tokens_per_second", "gauge",
              "Tokens generated per second over the last 10 whole seconds with tokens.", labels,
              (double)recent / METRICS_RATE_SECONDS);
    put(&t, "# HELP snaptp_request_success_total Requests finished, by reason.\n"
            "# TYPE snaptp_request_success_total counter\n");
    for (int r = SCHED_FINISH_STOP; r <= SCHED_FINISH_ERROR; r++)
        put(&t, "snaptp_request_success_total{%s,finished_reason=\"%s\"} %llu\n", labels,
            sched_finish_name((sched_finish)r), (unsigned long long)s->requests_finished[r]);
    put(&t, "# HELP snaptp_http_requests_total HTTP responses, by status class.\n"
            "# TYPE snaptp_http_requests_total counter\n");
    for (int cls = 1; cls <= 5; cls++)
        put(&t, "snaptp_http_requests_total{%s,status=\"%dxx\"} %llu\n", labels, cls,
            (unsigned long long)c.http_requests[cls]);
    put_histogram(&t, "snaptp_time_to_first_token_seconds",
                  "Time from request arrival to its first token.", &c.ttft, labels);
    put_histogram(&t, "snaptp_inter_token_latency_seconds",
                  "Time between consecutive tokens of a request.", &c.itl, labels);
    put_histogram(&t, "snaptp_e2e_request_latency_seconds", "Time from arrival to the last token.",
                  &c.e2e, labels);
    put_value(&t, "snaptp_draining", "gauge", "1 while the server drains for shutdown.", labels,
              s->draining);
    if (!t.ok) {
        free(t.s);
        return NULL;
    }
    return t.s;
}
