// test_support: counting, data paths, JSON goldens and comparisons for the tests.
#include "test_support.h"

#include <dirent.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int test_check(test_counts *c, int ok, const char *fmt, ...) {
    if (ok) {
        c->passed++;
        return 1;
    }
    c->failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 0;
}

int test_finish(const test_counts *c, const char *name) {
    if (c->skipped)
        printf("%s: %d passed, %d failed, %d skipped\n", name, c->passed, c->failed, c->skipped);
    else
        printf("%s: %d passed, %d failed\n", name, c->passed, c->failed);
    return c->failed ? 1 : 0;
}

const char *test_source_path(char *buf, size_t n, const char *rel) {
    const char *root = getenv("SNAPTP_SOURCE_DIR");
    snprintf(buf, n, "%s/%s", root ? root : ".", rel);
    return buf;
}

const char *test_env_path(const char *var, int *must_fail) {
    const char *v = getenv(var);
    *must_fail = 0;
    if (v && *v) return v;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) *must_fail = 1;
    return NULL;
}

static char *read_all(const char *path, size_t *out_n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    rewind(fp);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)size, fp) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) buf[size] = '\0';
    if (buf && out_n) *out_n = (size_t)size;
    return buf;
}

cJSON *test_read_json(const char *path) {
    char *text = read_all(path, NULL);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    cJSON *root = cJSON_Parse(text);
    if (!root) fprintf(stderr, "malformed JSON in %s\n", path);
    free(text);
    return root;
}

float *test_json_floats(const cJSON *item, const char *dir, size_t *out_n) {
    if (cJSON_IsArray(item)) {
        // Flatten nested arrays (rows of logits) in order.
        size_t n = 0, cap = 1024;
        float *out = malloc(cap * sizeof *out);
        const cJSON *cur[8];
        int depth = 0;
        cur[0] = item->child;
        while (depth >= 0 && out) {
            const cJSON *e = cur[depth];
            if (!e) {
                depth--;
                continue;
            }
            cur[depth] = e->next;
            if (cJSON_IsArray(e) && depth + 1 < 8) {
                depth++;
                cur[depth] = e->child;
            } else if (cJSON_IsNumber(e)) {
                if (n == cap) {
                    cap *= 2;
                    float *o = realloc(out, cap * sizeof *out);
                    if (!o) {
                        free(out);
                        return NULL;
                    }
                    out = o;
                }
                out[n++] = (float)e->valuedouble;
            }
        }
        *out_n = n;
        return out;
    }
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(item, "file");
    if (!cJSON_IsString(file)) {
        fprintf(stderr, "golden: expected an array or {\"file\": ...}\n");
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file->valuestring);
    size_t n_bytes;
    char *data = read_all(path, &n_bytes);
    if (!data) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    *out_n = n_bytes / sizeof(float);
    return (float *)data;
}

int32_t *test_json_ints(const cJSON *item, size_t *out_n) {
    if (!cJSON_IsArray(item)) return NULL;
    size_t n = (size_t)cJSON_GetArraySize(item);
    int32_t *out = malloc((n ? n : 1) * sizeof *out);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, item) out[i++] = (int32_t)e->valuedouble;
    *out_n = n;
    return out;
}

double test_max_rel_error(const float *a, const float *b, size_t n) {
    double lo = INFINITY, hi = -INFINITY, err = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] < lo) lo = b[i];
        if (b[i] > hi) hi = b[i];
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= err)) err = d; // NaN propagates as a failure
    }
    double range = hi - lo > 0 ? hi - lo : 1.0;
    return err / range;
}

int test_argmax_clear(const float *ref, size_t n, double tol) {
    float a = -INFINITY, b = -INFINITY, lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (ref[i] > a) {
            b = a;
            a = ref[i];
        } else if (ref[i] > b) {
            b = ref[i];
        }
        lo = ref[i] < lo ? ref[i] : lo;
        hi = ref[i] > hi ? ref[i] : hi;
    }
    return (double)a - b > 2.0 * tol * ((double)hi - lo);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int test_golden_models(char **names, char **paths, int cap) {
    char dir[4000];
    test_source_path(dir, sizeof dir, "tests/golden");
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n < cap) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "smollm2") == 0) continue;
        char probe[4400];
        snprintf(probe, sizeof probe, "%s/%s/golden.json", dir, e->d_name);
        FILE *fp = fopen(probe, "r");
        if (!fp) continue;
        fclose(fp);
        names[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof names[0], by_name);
    for (int i = 0; i < n; i++) {
        char probe[4400], path[9000];
        snprintf(probe, sizeof probe, "%s/%s/golden.json", dir, names[i]);
        cJSON *root = test_read_json(probe);
        const cJSON *rel = root ? cJSON_GetObjectItemCaseSensitive(root, "path") : NULL;
        snprintf(path, sizeof path, "%s/%s/%s", dir, names[i],
                 cJSON_IsString(rel) ? rel->valuestring : ".");
        paths[i] = strdup(path);
        cJSON_Delete(root);
    }
    return n;
}

void test_free_strings(char **s, int n) {
    for (int i = 0; i < n; i++)
        free(s[i]);
}
