// test_safetensors: writes small safetensors files (a single file and a two-shard
// directory with model.safetensors.index.json), reads them back through
// runtime/safetensors, then feeds malformed headers, ranges and indexes and checks
// each is refused with a message naming the file and the tensor or field.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/dtype.h"
#include "runtime/safetensors.h"

static int n_pass, n_fail;
static char tmp_dir[] = "/tmp/snaptp_st_XXXXXX";

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            n_pass++;                                                                              \
        } else {                                                                                   \
            n_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

static char *tmp_path(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4; // a few live at once
    snprintf(p[k], sizeof p[k], "%s/%s", tmp_dir, name);
    return p[k];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    unlink(path); // truncating a file in place is ~100x slower on some filesystems
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(p, 1, n, fp) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(fp);
}

// Writes a safetensors file: the header length `n_header` (or the JSON's length padded
// with spaces to a multiple of 8 when 0), the JSON, then the data.
static void write_st(const char *path, const char *json, uint64_t n_header, const void *data,
                     size_t n_data) {
    size_t n_json = strlen(json), padded = (n_json + 7) / 8 * 8;
    size_t n = 8 + padded + n_data;
    uint8_t *b = malloc(n);
    uint64_t len = n_header ? n_header : padded;
    memcpy(b, &len, 8); // the host is little-endian
    memcpy(b + 8, json, n_json);
    memset(b + 8 + n_json, ' ', padded - n_json);
    if (n_data) memcpy(b + 8 + padded, data, n_data);
    write_bytes(path, b, n);
    free(b);
}

// --- the valid model ---

static float a_want[6] = {1.0f, -2.5f, 3.0f, 0.125f, -0.0f, 1e-20f};
static float b_want[4] = {0.5f, -1.0f, 2048.0f, -65504.0f};
static float c_want[4] = {1.0f, -3.0f, 0.5f, 256.0f};
static float s_want[1] = {42.0f};
static uint8_t data[44];

static void make_data(void) {
    memcpy(data, a_want, 24);
    for (int i = 0; i < 4; i++) {
        uint16_t h = dtype_f32_to_f16(b_want[i]), g = dtype_f32_to_bf16(c_want[i]);
        memcpy(data + 24 + 2 * i, &h, 2);
        memcpy(data + 32 + 2 * i, &g, 2);
    }
    memcpy(data + 40, s_want, 4);
}

static const char *valid_json =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b.f16\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"c.bf16\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
    "\"s.scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]}}";

static void check_tensor(const st_model *m, const char *name, dtype type, int n_dims,
                         const float *want, size_t n, const char *file_suffix) {
    const st_tensor *t = st_find_tensor(m, name);
    CHECK(t != NULL, "tensor %s not found", name);
    if (!t) return;
    uint64_t n_el = t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
    CHECK(t->type == type && t->n_dims == n_dims && n_el == n, "%s: %s, %d dims, %llu elements",
          name, dtype_name(t->type), t->n_dims, (unsigned long long)n_el);
    size_t fl = strlen(t->file), sl = strlen(file_suffix);
    CHECK(fl >= sl && strcmp(t->file + fl - sl, file_suffix) == 0, "%s: file %s", name, t->file);
    float got[8];
    dtype_to_f32(t->type, t->data, got, n);
    int same = memcmp(got, want, n * sizeof *got) == 0;
    printf("  %-22s %-4s dims %d, %zu elements, %llu bytes, in %s: %s\n", name, dtype_name(t->type),
           t->n_dims, n, (unsigned long long)t->n_bytes, strrchr(t->file, '/') + 1,
           same ? "values match" : "VALUES DIFFER");
    CHECK(same, "%s: values differ", name);
}

static void test_single(void) {
    mkdir(tmp_path("single"), 0700);
    write_st(tmp_path("single/model.safetensors"), valid_json, 0, data, sizeof data);
    const char *paths[] = {tmp_path("single"), tmp_path("single/model.safetensors")};
    for (int k = 0; k < 2; k++) {
        st_model *m = NULL;
        snp_status st = st_open(paths[k], &m);
        CHECK(st == SNP_OK, "open %s: %s", paths[k], snp_error());
        if (st != SNP_OK) continue;
        printf("%s: %llu tensors\n", paths[k], (unsigned long long)st_n_tensors(m));
        CHECK(st_n_tensors(m) == 4 && st_tensor_at(m, 4) == NULL, "tensor count");
        CHECK(strcmp(st_tensor_at(m, 0)->name, "a.f32") == 0, "header order");
        CHECK(st_find_tensor(m, "__metadata__") == NULL && st_find_tensor(m, "a") == NULL,
              "absent names");
        check_tensor(m, "a.f32", DTYPE_F32, 2, a_want, 6, "single/model.safetensors");
        check_tensor(m, "b.f16", DTYPE_F16, 1, b_want, 4, "single/model.safetensors");
        check_tensor(m, "c.bf16", DTYPE_BF16, 2, c_want, 4, "single/model.safetensors");
        check_tensor(m, "s.scalar", DTYPE_F32, 0, s_want, 1, "single/model.safetensors");
        st_close(m);
    }
}

static const char *shard1_json =
    "{\"model.embed.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"model.layers.0.w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[24,32]}}";
static const char *shard2_json =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"lm_head.weight\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}";
static const char *index_json = "{\"metadata\":{\"total_size\":40},\"weight_map\":{"
                                "\"lm_head.weight\":\"model-00002-of-00002.safetensors\","
                                "\"model.embed.weight\":\"model-00001-of-00002.safetensors\","
                                "\"model.layers.0.w\":\"model-00001-of-00002.safetensors\"}}";

static void write_sharded(const char *dir, const char *index) {
    char p[600];
    uint8_t d1[32], d2[8];
    memcpy(d1, data, 24);
    memcpy(d1 + 24, data + 32, 8);
    memcpy(d2, data + 24, 8);
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p, shard1_json, 0, d1, sizeof d1);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(p, shard2_json, 0, d2, sizeof d2);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));
}

static void test_sharded(void) {
    write_sharded(tmp_path("sharded"), index_json);
    const char *paths[] = {tmp_path("sharded"), tmp_path("sharded/model.safetensors.index.json")};
    for (int k = 0; k < 2; k++) {
        st_model *m = NULL;
        snp_status st = st_open(paths[k], &m);
        CHECK(st == SNP_OK, "open %s: %s", paths[k], snp_error());
        if (st != SNP_OK) continue;
        printf("%s: %llu tensors in 2 shards\n", paths[k], (unsigned long long)st_n_tensors(m));
        CHECK(st_n_tensors(m) == 3, "tensor count %llu", (unsigned long long)st_n_tensors(m));
        check_tensor(m, "model.embed.weight", DTYPE_F32, 2, a_want, 6,
                     "/model-00001-of-00002.safetensors");
        check_tensor(m, "model.layers.0.w", DTYPE_BF16, 2, c_want, 4,
                     "/model-00001-of-00002.safetensors");
        check_tensor(m, "lm_head.weight", DTYPE_F16, 1, b_want, 4,
                     "/model-00002-of-00002.safetensors");
        st_close(m);
    }
}

// --- malformed inputs ---

// Expects st_open(path) to fail with `want` (0: any) and a message holding `file`
// and each non-NULL substring.
static void expect_fail(const char *path, const char *file, snp_status want, const char *s1,
                        const char *s2) {
    st_model *m = (st_model *)&n_pass; // must come back NULL
    snp_error_clear();
    snp_status st = st_open(path, &m);
    const char *msg = snp_error();
    CHECK(st != SNP_OK && m == NULL, "%s: accepted", path);
    if (st == SNP_OK) {
        st_close(m);
        return;
    }
    CHECK(!want || st == want, "%s: status %s, want %s", file, snp_status_name(st),
          snp_status_name(want));
    CHECK(strstr(msg, file) != NULL, "%s: message lacks the file name: %s", file, msg);
    CHECK(!s1 || strstr(msg, s1), "%s: message lacks '%s': %s", file, s1, msg);
    CHECK(!s2 || strstr(msg, s2), "%s: message lacks '%s': %s", file, s2, msg);
    const char *at = strchr(msg, '\n');
    printf("  %-24s -> %.*s\n", file, at ? (int)(at - msg) : (int)strlen(msg), msg);
}

// One bad single-file case: the header JSON (or an explicit header length) and data.
static void bad_file(const char *file, const char *json, uint64_t n_header, size_t n_data,
                     snp_status want, const char *s1, const char *s2) {
    write_st(tmp_path(file), json, n_header, data, n_data);
    expect_fail(tmp_path(file), file, want, s1, s2);
}

#define ENTRY(name, dt, shape, offs)                                                               \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static void test_bad_files(void) {
    printf("malformed safetensors files:\n");
    bad_file("header_too_large.safetensors", "{}", 100000001, 0, SNP_ERR_FORMAT,
             "header length 100000001 is over the limit", NULL);
    bad_file("header_past_end.safetensors", "{}", 1000, 0, SNP_ERR_FORMAT,
             "header length 1000 runs past the end", NULL);
    write_bytes(tmp_path("tiny.safetensors"), "\1\0\0", 3);
    expect_fail(tmp_path("tiny.safetensors"), "tiny.safetensors", SNP_ERR_FORMAT, "too small",
                NULL);
    bad_file("malformed_json.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0, 0, SNP_ERR_FORMAT,
             "malformed JSON", NULL);
    bad_file("not_object.safetensors", "[1,2]", 0, 0, SNP_ERR_FORMAT, "not a JSON object", NULL);
    bad_file("trailing.safetensors", "{} x", 0, 0, SNP_ERR_FORMAT, "stray bytes", NULL);
    bad_file("unknown_dtype.safetensors", "{" ENTRY("w.q", "F33", "[2]", "[0,8]") "}", 0, 8,
             SNP_ERR_FORMAT, "'w.q'", "unknown dtype 'F33'");
    bad_file("int_dtype.safetensors", "{" ENTRY("w.i", "I64", "[2]", "[0,16]") "}", 0, 16,
             SNP_ERR_UNSUPPORTED, "'w.i'", "dtype I64 is not supported");
    bad_file("offsets_oob.safetensors", "{" ENTRY("w.big", "F32", "[250]", "[0,1000]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.big'", "data_offsets [0, 1000]");
    bad_file("offsets_shape.safetensors", "{" ENTRY("w.s", "F32", "[2,3]", "[0,20]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.s'", "hold 20 bytes, but the shape and dtype F32 need 24");
    bad_file("offsets_reversed.safetensors", "{" ENTRY("w.r", "F32", "[0]", "[8,0]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.r'", "[8, 0]");
    bad_file("offsets_negative.safetensors", "{" ENTRY("w.n", "F32", "[2]", "[-8,0]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.n'", "data_offsets[0]");
    bad_file("offsets_fraction.safetensors", "{" ENTRY("w.h", "F32", "[2]", "[0.5,8.5]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.h'", "data_offsets[0]");
    bad_file("offsets_huge.safetensors", "{" ENTRY("w.x", "F32", "[2]", "[1e300,1e300]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.x'", "not a non-negative integer");
    bad_file("overlap.safetensors",
             "{" ENTRY("w.a", "F32", "[6]", "[0,24]") "," ENTRY("w.b", "F32", "[2]", "[16,24]") "}",
             0, 24, SNP_ERR_FORMAT, "'w.a' and 'w.b'", "overlapping");
    bad_file("misaligned.safetensors", "{" ENTRY("w.m", "F32", "[2]", "[2,10]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.m'", "not aligned");
    bad_file("dims5.safetensors", "{" ENTRY("w.5", "F32", "[1,1,1,1,2]", "[0,8]") "}", 0, 24,
             SNP_ERR_UNSUPPORTED, "'w.5'", "5 dimensions");
    bad_file("shape_overflow.safetensors",
             "{" ENTRY("w.o", "F32", "[4294967296,4294967296]", "[0,8]") "}", 0, 24, SNP_ERR_FORMAT,
             "'w.o'", "overflows");
    bad_file("dup_name.safetensors",
             "{" ENTRY("w.d", "F32", "[2]", "[0,8]") "," ENTRY("w.d", "F32", "[2]", "[8,16]") "}",
             0, 24, SNP_ERR_FORMAT, "'w.d'", "appears twice");
    bad_file("no_dtype.safetensors", "{\"w.t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 24,
             SNP_ERR_FORMAT, "'w.t'", "\"dtype\"");
    bad_file("shape_not_array.safetensors",
             "{\"w.t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 0, 24,
             SNP_ERR_FORMAT, "'w.t'", "\"shape\"");
    bad_file("offsets_three.safetensors", "{" ENTRY("w.t", "F32", "[2]", "[0,8,8]") "}", 0, 24,
             SNP_ERR_FORMAT, "'w.t'", "\"data_offsets\"");
    bad_file("entry_not_object.safetensors", "{\"w.t\":5}", 0, 24, SNP_ERR_FORMAT, "'w.t'",
             "not an object");
    bad_file("metadata_not_object.safetensors", "{\"__metadata__\":[1]}", 0, 0, SNP_ERR_FORMAT,
             "__metadata__", NULL);
    expect_fail(tmp_path("missing.safetensors"), "missing.safetensors", SNP_ERR_IO, "cannot open",
                NULL);
    mkdir(tmp_path("empty_dir"), 0700);
    expect_fail(tmp_path("empty_dir"), "empty_dir", SNP_ERR_IO, "neither", NULL);
}

static void test_bad_index(void) {
    printf("malformed sharded models:\n");
    const char *missing =
        "{\"weight_map\":{\"model.embed.weight\":\"model-00001-of-00002.safetensors\","
        "\"lm_head.weight\":\"model-00003-of-00002.safetensors\"}}";
    write_sharded(tmp_path("missing_shard"), missing);
    expect_fail(tmp_path("missing_shard"), "model.safetensors.index.json", SNP_ERR_IO,
                "model-00003-of-00002.safetensors", "'lm_head.weight'");
    const char *wrong =
        "{\"weight_map\":{\"model.embed.weight\":\"model-00002-of-00002.safetensors\","
        "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}";
    write_sharded(tmp_path("wrong_shard"), wrong);
    expect_fail(tmp_path("wrong_shard"), "model.safetensors.index.json", SNP_ERR_FORMAT,
                "'model.embed.weight'", "model-00002-of-00002.safetensors");
    const char *absent = "{\"weight_map\":{\"ghost\":\"model-00002-of-00002.safetensors\"}}";
    write_sharded(tmp_path("absent_tensor"), absent);
    expect_fail(tmp_path("absent_tensor"), "model.safetensors.index.json", SNP_ERR_FORMAT,
                "'ghost'", "in no shard");
    const char *escape = "{\"weight_map\":{\"lm_head.weight\":\"../single/model.safetensors\"}}";
    write_sharded(tmp_path("escape"), escape);
    expect_fail(tmp_path("escape"), "model.safetensors.index.json", SNP_ERR_FORMAT,
                "'lm_head.weight'", "not a file name");
    write_sharded(tmp_path("bad_index_json"), "{\"weight_map\":{");
    expect_fail(tmp_path("bad_index_json"), "model.safetensors.index.json", SNP_ERR_FORMAT,
                "malformed JSON", NULL);
    write_sharded(tmp_path("no_weight_map"), "{\"metadata\":{}}");
    expect_fail(tmp_path("no_weight_map"), "model.safetensors.index.json", SNP_ERR_FORMAT,
                "weight_map", NULL);
    // The same tensor in both shards: the index lists it once, the shards disagree.
    write_sharded(tmp_path("dup_across"), index_json);
    write_st(tmp_path("dup_across/model-00002-of-00002.safetensors"),
             "{" ENTRY("model.embed.weight", "F16", "[4]",
                       "[0,8]") "," ENTRY("lm_head.weight", "F16", "[4]", "[8,16]") "}",
             0, data, 16);
    expect_fail(tmp_path("dup_across"), "model-00002-of-00002.safetensors", SNP_ERR_FORMAT,
                "'model.embed.weight' appears twice", NULL);
    // A bad shard is reported through the index, naming both.
    write_sharded(tmp_path("bad_shard"), index_json);
    write_st(tmp_path("bad_shard/model-00002-of-00002.safetensors"),
             "{" ENTRY("lm_head.weight", "F16", "[4]", "[0,9]") "}", 0, data, 16);
    expect_fail(tmp_path("bad_shard"), "model-00002-of-00002.safetensors", SNP_ERR_FORMAT,
                "model.safetensors.index.json", "'lm_head.weight'");
}

// Every prefix of the valid file is refused; random byte changes never crash and
// anything that loads has every tensor byte readable.
static void test_prefixes_and_flips(void) {
    size_t n_json = strlen(valid_json), padded = (n_json + 7) / 8 * 8, n = 8 + padded + 44;
    write_st(tmp_path("full.safetensors"), valid_json, 0, data, sizeof data);
    uint8_t *full = malloc(n);
    FILE *fp = fopen(tmp_path("full.safetensors"), "rb");
    CHECK(fp && fread(full, 1, n, fp) == n, "read back");
    if (fp) fclose(fp);
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        write_bytes(tmp_path("prefix.safetensors"), full, k);
        st_model *m = NULL;
        if (st_open(tmp_path("prefix.safetensors"), &m) == SNP_OK || m ||
            !strstr(snp_error(), "prefix.safetensors")) {
            if (bad++ < 5) fprintf(stderr, "prefix of %zu bytes: %s\n", k, snp_error());
        }
        st_close(m);
    }
    printf("every prefix (0..%zu bytes) of a valid %zu-byte file: %d accepted or unnamed\n", n - 1,
           n, bad);
    CHECK(bad == 0, "%d prefixes not refused", bad);

    uint64_t rng = 0x2545f4914f6cdd1dull;
    int n_ok = 0, n_refused = 0, unnamed = 0;
    uint8_t *p = malloc(n);
    for (int k = 0; k < 3000; k++) {
        memcpy(p, full, n);
        for (int j = 0; j < 1 + k % 3; j++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            // Mostly the header: that is where the parser's decisions are.
            size_t at = (size_t)(rng >> 33) % (k % 4 ? 8 + padded : n);
            p[at] =
                k % 2 ? (uint8_t)(rng >> 20) : (uint8_t) "{}[],:\"0123456789-.e "[(rng >> 20) % 21];
        }
        write_bytes(tmp_path("mutated.safetensors"), p, n);
        st_model *m = NULL;
        if (st_open(tmp_path("mutated.safetensors"), &m) == SNP_OK) {
            n_ok++;
            volatile uint8_t sum = 0;
            for (uint64_t i = 0; i < st_n_tensors(m); i++) {
                const st_tensor *t = st_tensor_at(m, i);
                for (uint64_t b = 0; b < t->n_bytes; b++)
                    sum += ((const uint8_t *)t->data)[b];
            }
            st_close(m);
        } else {
            n_refused++;
            unnamed += strstr(snp_error(), "mutated.safetensors") == NULL;
        }
    }
    free(p);
    free(full);
    printf("3000 randomly mutated files: %d loaded, %d refused, %d messages without the file\n",
           n_ok, n_refused, unnamed);
    CHECK(unnamed == 0, "%d refusals without the file name", unnamed);
}

int main(void) {
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    st_close(NULL);
    make_data();
    test_single();
    test_sharded();
    test_bad_files();
    test_bad_index();
    test_prefixes_and_flips();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    printf("test_safetensors: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
