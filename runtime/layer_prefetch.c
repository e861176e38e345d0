// layer_prefetch: a worker thread with a one-slot request, guarded by a mutex and a
// condition variable (the worker waits for a request, the caller for a result).
#include "layer_prefetch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NONE = -1 };

struct layer_prefetch {
    layer_stage_fn stage;
    void *user;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int requested; // the layer asked for and not yet taken, or NONE
    int done;      // 1: `requested` is staged and its result is below
    int quit;
    snp_status result;
    char message[1024]; // the stage's snp_error(), which is per thread
};

static void *worker_main(void *arg) {
    layer_prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && (p->requested == NONE || p->done))
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->quit) break;
        const int layer = p->requested;
        pthread_mutex_unlock(&p->mu);
        const snp_status st = p->stage(p->user, layer);
        pthread_mutex_lock(&p->mu);
        p->result = st;
        snprintf(p->message, sizeof p->message, "%s", st == SNP_OK ? "" : snp_error());
        p->done = 1;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

snp_status layer_prefetch_start(layer_stage_fn stage, void *user, layer_prefetch **out) {
    *out = NULL;
    layer_prefetch *p = calloc(1, sizeof *p);
    if (!p) return snp_fail(SNP_ERR_MEMORY, "layer prefetch: out of memory");
    *p = (layer_prefetch){.stage = stage, .user = user, .requested = NONE};
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    const int e = pthread_create(&p->thread, NULL, worker_main, p);
    if (e != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return snp_fail(SNP_ERR_IO, "layer prefetch: cannot start its thread: %s", strerror(e));
    }
    *out = p;
    return SNP_OK;
}

snp_status layer_prefetch_request(layer_prefetch *p, int layer) {
    pthread_mutex_lock(&p->mu);
    const int busy = p->requested;
    if (busy == NONE) {
        p->requested = layer;
        p->done = 0;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (busy != NONE)
        return snp_fail(SNP_ERR_INTERNAL, "layer prefetch: layer %d asked for while %d is in flight",
                        layer, busy);
    return SNP_OK;
}

snp_status layer_prefetch_take(layer_prefetch *p, int layer) {
    pthread_mutex_lock(&p->mu);
    if (p->requested != layer) {
        // Another layer in flight (a request cut short by an error) is let finish and
        // dropped; then this one is staged here, on the caller's thread.
        while (p->requested != NONE && !p->done)
            pthread_cond_wait(&p->cv, &p->mu);
        p->requested = NONE;
        p->done = 0;
        pthread_mutex_unlock(&p->mu);
        return p->stage(p->user, layer);
    }
    while (!p->done)
        pthread_cond_wait(&p->cv, &p->mu);
    const snp_status st = p->result;
    char message[sizeof p->message];
    memcpy(message, p->message, sizeof message);
    p->requested = NONE;
    p->done = 0;
    pthread_mutex_unlock(&p->mu);
    if (st != SNP_OK) return snp_fail(st, "%s", message);
    return SNP_OK;
}

void layer_prefetch_stop(layer_prefetch *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    while (p->requested != NONE && !p->done) // let an in-flight stage finish
        pthread_cond_wait(&p->cv, &p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
