// bench_tokenizer: encode throughput of snaptp's tokenizer on one text, single thread.
// Built and run by bench/bench_tokenizer.sh (not part of the CMake build or the tests).
// usage: bench_tokenizer TOKENIZER_PATH TEXT_FILE [REPEATS]
// prints: tokens bytes best_seconds median_seconds load_seconds
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER_PATH TEXT_FILE [REPEATS]\n", argv[0]);
        return 2;
    }
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    if (repeats < 1 || repeats > 100) repeats = 5;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: cannot open %s\n", argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(n + 1);
    if (!text || fread(text, 1, n, f) != n) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    double t0 = now_s();
    tokenizer *t = NULL;
    if (tokenizer_load(argv[1], &t) != SNP_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", snp_error());
        return 1;
    }
    double load = now_s() - t0;
    double times[100];
    size_t n_ids = 0;
    for (int r = 0; r < repeats; r++) {
        int32_t *ids = NULL;
        t0 = now_s();
        if (tokenizer_encode(t, text, n, 0, &ids, &n_ids) != SNP_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", snp_error());
            return 1;
        }
        times[r] = now_s() - t0;
        free(ids);
    }
    qsort(times, (size_t)repeats, sizeof times[0], cmp_d);
    printf("%zu %zu %.6f %.6f %.6f\n", n_ids, n, times[0], times[repeats / 2], load);
    tokenizer_free(t);
    free(text);
    return 0;
}
