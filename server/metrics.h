// metrics: what GET /metrics reports, in Prometheus' text format: the scheduler's
// gauges (running and waiting sequences, KV bytes in use and free), request and
// token counters, the generation rate over the last 10 s, and histograms of the
// time to first token and of the time between tokens. Observations come from the
// scheduler's thread; rendering from an HTTP thread: a mutex joins them.
#ifndef SNAPTP_METRICS_H
#define SNAPTP_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/scheduler.h"

enum { METRICS_MAX_BUCKETS = 16, METRICS_RATE_SECONDS = 10 };

typedef struct histogram {
    const double *bounds; // upper bounds, ascending (+Inf is implicit)
    int n_bounds;
    uint64_t counts[METRICS_MAX_BUCKETS + 1];
    double sum;
    uint64_t n;
} histogram;

typedef struct metrics {
    pthread_mutex_t mu;
    histogram ttft, itl, e2e;
    uint64_t http_requests[6]; // by status class: 1xx .. 5xx (index 1..5)
    uint64_t rejected_busy, rejected_invalid;
    // Generated tokens per whole second, a ring over the last seconds.
    uint64_t per_second[METRICS_RATE_SECONDS + 1];
    int64_t second[METRICS_RATE_SECONDS + 1];
} metrics;

void metrics_init(metrics *m);
void metrics_free(metrics *m);

void metrics_observe_ttft(metrics *m, double seconds);
void metrics_observe_token(metrics *m, double now_s, double since_last_s); // since_last < 0: first
void metrics_observe_request(metrics *m, double seconds);
void metrics_count_http(metrics *m, int status);

// metrics_render: the exposition text, malloc'd; NULL when out of memory.
char *metrics_render(metrics *m, const sched_snapshot *s, const char *model_id);

#endif
