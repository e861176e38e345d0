// test_support: what the test binaries share: counting checks, locating the
// repository's data, reading JSON goldens and float arrays, and comparing logits.
#ifndef SNAPTP_TEST_SUPPORT_H
#define SNAPTP_TEST_SUPPORT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct test_counts {
    int passed, failed, skipped;
} test_counts;

// test_check: records one check; prints "FAIL: <msg>" when !ok. Returns ok.
int test_check(test_counts *c, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// test_finish: prints "<name>: N passed, N failed[, N skipped]"; returns the exit code.
int test_finish(const test_counts *c, const char *name);

// test_source_path: SNAPTP_SOURCE_DIR/rel into buf (the repo root when unset: ".").
const char *test_source_path(char *buf, size_t n, const char *rel);

// test_env_path: the path in environment variable `var`, or NULL. When it is unset
// and CI=true, the test must fail rather than skip: *must_fail is set to 1.
const char *test_env_path(const char *var, int *must_fail);

// test_golden_models: the tiny models of tests/golden (each folder with a
// golden.json, but smollm2, which holds only the real model's expected outputs),
// sorted by name. Fills up to cap names (malloc'd) and checkpoint paths (malloc'd:
// the folder joined with golden.json's "path", or the folder itself); returns the
// count. Free both with test_free_strings.
int test_golden_models(char **names, char **paths, int cap);
void test_free_strings(char **s, int n);

// test_read_json: parses a JSON file; NULL (message printed) on failure.
cJSON *test_read_json(const char *path);

// test_json_floats: a float array from a JSON array of numbers, or from a
// {"file": "x.bin", "shape": [...]} reference to little-endian float32 data in
// `dir`. *out_n elements, malloc'd. NULL on failure (message printed).
float *test_json_floats(const cJSON *item, const char *dir, size_t *out_n);

// test_json_ints: an int32 array from a JSON array of numbers; malloc'd.
int32_t *test_json_ints(const cJSON *item, size_t *out_n);

// test_max_rel_error: max |a - b| over n, divided by the range (max - min) of the
// reference b, the "relative to the logit range" measure of the parity tests.
double test_max_rel_error(const float *a, const float *b, size_t n);

// test_argmax_clear: 1 when the reference row's top-2 margin exceeds `tol` times
// its logit range twice over, so that an error within tol cannot flip its argmax
// (lower-precision backends are held to the same argmax only on such rows).
int test_argmax_clear(const float *ref, size_t n, double tol);

#endif
