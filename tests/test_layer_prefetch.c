// test_layer_prefetch: the KV store's prefetcher thread on its own: layers staged on
// the worker arrive complete and in order, a failing stage's message reaches the
// caller, a layer never asked for is staged inline, a take of another layer drops
// the one in flight, and stop waits for a stage in flight. Also built under
// ThreadSanitizer by run_all.sh.
#include "../runtime/layer_prefetch.h"
#include "support/test_support.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

enum { N_LAYERS = 40, WIDTH = 4096 };

typedef struct fake_store {
    int stage_buf[WIDTH]; // what the worker fills, as the KV store fills its stages
    int staged;           // layers staged (by either thread)
    int fail_at;          // a layer whose stage fails, or -1
} fake_store;

static void nap(long ns) {
    struct timespec t = {0, ns};
    nanosleep(&t, NULL);
}

static snp_status stage(void *user, int layer) {
    fake_store *s = user;
    nap(200000 + (layer % 3) * 100000); // a disk read, unevenly long
    if (layer == s->fail_at)
        return snp_fail(SNP_ERR_FORMAT, "layer %d fails its checksum", layer);
    for (int i = 0; i < WIDTH; i++) s->stage_buf[i] = layer * WIDTH + i;
    s->staged++;
    return SNP_OK;
}

int main(void) {
    test_counts tc = {0};
    fake_store s = {.fail_at = -1};
    layer_prefetch *p = NULL;
    if (!test_check(&tc, layer_prefetch_start(stage, &s, &p) == SNP_OK, "start: %s", snp_error()))
        return test_finish(&tc, "test_layer_prefetch");
    // The store's pattern: take l (layer 0 never asked for), then ask for l + 1.
    int wrong = 0;
    for (int l = 0; l < N_LAYERS; l++) {
        snp_status st = layer_prefetch_take(p, l);
        for (int i = 0; st == SNP_OK && i < WIDTH; i++) wrong += s.stage_buf[i] != l * WIDTH + i;
        if (!test_check(&tc, st == SNP_OK, "take %d: %s", l, snp_error())) break;
        nap(100000); // the layer's compute
        if (l + 1 < N_LAYERS) test_check(&tc, layer_prefetch_request(p, l + 1) == SNP_OK, "ask %d", l + 1);
    }
    test_check(&tc, wrong == 0 && s.staged == N_LAYERS, "%d layers staged, %d values wrong",
               s.staged, wrong);
    // A second request while one is in flight is refused.
    test_check(&tc, layer_prefetch_request(p, 1) == SNP_OK, "ask 1");
    test_check(&tc, layer_prefetch_request(p, 2) != SNP_OK && strstr(snp_error(), "in flight"),
               "a second request refused: %s", snp_error());
    test_check(&tc, layer_prefetch_take(p, 1) == SNP_OK, "take 1: %s", snp_error());
    // A failing stage on the worker: its message, from the worker's thread.
    s.fail_at = 5;
    test_check(&tc, layer_prefetch_request(p, 5) == SNP_OK, "ask 5");
    snp_status st = layer_prefetch_take(p, 5);
    test_check(&tc, st == SNP_ERR_FORMAT && strstr(snp_error(), "layer 5 fails its checksum"),
               "the worker's failure reaches take: %s", snp_error());
    s.fail_at = -1;
    // Taking another layer than the one in flight: that one finishes, is dropped, and
    // the asked-for layer is staged inline.
    test_check(&tc, layer_prefetch_request(p, 7) == SNP_OK, "ask 7");
    st = layer_prefetch_take(p, 9);
    test_check(&tc, st == SNP_OK && s.stage_buf[0] == 9 * WIDTH, "take 9 with 7 in flight: %s",
               st ? snp_error() : "ok");
    test_check(&tc, layer_prefetch_request(p, 3) == SNP_OK, "ask 3 after");
    layer_prefetch_stop(p); // with layer 3 in flight
    layer_prefetch_stop(NULL);
    test_check(&tc, s.stage_buf[0] == 3 * WIDTH, "stop waited for the stage in flight (%d)",
               s.stage_buf[0] / WIDTH);
    return test_finish(&tc, "test_layer_prefetch");
}
