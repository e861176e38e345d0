// gguf_meta: metadata lookups and typed getters over a gguf_file that gguf.c has
// already validated (every value lies inside the mapping); tensor lookup stays in gguf.c.
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_internal.h"

const char *gguf_type_name(gguf_value_type t) {
    static const char *const names[] = {
        [GGUF_TYPE_UINT8] = "UINT8",     [GGUF_TYPE_INT8] = "INT8",
        [GGUF_TYPE_UINT16] = "UINT16",   [GGUF_TYPE_INT16] = "INT16",
        [GGUF_TYPE_UINT32] = "UINT32",   [GGUF_TYPE_INT32] = "INT32",
        [GGUF_TYPE_FLOAT32] = "FLOAT32", [GGUF_TYPE_BOOL] = "BOOL",
        [GGUF_TYPE_STRING] = "STRING",   [GGUF_TYPE_ARRAY] = "ARRAY",
        [GGUF_TYPE_UINT64] = "UINT64",   [GGUF_TYPE_INT64] = "INT64",
        [GGUF_TYPE_FLOAT64] = "FLOAT64",
    };
    _Static_assert(sizeof names / sizeof names[0] == GGUF_TYPE_COUNT, "one name per type");
    return (unsigned)t < GGUF_TYPE_COUNT ? names[t] : "?";
}

static int cmp_key_kv(const void *key, const void *elem) {
    return strcmp(key, (*(const gguf_kv *const *)elem)->key);
}

int64_t gguf_find_key(const gguf_file *f, const char *key) {
    const gguf_kv *const *hit =
        bsearch(key, f->kv_sorted, f->n_kv, sizeof *f->kv_sorted, cmp_key_kv);
    return hit ? (int64_t)(*hit - f->kv) : -1;
}

gguf_value_type gguf_key_type(const gguf_file *f, int64_t key_id) {
    if (key_id < 0 || (uint64_t)key_id >= f->n_kv) return GGUF_TYPE_COUNT;
    return f->kv[key_id].type;
}

uint64_t gguf_n_keys(const gguf_file *f) {
    return f->n_kv;
}

const char *gguf_key_name(const gguf_file *f, int64_t key_id) {
    if (key_id < 0 || (uint64_t)key_id >= f->n_kv) return NULL;
    return f->kv[key_id].key;
}

static snp_status get_kv(const gguf_file *f, const char *key, const gguf_kv **out) {
    int64_t id = gguf_find_key(f, key);
    if (id < 0) return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%s' is missing", f->path, key);
    *out = &f->kv[id];
    return SNP_OK;
}

static snp_status wrong_type(const gguf_file *f, const gguf_kv *kv, const char *expected) {
    if (kv->type == GGUF_TYPE_ARRAY)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%s' is ARRAY of %s, expected %s", f->path,
                        kv->key, gguf_type_name(kv->arr_type), expected);
    return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%s' is %s, expected %s", f->path, kv->key,
                    gguf_type_name(kv->type), expected);
}

// Reads an integer value of any width and signedness: *neg says whether it is
// negative, *mag holds its magnitude. Returns 0 for non-integer types.
static int kv_int(const gguf_kv *kv, int *neg, uint64_t *mag) {
    gguf_value_type t = kv->type;
    int is_signed =
        t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
    int is_unsigned = t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
                      t == GGUF_TYPE_UINT64;
    if (!is_signed && !is_unsigned) return 0;
    size_t n = gguf_value_size(t);
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | kv->data[i];
    *neg = is_signed && (v >> (8 * n - 1)) != 0;
    // Magnitude of a negative n-byte two's complement value, computed without
    // signed overflow: 2^(8n) - v.
    *mag = *neg ? (n == 8 ? 0 - v : ((uint64_t)1 << (8 * n)) - v) : v;
    return 1;
}

snp_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    int neg;
    uint64_t mag;
    if (!kv_int(kv, &neg, &mag)) return wrong_type(f, kv, "an integer");
    if (neg || mag > UINT32_MAX)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%s' is %s%llu, outside 0..%u", f->path, key,
                        neg ? "-" : "", (unsigned long long)mag, UINT32_MAX);
    *out = (uint32_t)mag;
    return SNP_OK;
}

snp_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    int neg;
    uint64_t mag;
    if (!kv_int(kv, &neg, &mag)) return wrong_type(f, kv, "an integer");
    if (!neg && mag > (uint64_t)INT64_MAX)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%s' is %llu, past INT64_MAX", f->path, key,
                        (unsigned long long)mag);
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag; // two's complement: INT64_MIN round-trips
    return SNP_OK;
}

// FLOAT64 is accepted too and rounded: some converters write float keys as f64.
snp_status gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->data, 4);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->data, 8);
        *out = (float)d;
    } else {
        return wrong_type(f, kv, "FLOAT32");
    }
    return SNP_OK;
}

snp_status gguf_get_bool(const gguf_file *f, const char *key, int *out) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(f, kv, "BOOL");
    if (kv->data[0] > 1)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%s': BOOL byte is %u, expected 0 or 1",
                        f->path, key, kv->data[0]);
    *out = kv->data[0];
    return SNP_OK;
}

snp_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(f, kv, "STRING");
    *out = kv->str;
    return SNP_OK;
}

snp_status gguf_get_arr(const gguf_file *f, const char *key, gguf_value_type *out_type,
                        uint64_t *out_n) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    if (kv->type != GGUF_TYPE_ARRAY) return wrong_type(f, kv, "ARRAY");
    *out_type = kv->arr_type;
    *out_n = kv->n;
    return SNP_OK;
}

snp_status gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return wrong_type(f, kv, "ARRAY of STRING");
    if (i >= kv->n)
        return snp_fail(SNP_ERR_ARGUMENT, "gguf: %s: key '%s': element %llu of an array of %llu",
                        f->path, key, (unsigned long long)i, (unsigned long long)kv->n);
    *out = kv->strs[i];
    return SNP_OK;
}

snp_status gguf_get_arr_data(const gguf_file *f, const char *key, const void **out_data) {
    const gguf_kv *kv;
    TRY(get_kv(f, key, &kv));
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type == GGUF_TYPE_STRING)
        return wrong_type(f, kv, "a numeric ARRAY");
    *out_data = kv->data;
    return SNP_OK;
}
