// safetensors: maps safetensors files (one, or the shards an index names), checks each
// JSON header entry against its file, and looks tensors up by name. What the tensors
// mean (names, transposes, sharding across ranks) is left to the model loader.
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// The limit the reference implementation (huggingface/safetensors) enforces.
#define ST_MAX_HEADER_BYTES 100000000ull
enum { ST_MAX_DIMS = 4 };

typedef struct st_shard {
    char *path;
    const uint8_t *map;
    uint64_t size;
    cJSON *metadata; // the header's __metadata__ object (string values), or NULL
} st_shard;

struct st_model {
    uint64_t n_shards;
    st_shard *shards;
    uint64_t n_tensors, cap_tensors;
    st_tensor *tensors;
    const st_tensor **sorted; // by name, for bsearch
};

// dtypes the format defines; only the first three are loaded.
static const struct {
    const char *name;
    int supported;
    dtype type;
} st_dtypes[] = {
    {"F32", 1, DTYPE_F32}, {"F16", 1, DTYPE_F16}, {"BF16", 1, DTYPE_BF16},
    {"F64", 0, 0},         {"I64", 0, 0},         {"I32", 0, 0},
    {"I16", 0, 0},         {"I8", 0, 0},          {"U64", 0, 0},
    {"U32", 0, 0},         {"U16", 0, 0},         {"U8", 0, 0},
    {"BOOL", 0, 0},        {"F8_E4M3", 0, 0},     {"F8_E5M2", 0, 0},
    {"F8_E8M0", 0, 0},     {"F6_E2M3", 0, 0},     {"F6_E3M2", 0, 0},
    {"F4", 0, 0},          {"C64", 0, 0},
};

static snp_status parse_dtype(const char *path, const char *name, const cJSON *j, dtype *out) {
    if (!cJSON_IsString(j))
        return snp_fail(SNP_ERR_FORMAT, "safetensors: %s: tensor '%s': \"dtype\" is not a string",
                        path, name);
    for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++) {
        if (strcmp(j->valuestring, st_dtypes[i].name) != 0) continue;
        if (!st_dtypes[i].supported)
            return snp_fail(SNP_ERR_UNSUPPORTED,
                            "safetensors: %s: tensor '%s': dtype %s is not supported "
                            "(supported: F32, F16, BF16)",
                            path, name, j->valuestring);
        *out = st_dtypes[i].type;
        return SNP_OK;
    }
    return snp_fail(SNP_ERR_FORMAT, "safetensors: %s: tensor '%s': unknown dtype '%.40s'", path,
                    name, j->valuestring);
}

// JSON numbers arrive as doubles: only integers up to 2^53 are exact, so anything
// else (fractions, negatives, huge values) is refused rather than rounded.
static snp_status parse_uint(const char *path, const char *name, const char *field, const cJSON *j,
                             uint64_t *out) {
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0) || j->valuedouble > 9007199254740992.0 ||
        j->valuedouble != (double)(uint64_t)j->valuedouble)
        return snp_fail(SNP_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': %s is not a non-negative integer", path,
                        name, field);
    *out = (uint64_t)j->valuedouble;
    return SNP_OK;
}

static snp_status push_tensor(st_model *m, st_tensor **out) {
    if (m->n_tensors == m->cap_tensors) {
        uint64_t cap = m->cap_tensors ? 2 * m->cap_tensors : 256;
        st_tensor *t = realloc(m->tensors, cap * sizeof *t);
        if (!t)
            return snp_fail(SNP_ERR_MEMORY, "safetensors: out of memory for %llu tensors",
                            (unsigned long long)cap);
        m->tensors = t;
        m->cap_tensors = cap;
    }
    *out = &m->tensors[m->n_tensors];
    memset(*out, 0, sizeof **out);
    m->n_tensors++;
    return SNP_OK;
}

// One header entry: dtype, shape and data_offsets, checked against the shard's data
// section, which starts at file offset data_off and runs to the end of the file.
static snp_status parse_entry(st_model *m, const st_shard *s, const cJSON *e, uint64_t data_off) {
    const char *path = s->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return snp_fail(SNP_ERR_FORMAT, "safetensors: %s: tensor '%s': entry is not an object",
                        path, name);
    st_tensor *t = NULL;
    TRY(push_tensor(m, &t));
    if (!(t->name = strdup(name)))
        return snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", path);
    t->file = s->path;
    TRY(parse_dtype(path, name, cJSON_GetObjectItemCaseSensitive(e, "dtype"), &t->type));

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(shape))
        return snp_fail(SNP_ERR_FORMAT, "safetensors: %s: tensor '%s': \"shape\" is not an array",
                        path, name);
    int n_dims = cJSON_GetArraySize(shape);
    if (n_dims > ST_MAX_DIMS)
        return snp_fail(SNP_ERR_UNSUPPORTED,
                        "safetensors: %s: tensor '%s': %d dimensions (at most %d are supported)",
                        path, name, n_dims, ST_MAX_DIMS);
    t->n_dims = n_dims;
    uint64_t n_bytes = dtype_block_bytes(t->type);
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        TRY(parse_uint(path, name, "a \"shape\" entry", dim, &t->shape[d]));
        if (t->shape[d] != 0 && n_bytes > UINT64_MAX / t->shape[d])
            return snp_fail(SNP_ERR_FORMAT, "safetensors: %s: tensor '%s': size overflows", path,
                            name);
        n_bytes *= t->shape[d++];
    }
    for (; d < ST_MAX_DIMS; d++)
        t->shape[d] = 1;
    t->n_bytes = n_bytes;

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return snp_fail(SNP_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': \"data_offsets\" is not an array of two",
                        path, name);
    uint64_t begin = 0, end = 0, data_size = s->size - data_off;
    TRY(parse_uint(path, name, "data_offsets[0]", cJSON_GetArrayItem(offs, 0), &begin));
    TRY(parse_uint(path, name, "data_offsets[1]", cJSON_GetArrayItem(offs, 1), &end));
    if (begin > end || end > data_size)
        return snp_fail(SNP_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] are not an "
                        "ordered range inside the %llu-byte data section (file %llu bytes)",
                        path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)data_size, (unsigned long long)s->size);
    if (end - begin != n_bytes)
        return snp_fail(SNP_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, "
                        "but the shape and dtype %s need %llu",
                        path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)(end - begin), dtype_name(t->type),
                        (unsigned long long)n_bytes);
    // Backends read elements in place, so the data must be aligned to the element size;
    // writers pad the header to 8 bytes for exactly this reason.
    if ((data_off + begin) % dtype_block_bytes(t->type) != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': data at file offset %llu is not aligned "
                        "to its %zu-byte %s elements",
                        path, name, (unsigned long long)(data_off + begin),
                        dtype_block_bytes(t->type), dtype_name(t->type));
    t->data = s->map + data_off + begin;
    return SNP_OK;
}

static int cmp_data(const void *a, const void *b) {
    const uint8_t *x = (*(const st_tensor *const *)a)->data;
    const uint8_t *y = (*(const st_tensor *const *)b)->data;
    return x < y ? -1 : x > y;
}

// Byte ranges of one shard's tensors [first, n_tensors) must not overlap.
static snp_status check_overlap(st_model *m, const st_shard *s, uint64_t first) {
    snp_status st = SNP_OK;
    uint64_t n = m->n_tensors - first;
    const st_tensor **v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", s->path);
    for (uint64_t i = 0; i < n; i++)
        v[i] = &m->tensors[first + i];
    qsort(v, n, sizeof *v, cmp_data);
    for (uint64_t i = 1; i < n; i++) {
        const uint8_t *prev_end = (const uint8_t *)v[i - 1]->data + v[i - 1]->n_bytes;
        if (prev_end > (const uint8_t *)v[i]->data) {
            st = snp_fail(SNP_ERR_FORMAT,
                          "safetensors: %s: tensors '%s' and '%s' have overlapping data_offsets",
                          s->path, v[i - 1]->name, v[i]->name);
            goto done;
        }
    }
done:
    free(v);
    return st;
}

// Maps the shard and appends its tensors to m.
static snp_status load_shard(st_model *m, st_shard *s) {
    snp_status st = SNP_OK;
    cJSON *root = NULL;
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return snp_fail(SNP_ERR_IO, "safetensors: %s: cannot open: %s", s->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = snp_fail(SNP_ERR_IO, "safetensors: %s: not a readable regular file", s->path);
        goto done;
    }
    if (sb.st_size < 8) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "safetensors: %s: file of %lld bytes is too small for the 8-byte header "
                      "length",
                      s->path, (long long)sb.st_size);
        goto done;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = snp_fail(SNP_ERR_IO, "safetensors: %s: cannot map %lld bytes: %s", s->path,
                      (long long)sb.st_size, strerror(errno));
        goto done;
    }
    s->map = map;
    s->size = (uint64_t)sb.st_size;

    uint64_t n_header = 0;
    for (int i = 7; i >= 0; i--)
        n_header = n_header << 8 | s->map[i];
    if (n_header > ST_MAX_HEADER_BYTES) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "safetensors: %s: header length %llu is over the limit of %llu bytes",
                      s->path, (unsigned long long)n_header, ST_MAX_HEADER_BYTES);
        goto done;
    }
    if (n_header > s->size - 8) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "safetensors: %s: header length %llu runs past the end of the file "
                      "(%llu bytes)",
                      s->path, (unsigned long long)n_header, (unsigned long long)s->size);
        goto done;
    }
    const char *json = (const char *)s->map + 8, *err_at = NULL;
    root = cJSON_ParseWithLengthOpts(json, n_header, &err_at, 0);
    if (!root) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "safetensors: %s: malformed JSON header (error at header byte %lld of "
                      "%llu)",
                      s->path, err_at ? (long long)(err_at - json) : -1LL,
                      (unsigned long long)n_header);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = snp_fail(SNP_ERR_FORMAT, "safetensors: %s: header is not a JSON object", s->path);
        goto done;
    }
    // Writers pad the header with spaces; anything else after the object is corruption.
    for (const char *c = err_at; c && c < json + n_header; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
            st = snp_fail(SNP_ERR_FORMAT,
                          "safetensors: %s: header has stray bytes after the JSON object (at "
                          "header byte %lld of %llu)",
                          s->path, (long long)(c - json), (unsigned long long)n_header);
            goto done;
        }
    uint64_t first = m->n_tensors;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                st = snp_fail(SNP_ERR_FORMAT, "safetensors: %s: __metadata__ is not an object",
                              s->path);
                goto done;
            }
            const cJSON *kv;
            cJSON_ArrayForEach(kv, e) {
                if (!cJSON_IsString(kv)) {
                    st = snp_fail(SNP_ERR_FORMAT,
                                  "safetensors: %s: __metadata__ entry '%s' is not a string",
                                  s->path, kv->string);
                    goto done;
                }
            }
            if (!s->metadata && !(s->metadata = cJSON_Duplicate(e, 1))) {
                st = snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", s->path);
                goto done;
            }
            continue;
        }
        TRY_GOTO(st, parse_entry(m, s, e, 8 + n_header), done);
    }
    TRY_GOTO(st, check_overlap(m, s, first), done);
done:
    cJSON_Delete(root);
    close(fd);
    return st;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static snp_status index_tensors(st_model *m) {
    m->sorted = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *m->sorted);
    if (!m->sorted) return snp_fail(SNP_ERR_MEMORY, "safetensors: out of memory");
    for (uint64_t i = 0; i < m->n_tensors; i++)
        m->sorted[i] = &m->tensors[i];
    qsort(m->sorted, m->n_tensors, sizeof *m->sorted, cmp_name);
    for (uint64_t i = 1; i < m->n_tensors; i++) {
        const st_tensor *a = m->sorted[i - 1], *b = m->sorted[i];
        if (strcmp(a->name, b->name) == 0)
            return snp_fail(SNP_ERR_FORMAT, "safetensors: tensor '%s' appears twice (in %s and %s)",
                            a->name, a->file, b->file);
    }
    return SNP_OK;
}

static snp_status add_shard(st_model *m, const char *path) {
    st_shard *s = realloc(m->shards, (m->n_shards + 1) * sizeof *s);
    if (!s) return snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", path);
    m->shards = s;
    s = &m->shards[m->n_shards];
    memset(s, 0, sizeof *s);
    if (!(s->path = strdup(path))) return snp_fail(SNP_ERR_MEMORY, "safetensors: out of memory");
    m->n_shards++;
    return load_shard(m, s);
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

// Reads a whole small file (an index) into a NUL-terminated buffer.
static snp_status read_text(const char *path, char **out) {
    snp_status st = SNP_OK;
    char *buf = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return snp_fail(SNP_ERR_IO, "safetensors: %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = snp_fail(SNP_ERR_IO, "safetensors: %s: not a readable regular file", path);
        goto done;
    }
    if ((uint64_t)sb.st_size > ST_MAX_HEADER_BYTES) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "safetensors: %s: index of %lld bytes is over the limit of %llu", path,
                      (long long)sb.st_size, ST_MAX_HEADER_BYTES);
        goto done;
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        st = snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", path);
        goto done;
    }
    size_t n = fread(buf, 1, (size_t)sb.st_size, fp);
    if (n != (size_t)sb.st_size) {
        st = snp_fail(SNP_ERR_IO, "safetensors: %s: short read (%zu of %lld bytes)", path, n,
                      (long long)sb.st_size);
        goto done;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
done:
    free(buf);
    fclose(fp);
    return st;
}

typedef struct index_entry {
    const char *tensor;
    const char *shard;
    uint64_t shard_id;
} index_entry;

static int cmp_entry_shard(const void *a, const void *b) {
    return strcmp(((const index_entry *)a)->shard, ((const index_entry *)b)->shard);
}

// Validates weight_map, opens each shard once, then checks that every tensor the index
// lists is in the shard it names. Tensors a shard holds beyond the index are kept.
static snp_status load_index(st_model *m, const char *index_path, const char *dir) {
    snp_status st = SNP_OK;
    char *text = NULL, *shard_path = NULL;
    cJSON *root = NULL;
    index_entry *v = NULL;
    TRY_GOTO(st, read_text(index_path, &text), done);
    root = cJSON_Parse(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        st = snp_fail(SNP_ERR_FORMAT, "safetensors: %s: %s", index_path,
                      root ? "no \"weight_map\" object" : "malformed JSON");
        goto done;
    }
    uint64_t n = (uint64_t)cJSON_GetArraySize(map), i = 0;
    if (n == 0) {
        st = snp_fail(SNP_ERR_FORMAT, "safetensors: %s: \"weight_map\" is empty", index_path);
        goto done;
    }
    if (!(v = malloc(n * sizeof *v))) {
        st = snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", index_path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        // A shard must be a plain file next to the index: the file is not trusted to
        // point anywhere else on the machine.
        const char *sh = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!sh || !*sh || strchr(sh, '/') || strcmp(sh, ".") == 0 || strcmp(sh, "..") == 0) {
            st = snp_fail(SNP_ERR_FORMAT,
                          "safetensors: %s: weight_map: tensor '%s': shard is not a file name in "
                          "the index's directory",
                          index_path, e->string);
            goto done;
        }
        v[i++] = (index_entry){.tensor = e->string, .shard = sh};
    }
    qsort(v, n, sizeof *v, cmp_entry_shard);
    for (i = 0; i < n; i++) {
        if (i > 0 && strcmp(v[i].shard, v[i - 1].shard) == 0) {
            v[i].shard_id = v[i - 1].shard_id;
            continue;
        }
        v[i].shard_id = m->n_shards;
        free(shard_path);
        if (!(shard_path = path_join(dir, v[i].shard))) {
            st = snp_fail(SNP_ERR_MEMORY, "safetensors: out of memory");
            goto done;
        }
        if ((st = add_shard(m, shard_path)) != SNP_OK) {
            char msg[2048]; // a copy: snp_fail overwrites the message it would read from
            snprintf(msg, sizeof msg, "%s", snp_error());
            const char *inner = msg + (strncmp(msg, "safetensors: ", 13) == 0 ? 13 : 0);
            st = snp_fail(st, "safetensors: %s: shard '%s' (holding tensor '%s'): %s", index_path,
                          v[i].shard, v[i].tensor, inner);
            goto done;
        }
    }
    TRY_GOTO(st, index_tensors(m), done);
    for (i = 0; i < n; i++) {
        const st_tensor *t = st_find_tensor(m, v[i].tensor);
        if (!t || t->file != m->shards[v[i].shard_id].path) {
            st = snp_fail(SNP_ERR_FORMAT,
                          "safetensors: %s: tensor '%s' is listed in shard '%s' but %s%s",
                          index_path, v[i].tensor, v[i].shard, t ? "is in " : "is in no shard",
                          t ? t->file : "");
            goto done;
        }
    }
done:
    free(shard_path);
    free(v);
    cJSON_Delete(root);
    free(text);
    return st;
}

static int is_regular(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

snp_status st_open(const char *path, st_model **out) {
    snp_status st = SNP_OK;
    char *p = NULL;
    *out = NULL;
    st_model *m = calloc(1, sizeof *m);
    if (!m) return snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", path);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = snp_fail(SNP_ERR_IO, "safetensors: %s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    size_t len = strlen(path);
    if (S_ISDIR(sb.st_mode)) {
        if (!(p = path_join(path, "model.safetensors.index.json"))) goto oom;
        if (is_regular(p)) {
            TRY_GOTO(st, load_index(m, p, path), fail);
        } else {
            free(p);
            if (!(p = path_join(path, "model.safetensors"))) goto oom;
            if (!is_regular(p)) {
                st = snp_fail(SNP_ERR_IO,
                              "safetensors: %s: directory holds neither model.safetensors nor "
                              "model.safetensors.index.json",
                              path);
                goto fail;
            }
            TRY_GOTO(st, add_shard(m, p), fail);
            TRY_GOTO(st, index_tensors(m), fail);
        }
    } else if (len >= 5 && strcmp(path + len - 5, ".json") == 0) {
        const char *slash = strrchr(path, '/');
        if (!(p = slash ? strndup(path, (size_t)(slash - path)) : strdup("."))) goto oom;
        TRY_GOTO(st, load_index(m, path, slash == path ? "/" : p), fail);
    } else {
        TRY_GOTO(st, add_shard(m, path), fail);
        TRY_GOTO(st, index_tensors(m), fail);
    }
    free(p);
    *out = m;
    return SNP_OK;
oom:
    st = snp_fail(SNP_ERR_MEMORY, "safetensors: %s: out of memory", path);
fail:
    free(p);
    st_close(m);
    return st;
}

void st_close(st_model *m) {
    if (!m) return;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        free((char *)m->tensors[i].name);
    for (uint64_t i = 0; i < m->n_shards; i++) {
        if (m->shards[i].map) munmap((void *)m->shards[i].map, m->shards[i].size);
        cJSON_Delete(m->shards[i].metadata);
        free(m->shards[i].path);
    }
    free(m->tensors);
    free(m->shards);
    free(m->sorted);
    free(m);
}

uint64_t st_n_tensors(const st_model *m) {
    return m->n_tensors;
}

const st_tensor *st_tensor_at(const st_model *m, uint64_t i) {
    return i < m->n_tensors ? &m->tensors[i] : NULL;
}

static int cmp_key_name(const void *key, const void *elem) {
    return strcmp(key, (*(const st_tensor *const *)elem)->name);
}

const st_tensor *st_find_tensor(const st_model *m, const char *name) {
    if (!m->sorted) return NULL;
    const st_tensor *const *hit =
        bsearch(name, m->sorted, m->n_tensors, sizeof *m->sorted, cmp_key_name);
    return hit ? *hit : NULL;
}

const char *st_metadata(const st_model *m, const char *key) {
    if (!m || m->n_shards == 0 || !m->shards[0].metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m->shards[0].metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
