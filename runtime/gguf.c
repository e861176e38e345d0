// gguf: maps a GGUF v2/v3 file and validates all of it (header, metadata, tensor infos,
// data ranges) before handing anything out; lookups by key and tensor name. What the
// metadata means is left to model_config and the tokenizer.
#include "gguf.h"
#include "gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { GGUF_DEFAULT_ALIGNMENT = 32 };

// A bounds-checked cursor over the mapping. `ctx` names what is being read
// ("header", "key 'general.name'", "tensor 'output.weight'") for messages.
typedef struct reader {
    const uint8_t *p;
    uint64_t size;
    uint64_t pos;
    const char *path;
    char ctx[192];
} reader;

static const size_t scalar_size[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,  [GGUF_TYPE_UINT16] = 2,  [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4, [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_STRING] = 0,  [GGUF_TYPE_ARRAY] = 0, [GGUF_TYPE_UINT64] = 8,  [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

size_t gguf_value_size(gguf_value_type t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? scalar_size[t] : 0;
}

// GGML tensor type ids (ggml.h enum ggml_type). Only six map to a dtype; the names
// of the others are kept for the refusal message, removed ids included.
// clang-format off
static const char *const ggml_type_names[] = {
    "F32", "F16", "Q4_0", "Q4_1", "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0", "Q5_1", "Q8_0",
    "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
    "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
    "BF16", "Q4_0_4_4 (removed)", "Q4_0_4_8 (removed)", "Q4_0_8_8 (removed)", "TQ1_0", "TQ2_0",
    "IQ4_NL_4_4 (removed)", "IQ4_NL_4_8 (removed)", "IQ4_NL_8_8 (removed)", "MXFP4",
};
static const struct { uint32_t id; dtype type; } ggml_supported[] = {
    {0, DTYPE_F32}, {1, DTYPE_F16}, {2, DTYPE_Q4_0}, {3, DTYPE_Q4_1}, {8, DTYPE_Q8_0},
    {30, DTYPE_BF16},
};
// clang-format on

static const char *ggml_type_name(uint32_t id) {
    return id < sizeof ggml_type_names / sizeof *ggml_type_names ? ggml_type_names[id] : "unknown";
}

static int ggml_type_to_dtype(uint32_t id, dtype *out) {
    for (size_t i = 0; i < sizeof ggml_supported / sizeof *ggml_supported; i++)
        if (ggml_supported[i].id == id) {
            *out = ggml_supported[i].type;
            return 1;
        }
    return 0;
}

static snp_status past_end(const reader *r, const char *what, uint64_t n_bytes) {
    return snp_fail(SNP_ERR_FORMAT,
                    "gguf: %s: %s: %s of %llu bytes at offset %llu runs past the end of the "
                    "file (%llu bytes)",
                    r->path, r->ctx, what, (unsigned long long)n_bytes, (unsigned long long)r->pos,
                    (unsigned long long)r->size);
}

static snp_status rd_bytes(reader *r, uint64_t n, const char *what, const uint8_t **out) {
    // pos <= size always holds, so size - pos cannot wrap.
    if (n > r->size - r->pos) return past_end(r, what, n);
    *out = r->p + r->pos;
    r->pos += n;
    return SNP_OK;
}

static snp_status rd_u32(reader *r, const char *what, uint32_t *out) {
    const uint8_t *b = NULL;
    TRY(rd_bytes(r, 4, what, &b));
    *out = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return SNP_OK;
}

static snp_status rd_u64(reader *r, const char *what, uint64_t *out) {
    const uint8_t *b = NULL;
    TRY(rd_bytes(r, 8, what, &b));
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    *out = v;
    return SNP_OK;
}

static snp_status rd_str(reader *r, const char *what, gguf_str *out) {
    uint64_t len;
    TRY(rd_u64(r, what, &len));
    if (len > r->size - r->pos)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %s: %s length %llu at offset %llu runs past the end of the "
                        "file (%llu bytes)",
                        r->path, r->ctx, what, (unsigned long long)len,
                        (unsigned long long)(r->pos - 8), (unsigned long long)r->size);
    out->ptr = (const char *)r->p + r->pos;
    out->len = len;
    r->pos += len;
    return SNP_OK;
}

// A key or tensor name becomes a C string; an embedded NUL would make two names
// compare equal that the file says are different, so it is refused.
static snp_status name_dup(const reader *r, gguf_str s, const char *what, char **out) {
    if (s.len == 0)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: %s: empty %s", r->path, r->ctx, what);
    if (memchr(s.ptr, '\0', s.len))
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: %s: %s '%.*s' contains a NUL byte", r->path,
                        r->ctx, what, (int)(s.len > 100 ? 100 : s.len), s.ptr);
    char *c = malloc(s.len + 1);
    if (!c)
        return snp_fail(SNP_ERR_MEMORY, "gguf: %s: %s: out of memory for a %llu-byte %s", r->path,
                        r->ctx, (unsigned long long)s.len, what);
    memcpy(c, s.ptr, s.len);
    c[s.len] = '\0';
    *out = c;
    return SNP_OK;
}

static snp_status read_array(reader *r, gguf_kv *kv) {
    uint32_t t;
    TRY(rd_u32(r, "array element type", &t));
    if (t >= GGUF_TYPE_COUNT)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: %s: array element type %u is not a GGUF type",
                        r->path, r->ctx, t);
    if (t == GGUF_TYPE_ARRAY)
        return snp_fail(SNP_ERR_UNSUPPORTED, "gguf: %s: %s: arrays of arrays are not supported",
                        r->path, r->ctx);
    kv->arr_type = (gguf_value_type)t;
    TRY(rd_u64(r, "array count", &kv->n));
    uint64_t left = r->size - r->pos;
    // Every element takes at least its minimum size, so the count is bounded by the
    // bytes left before anything is allocated for it.
    uint64_t min_elem = t == GGUF_TYPE_STRING ? 8 : scalar_size[t];
    if (kv->n > left / min_elem)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %s: array of %llu %s elements (at least %llu bytes each) "
                        "does not fit in the %llu bytes left after offset %llu",
                        r->path, r->ctx, (unsigned long long)kv->n, gguf_type_name(kv->arr_type),
                        (unsigned long long)min_elem, (unsigned long long)left,
                        (unsigned long long)r->pos);
    kv->data = r->p + r->pos;
    if (t != GGUF_TYPE_STRING) {
        uint64_t n_bytes = kv->n * min_elem; // cannot overflow or pass the end: checked above
        r->pos += n_bytes;
        // Strings before an array leave it at any byte offset; callers index numeric
        // arrays as C arrays, so a misaligned one gets an aligned copy.
        if ((uintptr_t)kv->data % min_elem != 0) {
            if (!(kv->copy = malloc(n_bytes)))
                return snp_fail(SNP_ERR_MEMORY, "gguf: %s: %s: out of memory for %llu bytes",
                                r->path, r->ctx, (unsigned long long)n_bytes);
            memcpy(kv->copy, kv->data, n_bytes);
            kv->data = kv->copy;
        }
        return SNP_OK;
    }
    kv->strs = malloc((kv->n ? kv->n : 1) * sizeof *kv->strs);
    if (!kv->strs)
        return snp_fail(SNP_ERR_MEMORY, "gguf: %s: %s: out of memory for %llu strings", r->path,
                        r->ctx, (unsigned long long)kv->n);
    for (uint64_t i = 0; i < kv->n; i++) {
        if (rd_str(r, "string element", &kv->strs[i]) != SNP_OK) {
            char msg[1024]; // a copy: snp_fail overwrites the message it would read from
            snprintf(msg, sizeof msg, "%s", snp_error());
            return snp_fail(SNP_ERR_FORMAT, "%s (element %llu of %llu)", msg, (unsigned long long)i,
                            (unsigned long long)kv->n);
        }
    }
    return SNP_OK;
}

static snp_status read_kv(reader *r, uint64_t i, gguf_kv *kv) {
    snprintf(r->ctx, sizeof r->ctx, "key #%llu", (unsigned long long)i);
    gguf_str k;
    TRY(rd_str(r, "key name", &k));
    TRY(name_dup(r, k, "key name", &kv->key));
    snprintf(r->ctx, sizeof r->ctx, "key '%.100s'", kv->key);
    uint32_t t;
    TRY(rd_u32(r, "value type", &t));
    if (t >= GGUF_TYPE_COUNT)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: %s: value type %u is not a GGUF type", r->path,
                        r->ctx, t);
    kv->type = (gguf_value_type)t;
    if (t == GGUF_TYPE_STRING) return rd_str(r, "string", &kv->str);
    if (t == GGUF_TYPE_ARRAY) return read_array(r, kv);
    return rd_bytes(r, scalar_size[t], "value", &kv->data);
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    uint64_t x = (*(const gguf_tensor *const *)a)->offset;
    uint64_t y = (*(const gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

static snp_status read_kvs(gguf_file *f, reader *r) {
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->kv_sorted = malloc((f->n_kv ? f->n_kv : 1) * sizeof *f->kv_sorted);
    if (!f->kv || !f->kv_sorted)
        return snp_fail(SNP_ERR_MEMORY, "gguf: %s: out of memory for %llu keys", f->path,
                        (unsigned long long)f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        TRY(read_kv(r, i, &f->kv[i]));
        f->kv_sorted[i] = &f->kv[i];
    }
    qsort(f->kv_sorted, f->n_kv, sizeof *f->kv_sorted, cmp_kv);
    for (uint64_t i = 1; i < f->n_kv; i++)
        if (strcmp(f->kv_sorted[i - 1]->key, f->kv_sorted[i]->key) == 0)
            return snp_fail(SNP_ERR_FORMAT, "gguf: %s: key '%.100s' appears more than once",
                            f->path, f->kv_sorted[i]->key);

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t id = gguf_find_key(f, "general.alignment");
    if (id >= 0) {
        const gguf_kv *kv = &f->kv[id];
        if (kv->type != GGUF_TYPE_UINT32)
            return snp_fail(SNP_ERR_FORMAT,
                            "gguf: %s: key 'general.alignment' is %s, expected UINT32", f->path,
                            gguf_type_name(kv->type));
        uint32_t a;
        memcpy(&a, kv->data, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return snp_fail(SNP_ERR_FORMAT,
                            "gguf: %s: key 'general.alignment' is %u, not a power of two", f->path,
                            a);
        f->alignment = a;
    }
    return SNP_OK;
}

static snp_status read_tensor_info(gguf_file *f, reader *r, uint64_t i, gguf_tensor *t) {
    snprintf(r->ctx, sizeof r->ctx, "tensor #%llu", (unsigned long long)i);
    gguf_str s;
    TRY(rd_str(r, "tensor name", &s));
    char *name;
    TRY(name_dup(r, s, "tensor name", &name));
    t->name = name;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%.100s'", name);

    uint32_t n_dims;
    TRY(rd_u32(r, "n_dims", &n_dims));
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return snp_fail(SNP_ERR_FORMAT, "gguf: %s: %s: n_dims is %u, expected 1..%d", f->path,
                        r->ctx, n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        TRY(rd_u64(r, "dimension", &t->ne[d]));
        // GGML keeps ne as int64_t; a value past INT64_MAX is negative there.
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
            return snp_fail(SNP_ERR_FORMAT, "gguf: %s: %s: dimension %u is %llu", f->path, r->ctx,
                            d, (unsigned long long)t->ne[d]);
    }

    uint32_t type_id;
    TRY(rd_u32(r, "type", &type_id));
    if (!ggml_type_to_dtype(type_id, &t->type))
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "gguf: %s: %s: tensor type %s (type %u) is not supported (supported: "
                        "F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                        f->path, r->ctx, ggml_type_name(type_id), type_id);

    TRY(rd_u64(r, "offset", &t->offset));
    if (t->offset % f->alignment != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %s: offset %llu is not a multiple of the alignment %u", f->path,
                        r->ctx, (unsigned long long)t->offset, f->alignment);

    char what[sizeof r->ctx + 64];
    snprintf(what, sizeof what, "gguf: %s: %s", f->path, r->ctx);
    uint64_t n_bytes;
    TRY(dtype_row_bytes(t->type, t->ne[0], what, &n_bytes));
    for (int d = 1; d < GGUF_MAX_DIMS; d++) {
        if (n_bytes > UINT64_MAX / t->ne[d])
            return snp_fail(
                SNP_ERR_FORMAT, "gguf: %s: %s: size of [%llu, %llu, %llu, %llu] %s overflows",
                f->path, r->ctx, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], dtype_name(t->type));
        n_bytes *= t->ne[d];
    }
    t->n_bytes = n_bytes;
    return SNP_OK;
}

// Checks every tensor's byte range against the file and against its neighbours,
// then sets the data pointers.
static snp_status place_tensors(gguf_file *f, uint64_t info_end) {
    uint64_t a = f->alignment;
    // info_end <= size < 2^63 and a <= 2^31, so the sum cannot wrap.
    f->data_offset = (info_end + a - 1) / a * a;
    if (f->n_tensors == 0) return SNP_OK;
    if (f->data_offset > f->size)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: data section at offset %llu (tensor infos end at %llu, "
                        "alignment %u) starts past the end of the file (%llu bytes)",
                        f->path, (unsigned long long)f->data_offset, (unsigned long long)info_end,
                        f->alignment, (unsigned long long)f->size);
    uint64_t data_size = f->size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return snp_fail(SNP_ERR_FORMAT,
                            "gguf: %s: tensor '%.100s': data [offset %llu, %llu bytes] in the "
                            "data section at %llu runs past the end of the file (%llu bytes)",
                            f->path, t->name, (unsigned long long)t->offset,
                            (unsigned long long)t->n_bytes, (unsigned long long)f->data_offset,
                            (unsigned long long)f->size);
        t->data = f->map + f->data_offset + t->offset;
    }
    // tensors_sorted is reused as scratch: sorted by offset here, by name afterwards.
    for (uint64_t i = 0; i < f->n_tensors; i++)
        f->tensors_sorted[i] = &f->tensors[i];
    qsort(f->tensors_sorted, f->n_tensors, sizeof *f->tensors_sorted, cmp_tensor_offset);
    for (uint64_t i = 1; i < f->n_tensors; i++) {
        const gguf_tensor *p = f->tensors_sorted[i - 1], *q = f->tensors_sorted[i];
        if (p->offset + p->n_bytes > q->offset)
            return snp_fail(SNP_ERR_FORMAT,
                            "gguf: %s: tensors '%.100s' [offset %llu, %llu bytes] and '%.100s' "
                            "[offset %llu, %llu bytes] overlap",
                            f->path, p->name, (unsigned long long)p->offset,
                            (unsigned long long)p->n_bytes, q->name, (unsigned long long)q->offset,
                            (unsigned long long)q->n_bytes);
    }
    return SNP_OK;
}

static snp_status read_tensors(gguf_file *f, reader *r) {
    // A tensor info takes at least 32 bytes (name length, n_dims, one dim, type, offset).
    uint64_t left = r->size - r->pos;
    if (f->n_tensors > left / 32)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %llu tensor infos (at least 32 bytes each) do not fit in the "
                        "%llu bytes left after offset %llu",
                        f->path, (unsigned long long)f->n_tensors, (unsigned long long)left,
                        (unsigned long long)r->pos);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    f->tensors_sorted = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *f->tensors_sorted);
    if (!f->tensors || !f->tensors_sorted)
        return snp_fail(SNP_ERR_MEMORY, "gguf: %s: out of memory for %llu tensors", f->path,
                        (unsigned long long)f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        TRY(read_tensor_info(f, r, i, &f->tensors[i]));
    TRY(place_tensors(f, r->pos));
    for (uint64_t i = 0; i < f->n_tensors; i++)
        f->tensors_sorted[i] = &f->tensors[i];
    qsort(f->tensors_sorted, f->n_tensors, sizeof *f->tensors_sorted, cmp_tensor_name);
    for (uint64_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors_sorted[i - 1]->name, f->tensors_sorted[i]->name) == 0)
            return snp_fail(SNP_ERR_FORMAT, "gguf: %s: tensor name '%.100s' appears more than once",
                            f->path, f->tensors_sorted[i]->name);
    return SNP_OK;
}

static snp_status read_header(gguf_file *f, reader *r) {
    snprintf(r->ctx, sizeof r->ctx, "header");
    const uint8_t *magic = NULL;
    TRY(rd_bytes(r, 4, "magic", &magic));
    if (memcmp(magic, "GGUF", 4) != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: not a GGUF file (magic %02x %02x %02x %02x, expected 'GGUF')",
                        f->path, magic[0], magic[1], magic[2], magic[3]);
    TRY(rd_u32(r, "version", &f->version));
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0 && f->version != 0)
            return snp_fail(SNP_ERR_UNSUPPORTED,
                            "gguf: %s: version field 0x%08x looks big-endian; only little-endian "
                            "GGUF is supported",
                            f->path, f->version);
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "gguf: %s: GGUF version %u is not supported (versions 2 and 3 are)",
                        f->path, f->version);
    }
    TRY(rd_u64(r, "tensor count", &f->n_tensors));
    TRY(rd_u64(r, "key count", &f->n_kv));
    // A key takes at least 13 bytes (name length, value type, a one-byte value).
    uint64_t left = r->size - r->pos;
    if (f->n_kv > left / 13)
        return snp_fail(SNP_ERR_FORMAT,
                        "gguf: %s: %llu keys (at least 13 bytes each) do not fit in the %llu "
                        "bytes left after the header",
                        f->path, (unsigned long long)f->n_kv, (unsigned long long)left);
    return SNP_OK;
}

static snp_status map_file(gguf_file *f) {
    snp_status st = SNP_OK;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return snp_fail(SNP_ERR_IO, "gguf: %s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = snp_fail(SNP_ERR_IO, "gguf: %s: cannot stat: %s", f->path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = snp_fail(SNP_ERR_IO, "gguf: %s: not a regular file", f->path);
        goto done;
    }
    if (sb.st_size == 0) {
        st = snp_fail(SNP_ERR_FORMAT, "gguf: %s: empty file (0 bytes)", f->path);
        goto done;
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        st = snp_fail(SNP_ERR_IO, "gguf: %s: cannot map %lld bytes: %s", f->path,
                      (long long)sb.st_size, strerror(errno));
        goto done;
    }
    f->map = m;
    f->size = (uint64_t)sb.st_size;
done:
    close(fd);
    return st;
}

snp_status gguf_open(const char *path, gguf_file **out) {
    snp_status st = SNP_OK;
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return snp_fail(SNP_ERR_MEMORY, "gguf: %s: out of memory", path);
    }
    reader r = {.path = f->path};
    TRY_GOTO(st, map_file(f), fail);
    r.p = f->map;
    r.size = f->size;
    TRY_GOTO(st, read_header(f, &r), fail);
    TRY_GOTO(st, read_kvs(f, &r), fail);
    TRY_GOTO(st, read_tensors(f, &r), fail);
    *out = f;
    return SNP_OK;
fail:
    gguf_close(f);
    return st;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            free(f->kv[i].strs);
            free(f->kv[i].copy);
        }
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++)
            free((char *)f->tensors[i].name);
    free(f->kv);
    free(f->kv_sorted);
    free(f->tensors);
    free(f->tensors_sorted);
    if (f->map) munmap((void *)f->map, f->size);
    free(f->path);
    free(f);
}

const char *gguf_path(const gguf_file *f) {
    return f->path;
}
uint32_t gguf_version(const gguf_file *f) {
    return f->version;
}
uint32_t gguf_alignment(const gguf_file *f) {
    return f->alignment;
}

uint64_t gguf_n_tensors(const gguf_file *f) {
    return f->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i) {
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

static int cmp_key_tensor(const void *key, const void *elem) {
    return strcmp(key, (*(const gguf_tensor *const *)elem)->name);
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    const gguf_tensor *const *hit =
        bsearch(name, f->tensors_sorted, f->n_tensors, sizeof *f->tensors_sorted, cmp_key_tensor);
    return hit ? *hit : NULL;
}
