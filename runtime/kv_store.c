// kv_store: writes and reads one rank's document-prefix K/V as a safetensors file.
// The header (tensor table, identity, checksums) is written first with placeholder
// checksums of fixed width, the layers stream after it as the prefill makes them, and
// the commit rewrites the header in place, syncs and renames: a reader sees a whole,
// checked file or none. Reading maps the file (safetensors.c) and verifies each
// layer's checksum as it copies the layer out.
#include "kv_store.h"
#include "layer_prefetch.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include "../comm/comm.h"
#include "engine.h"
#include "safetensors.h"

#define KV_STORE_FORMAT "snaptp-kv-store"
#define KV_STORE_VERSION "2" // 2: metadata key_scale
#define KV_STORE_LOCK_NAME ".snaptp-kv-store.lock"
enum {
    FINGERPRINT_HEAD_BYTES = 1 << 20, // a checkpoint's header lies in its first MiB
    HEADER_ALIGN = 64,                // tensor data starts on a cache line
    N_TENSORS_PER_LAYER = 3,          // k, v, q_tail
};

static const char *const tensor_kind[N_TENSORS_PER_LAYER] = {"k", "v", "q_tail"};

struct kv_store {
    kv_store_identity id;
    backend *be;
    comm *comm;
    int temporary;
    char *dir, *path, *tmp_path;
    int lock_fd; // rank 0: the lock on dir, -1 when not held
    // Write mode.
    int writing;
    int fd;
    int layers_saved;
    uint64_t header_bytes; // 8 + JSON length, a multiple of HEADER_ALIGN
    uint64_t *checksums;   // [n_layers * 3]
    void *stage;           // device backends: one head's rows on the host
    // Read mode.
    st_model *st;
    const st_tensor **tensors; // [n_layers * 3]
    uint64_t *expected;        // [n_layers * 3] checksums from the metadata
    // Read mode with a prefetcher (device backends; SNAPTP_KV_STORE_PREFETCH=1 on the
    // CPU): a worker checksums layer l + 1 and copies it to the backend while layer l
    // computes, so a GPU's host-to-device copy overlaps compute.
    layer_prefetch *prefetcher;
    void *k_stage, *v_stage; // backend memory [Hkv][n_prefix][D]: the staged layer
    float *q_stage;          // host [n_query_rows][H][D]
    int32_t *rows;           // backend memory [Hkv][n_prefix]: 0, 1, ... for kv_gather
    kv_store_stats stats;
    // The factor the stored keys carry: Dual Chunk Attention's length scaling of the
    // prompt that wrote them (1 for every other model); metadata "key_scale".
    float key_scale;
};

// ---- identity ---------------------------------------------------------------------

static void hex128(XXH128_hash_t h, char out[40]) {
    snprintf(out, 40, "%016" PRIx64 "%016" PRIx64, (uint64_t)h.high64, (uint64_t)h.low64);
}

void kv_store_hash_ids(const int32_t *ids, size_t n, char out[40]) {
    hex128(XXH3_128bits(ids, n * sizeof *ids), out);
}

void kv_store_fingerprint_tokenizer(const tokenizer *t, char out[40]) {
    XXH3_state_t *h = XXH3_createState();
    if (!h) {
        snprintf(out, 40, "unhashed");
        return;
    }
    XXH3_128bits_reset(h);
    const int32_t head[3] = {tokenizer_n_vocab(t), tokenizer_bos_id(t), tokenizer_eos_id(t)};
    XXH3_128bits_update(h, head, sizeof head);
    for (int32_t id = 0; id < head[0]; id++) {
        size_t n = 0;
        const char *piece = tokenizer_piece(t, id, &n);
        const uint32_t meta[2] = {(uint32_t)n, (uint32_t)tokenizer_is_special(t, id)};
        XXH3_128bits_update(h, meta, sizeof meta);
        if (piece && n) XXH3_128bits_update(h, piece, n);
    }
    const char *tmpl = tokenizer_chat_template(t);
    if (tmpl) XXH3_128bits_update(h, tmpl, strlen(tmpl));
    hex128(XXH3_128bits_digest(h), out);
    XXH3_freeState(h);
}

// hash_file_head: name, size and the first FINGERPRINT_HEAD_BYTES of one file.
static snp_status hash_file_head(XXH3_state_t *h, const char *path, const char *name,
                                 uint64_t *total) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snp_status st = snp_fail(SNP_ERR_IO, "kv-store: cannot read %s to fingerprint the model: %s",
                                 path, strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    char *buf = malloc(FINGERPRINT_HEAD_BYTES);
    if (!buf) {
        close(fd);
        return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    }
    ssize_t n = pread(fd, buf, FINGERPRINT_HEAD_BYTES, 0);
    close(fd);
    if (n < 0) {
        free(buf);
        return snp_fail(SNP_ERR_IO, "kv-store: cannot read %s: %s", path, strerror(errno));
    }
    const uint64_t size = (uint64_t)sb.st_size;
    XXH3_128bits_update(h, name, strlen(name) + 1);
    XXH3_128bits_update(h, &size, sizeof size);
    XXH3_128bits_update(h, buf, (size_t)n);
    free(buf);
    *total += size;
    return SNP_OK;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// hash_dir: a safetensors checkpoint directory: its .json and .safetensors files in
// name order (config.json, the index, the shards).
static snp_status hash_dir(XXH3_state_t *h, const char *dir, uint64_t *total) {
    DIR *d = opendir(dir);
    if (!d)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot list %s to fingerprint the model: %s", dir,
                        strerror(errno));
    snp_status st = SNP_OK;
    char **names = NULL;
    size_t n = 0, cap = 0;
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".json") && !has_suffix(e->d_name, ".safetensors")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) goto oom;
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) goto oom;
        n++;
    }
    qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n && st == SNP_OK; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        st = hash_file_head(h, path, names[i], total);
    }
    goto done;
oom:
    st = snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory listing %s", dir);
done:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    closedir(d);
    return st;
}

snp_status kv_store_fingerprint_model(const char *path, char out[64]) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot stat the model %s: %s", path, strerror(errno));
    XXH3_state_t *h = XXH3_createState();
    if (!h) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    XXH3_128bits_reset(h);
    uint64_t total = 0;
    snp_status st;
    if (S_ISDIR(sb.st_mode)) {
        st = hash_dir(h, path, &total);
    } else if (has_suffix(path, ".json")) { // config.json or an index: its directory
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
        st = hash_dir(h, dir, &total);
    } else {
        const char *base = strrchr(path, '/');
        st = hash_file_head(h, path, base ? base + 1 : path, &total);
    }
    if (st == SNP_OK) {
        char hex[40];
        hex128(XXH3_128bits_digest(h), hex);
        snprintf(out, 64, "%" PRIu64 ":%s", total, hex);
    }
    XXH3_freeState(h);
    return st;
}

snp_status kv_store_identity_make(const char *model_path, const model *m, const tokenizer *t,
                                  const int32_t *prefix_ids, int n_prefix,
                                  kv_store_identity *out) {
    memset(out, 0, sizeof *out);
    if (n_prefix <= 0)
        return snp_fail(SNP_ERR_ARGUMENT, "kv-store: the document prefix is empty");
    TRY(kv_store_fingerprint_model(model_path, out->model));
    if (t) kv_store_fingerprint_tokenizer(t, out->tokenizer);
    else snprintf(out->tokenizer, sizeof out->tokenizer, "none");
    kv_store_hash_ids(prefix_ids, (size_t)n_prefix, out->prefix);
    const dtype kt = m->be->ops->kv_type(m->be->ctx);
    if (kt != DTYPE_F32 && kt != DTYPE_F16 && kt != DTYPE_BF16)
        return snp_fail(SNP_ERR_UNSUPPORTED, "kv-store: backend %s keeps its KV cache as %s",
                        m->be->ops->name, dtype_name(kt));
    out->kv_type = kt;
    out->dtype = dtype_name(kt);
    out->act_bytes = (int)dtype_block_bytes(kt);
    out->tp_size = m->shard.tp_size;
    out->tp_rank = m->shard.tp_rank;
    out->n_layers = m->cfg.n_layers;
    out->n_heads = m->n_heads_local;
    out->n_kv_heads = m->n_kv_heads_local;
    out->head_dim = m->cfg.head_dim;
    const int tp = m->shard.tp_size, Hkv = m->cfg.n_kv_heads;
    // model_load.c: rank r holds KV heads r*Hkvl.. or, replicated, head r / (tp / Hkv).
    out->kv_head_first = Hkv >= tp ? m->shard.tp_rank * m->n_kv_heads_local
                                   : m->shard.tp_rank / (tp / Hkv);
    out->n_prefix = n_prefix;
    out->n_query_rows = n_prefix < FORWARD_PREFIX_QUERY_ROWS ? n_prefix : FORWARD_PREFIX_QUERY_ROWS;
    return SNP_OK;
}

uint64_t kv_store_data_bytes(int n_layers, int n_heads, int n_kv_heads, int head_dim,
                             int act_bytes, int n_prefix) {
    const uint64_t nq = (uint64_t)(n_prefix < FORWARD_PREFIX_QUERY_ROWS ? n_prefix
                                                                         : FORWARD_PREFIX_QUERY_ROWS);
    const uint64_t kv = 2 * (uint64_t)n_kv_heads * (uint64_t)n_prefix * (uint64_t)head_dim *
                        (uint64_t)act_bytes;
    const uint64_t q = nq * (uint64_t)n_heads * (uint64_t)head_dim * 4;
    return (uint64_t)n_layers * (kv + q);
}

// ---- the tensor table -------------------------------------------------------------

static uint64_t tensor_bytes(const kv_store_identity *id, int kind) {
    if (kind == 2)
        return (uint64_t)id->n_query_rows * (uint64_t)id->n_heads * (uint64_t)id->head_dim * 4;
    return (uint64_t)id->n_kv_heads * (uint64_t)id->n_prefix * (uint64_t)id->head_dim *
           (uint64_t)id->act_bytes;
}

static void tensor_name(char *buf, size_t n, int layer, int kind) {
    snprintf(buf, n, "layers.%d.%s", layer, tensor_kind[kind]);
}

static void add_int(cJSON *meta, const char *key, long long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    cJSON_AddStringToObject(meta, key, buf);
}

// header_json: the safetensors header for `id` with the given checksums (NULL:
// placeholders of the same width), unpadded; malloc'd.
static char *header_json(const kv_store_identity *id, const uint64_t *checksums, float key_scale) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    if (!root || !meta) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(meta, "format", KV_STORE_FORMAT);
    cJSON_AddStringToObject(meta, "version", KV_STORE_VERSION);
    cJSON_AddStringToObject(meta, "model_fingerprint", id->model);
    cJSON_AddStringToObject(meta, "tokenizer_fingerprint", id->tokenizer);
    cJSON_AddStringToObject(meta, "prefix_ids_xxh3_128", id->prefix);
    cJSON_AddStringToObject(meta, "dtype", id->dtype);
    add_int(meta, "tp_size", id->tp_size);
    add_int(meta, "tp_rank", id->tp_rank);
    add_int(meta, "n_layers", id->n_layers);
    add_int(meta, "n_heads", id->n_heads);
    add_int(meta, "n_kv_heads", id->n_kv_heads);
    add_int(meta, "head_dim", id->head_dim);
    add_int(meta, "kv_head_first", id->kv_head_first);
    add_int(meta, "n_prefix_tokens", id->n_prefix);
    add_int(meta, "n_query_rows", id->n_query_rows);
    char text[160];
    // Fixed width (the header is written with placeholders first, then for real).
    snprintf(text, sizeof text, "%.9e", (double)key_scale);
    cJSON_AddStringToObject(meta, "key_scale", text);
    snprintf(text, sizeof text, "0..%d", id->n_prefix - 1);
    cJSON_AddStringToObject(meta, "positions", text);
    cJSON_AddStringToObject(meta, "layout",
                            "k, v: [kv_heads, n_prefix_tokens, head_dim] after RoPE; q_tail: "
                            "[n_query_rows, heads, head_dim] fp32, the last prefix queries");
    uint64_t off = 0;
    for (int l = 0; l < id->n_layers; l++) {
        for (int kind = 0; kind < N_TENSORS_PER_LAYER; kind++) {
            char name[64], key[80];
            tensor_name(name, sizeof name, l, kind);
            snprintf(key, sizeof key, "xxh3_64.%s", name);
            snprintf(text, sizeof text, "%016" PRIx64, checksums ? checksums[l * 3 + kind] : 0);
            cJSON_AddStringToObject(meta, key, text);
            cJSON *t = cJSON_AddObjectToObject(root, name);
            cJSON_AddStringToObject(t, "dtype", kind == 2 ? "F32" : id->dtype);
            const double shape_kv[3] = {id->n_kv_heads, id->n_prefix, id->head_dim};
            const double shape_q[3] = {id->n_query_rows, id->n_heads, id->head_dim};
            cJSON_AddItemToObject(t, "shape", cJSON_CreateDoubleArray(kind == 2 ? shape_q : shape_kv, 3));
            const uint64_t n = tensor_bytes(id, kind);
            const double range[2] = {(double)off, (double)(off + n)};
            cJSON_AddItemToObject(t, "data_offsets", cJSON_CreateDoubleArray(range, 2));
            off += n;
        }
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return json;
}

// write_header: 8-byte length + JSON padded with spaces to HEADER_ALIGN, at offset 0.
static snp_status write_header(kv_store *s, const uint64_t *checksums) {
    char *json = header_json(&s->id, checksums, s->key_scale);
    if (!json) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory for the header");
    const uint64_t n = strlen(json);
    const uint64_t total = (8 + n + HEADER_ALIGN - 1) / HEADER_ALIGN * HEADER_ALIGN;
    if (s->header_bytes && total != s->header_bytes) {
        free(json);
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: %s: the header changed size on commit",
                        s->tmp_path);
    }
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(json);
        return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory for the header");
    }
    const uint64_t len = total - 8;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, json, n);
    memset(buf + 8 + n, ' ', total - 8 - n);
    free(json);
    ssize_t w = pwrite(s->fd, buf, total, 0);
    free(buf);
    if (w != (ssize_t)total)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot write %s: %s", s->tmp_path,
                        w < 0 ? strerror(errno) : "short write");
    s->header_bytes = total;
    return SNP_OK;
}

static uint64_t tensor_offset(const kv_store *s, int layer, int kind) {
    uint64_t off = s->header_bytes;
    for (int l = 0; l < layer; l++)
        for (int k = 0; k < N_TENSORS_PER_LAYER; k++) off += tensor_bytes(&s->id, k);
    for (int k = 0; k < kind; k++) off += tensor_bytes(&s->id, k);
    return off;
}

// ---- writing ----------------------------------------------------------------------

static snp_status pwrite_all(const kv_store *s, const void *buf, size_t n, uint64_t off) {
    const char *p = buf;
    while (n) {
        ssize_t w = pwrite(s->fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return snp_fail(SNP_ERR_IO, "kv-store: cannot write %s at byte %" PRIu64 ": %s",
                            s->tmp_path, off, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return SNP_OK;
}

// save_kv: rows [0, n_prefix) of each head of buf [Hkv, cap, D] to the file, hashed.
static snp_status save_kv(kv_store *s, const void *buf, int cap, uint64_t off, uint64_t *sum) {
    const backend_ops *ops = s->be->ops;
    const size_t head_bytes = (size_t)s->id.n_prefix * (size_t)s->id.head_dim * (size_t)s->id.act_bytes;
    const size_t stride = (size_t)cap * (size_t)s->id.head_dim * (size_t)s->id.act_bytes;
    XXH3_state_t *h = XXH3_createState();
    if (!h) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    XXH3_64bits_reset(h);
    snp_status st = SNP_OK;
    for (int g = 0; g < s->id.n_kv_heads && st == SNP_OK; g++) {
        const char *src = (const char *)buf + (size_t)g * stride;
        if (!ops->host_memory) { // a device buffer: through one head's host staging
            if (!s->stage && !(s->stage = malloc(head_bytes))) {
                st = snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory staging %zu bytes", head_bytes);
                break;
            }
            if ((st = ops->download(s->be->ctx, s->stage, src, head_bytes)) != SNP_OK) break;
            src = s->stage;
        }
        XXH3_64bits_update(h, src, head_bytes);
        st = pwrite_all(s, src, head_bytes, off + (uint64_t)g * head_bytes);
    }
    *sum = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return st;
}

static snp_status store_save(void *user, int layer, const void *k, const void *v, int cap,
                             const float *q_tail, float key_scale) {
    kv_store *s = user;
    if (!s->writing || layer != s->layers_saved)
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: %s: layer %d saved out of order (%d saved)",
                        s->tmp_path ? s->tmp_path : s->path, layer, s->layers_saved);
    if (!q_tail)
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: layer %d saved without its queries", layer);
    if (!(key_scale > 0) || !isfinite(key_scale) || (layer > 0 && key_scale != s->key_scale))
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: layer %d saved with key scale %g (layer 0: %g)",
                        layer, (double)key_scale, (double)s->key_scale);
    s->key_scale = key_scale;
    const double t0 = engine_now_s();
    uint64_t *sums = s->checksums + (size_t)layer * N_TENSORS_PER_LAYER;
    TRY(save_kv(s, k, cap, tensor_offset(s, layer, 0), &sums[0]));
    TRY(save_kv(s, v, cap, tensor_offset(s, layer, 1), &sums[1]));
    const uint64_t nq = tensor_bytes(&s->id, 2);
    sums[2] = XXH3_64bits(q_tail, nq);
    TRY(pwrite_all(s, q_tail, nq, tensor_offset(s, layer, 2)));
    s->layers_saved++;
    s->stats.bytes_written += 2 * tensor_bytes(&s->id, 0) + nq;
    s->stats.write_s += engine_now_s() - t0;
    return SNP_OK;
}

// ---- reading ----------------------------------------------------------------------

// meta_int: a decimal metadata value; -1 when absent or malformed.
static long long meta_int(const st_model *st, const char *key) {
    const char *v = st_metadata(st, key);
    if (!v || !*v) return -1;
    char *end;
    long long x = strtoll(v, &end, 10);
    return *end ? -1 : x;
}

// check_field: one identity field of the file against this run's, naming both.
static snp_status check_str(const char *path, const st_model *st, const char *key,
                            const char *want, const char *what) {
    const char *have = st_metadata(st, key);
    if (have && strcmp(have, want) == 0) return SNP_OK;
    return snp_fail(SNP_ERR_FORMAT,
                    "kv-store: %s was made by %s (%s %s), this run has %s: use another "
                    "--kv-store directory, or delete this one to rebuild it",
                    path, what, key, have ? have : "(missing)", want);
}

static snp_status check_int(const char *path, const st_model *st, const char *key, long long want,
                            const char *what) {
    long long have = meta_int(st, key);
    if (have == want) return SNP_OK;
    return snp_fail(SNP_ERR_FORMAT,
                    "kv-store: %s was made by %s (%s = %lld), this run has %lld: use another "
                    "--kv-store directory, or delete this one to rebuild it",
                    path, what, key, have, want);
}

static snp_status check_identity(const kv_store *s) {
    const st_model *st = s->st;
    const kv_store_identity *id = &s->id;
    const char *p = s->path;
    const char *format = st_metadata(st, "format"), *version = st_metadata(st, "version");
    if (!format || strcmp(format, KV_STORE_FORMAT) != 0)
        return snp_fail(SNP_ERR_FORMAT, "kv-store: %s is a safetensors file but not a snaptp KV "
                                        "store (metadata format '%s')",
                        p, format ? format : "(missing)");
    if (!version || strcmp(version, KV_STORE_VERSION) != 0)
        return snp_fail(SNP_ERR_UNSUPPORTED, "kv-store: %s has store version '%s'; this snaptp "
                                             "reads version %s",
                        p, version ? version : "(missing)", KV_STORE_VERSION);
    TRY(check_str(p, st, "model_fingerprint", id->model, "another model"));
    TRY(check_str(p, st, "tokenizer_fingerprint", id->tokenizer, "another tokenizer"));
    TRY(check_int(p, st, "tp_size", id->tp_size, "a job of another tp size"));
    TRY(check_int(p, st, "tp_rank", id->tp_rank, "another rank"));
    TRY(check_str(p, st, "dtype", id->dtype, "another KV cache type (--kv-dtype) or backend"));
    TRY(check_int(p, st, "n_layers", id->n_layers, "another model"));
    TRY(check_int(p, st, "n_heads", id->n_heads, "another head layout"));
    TRY(check_int(p, st, "n_kv_heads", id->n_kv_heads, "another head layout"));
    TRY(check_int(p, st, "head_dim", id->head_dim, "another head layout"));
    TRY(check_int(p, st, "kv_head_first", id->kv_head_first, "another head layout"));
    const long long n_prefix = meta_int(st, "n_prefix_tokens");
    const char *hash = st_metadata(st, "prefix_ids_xxh3_128");
    if (n_prefix != id->n_prefix || !hash || strcmp(hash, id->prefix) != 0)
        return snp_fail(SNP_ERR_FORMAT,
                        "kv-store: %s holds another document: its prefix is %lld tokens (ids "
                        "hash %s), this prompt's is %d tokens (hash %s): use another --kv-store "
                        "directory per document, or delete this one to rebuild it",
                        p, n_prefix, hash ? hash : "(missing)", id->n_prefix, id->prefix);
    TRY(check_int(p, st, "n_query_rows", id->n_query_rows, "another snaptp"));
    return SNP_OK;
}

// read_key_scale: the factor the stored keys carry (struct kv_store).
static snp_status read_key_scale(kv_store *s) {
    const char *text = st_metadata(s->st, "key_scale");
    char *end = NULL;
    const double scale = text ? strtod(text, &end) : 0;
    if (!text || end == text || *end || !(scale > 0) || !isfinite(scale))
        return snp_fail(SNP_ERR_FORMAT, "kv-store: %s: metadata key_scale '%s' is not a positive "
                                        "number",
                        s->path, text ? text : "(missing)");
    s->key_scale = (float)scale;
    return SNP_OK;
}

// bind_tensors: every layer's three tensors, with the dtype and shape the identity
// implies, and their checksums from the metadata.
static snp_status bind_tensors(kv_store *s) {
    const kv_store_identity *id = &s->id;
    const size_t n = (size_t)id->n_layers * N_TENSORS_PER_LAYER;
    s->tensors = calloc(n, sizeof *s->tensors);
    s->expected = calloc(n, sizeof *s->expected);
    if (!s->tensors || !s->expected) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    for (int l = 0; l < id->n_layers; l++) {
        for (int kind = 0; kind < N_TENSORS_PER_LAYER; kind++) {
            char name[64], key[80];
            tensor_name(name, sizeof name, l, kind);
            const st_tensor *t = st_find_tensor(s->st, name);
            if (!t)
                return snp_fail(SNP_ERR_FORMAT, "kv-store: %s has no tensor '%s'", s->path, name);
            const uint64_t want[3] = {kind == 2 ? (uint64_t)id->n_query_rows : (uint64_t)id->n_kv_heads,
                                      kind == 2 ? (uint64_t)id->n_heads : (uint64_t)id->n_prefix,
                                      (uint64_t)id->head_dim};
            const dtype want_type = kind == 2 ? DTYPE_F32 : id->kv_type;
            if (t->n_dims != 3 || t->shape[0] != want[0] || t->shape[1] != want[1] ||
                t->shape[2] != want[2] || t->type != want_type)
                return snp_fail(SNP_ERR_FORMAT,
                                "kv-store: %s: tensor '%s' is %d-d [%" PRIu64 ", %" PRIu64
                                ", %" PRIu64 "] %s, expected [%" PRIu64 ", %" PRIu64 ", %" PRIu64
                                "] %s",
                                s->path, name, t->n_dims, t->shape[0], t->shape[1], t->shape[2],
                                dtype_name(t->type), want[0], want[1], want[2],
                                dtype_name(want_type));
            snprintf(key, sizeof key, "xxh3_64.%s", name);
            const char *sum = st_metadata(s->st, key);
            char *end = NULL;
            if (!sum || strlen(sum) != 16 ||
                (s->expected[l * 3 + kind] = strtoull(sum, &end, 16), *end))
                return snp_fail(SNP_ERR_FORMAT, "kv-store: %s: metadata '%s' is not a checksum",
                                s->path, key);
            s->tensors[l * 3 + kind] = t;
        }
    }
    return SNP_OK;
}

static snp_status open_for_reading(kv_store *s) {
    snp_status st = st_open(s->path, &s->st);
    if (st != SNP_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", snp_error());
        return snp_fail(SNP_ERR_FORMAT,
                        "kv-store: %s is not a complete store (truncated, or not written to the "
                        "end?): %s; delete it to rebuild",
                        s->path, why);
    }
    TRY(check_identity(s));
    TRY(read_key_scale(s));
    return bind_tensors(s);
}

// prefetch: asks the kernel to read a layer's pages ahead, so the disk works while
// the previous layer computes.
static void prefetch(const kv_store *s, int layer) {
    if (layer >= s->id.n_layers) return;
    const long page = sysconf(_SC_PAGESIZE);
    for (int kind = 0; kind < N_TENSORS_PER_LAYER; kind++) {
        const st_tensor *t = s->tensors[layer * 3 + kind];
        uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)(page - 1);
        madvise((void *)a, (uintptr_t)t->data + t->n_bytes - a, MADV_WILLNEED);
    }
}

static snp_status verify(const kv_store *s, int layer, int kind) {
    const st_tensor *t = s->tensors[layer * 3 + kind];
    const uint64_t have = XXH3_64bits(t->data, t->n_bytes), want = s->expected[layer * 3 + kind];
    if (have == want) return SNP_OK;
    return snp_fail(SNP_ERR_FORMAT,
                    "kv-store: %s: tensor '%s' fails its checksum (stored %016" PRIx64
                    ", computed %016" PRIx64 "): the file is corrupted; delete it to rebuild",
                    s->path, t->name, want, have);
}

static snp_status load_kv(kv_store *s, int layer, int kind, void *buf, int cap) {
    TRY(verify(s, layer, kind));
    const st_tensor *t = s->tensors[layer * 3 + kind];
    const size_t head_bytes = (size_t)s->id.n_prefix * (size_t)s->id.head_dim * (size_t)s->id.act_bytes;
    const size_t stride = (size_t)cap * (size_t)s->id.head_dim * (size_t)s->id.act_bytes;
    for (int g = 0; g < s->id.n_kv_heads; g++)
        TRY(s->be->ops->upload(s->be->ctx, (char *)buf + (size_t)g * stride,
                               (const char *)t->data + (size_t)g * head_bytes, head_bytes));
    return SNP_OK;
}

// stage_layer: the prefetcher's work for one layer (on its thread): checksums, then
// K and V to the backend's staging buffers, the queries to host staging.
static snp_status stage_layer(void *user, int layer) {
    kv_store *s = user;
    const backend_ops *ops = s->be->ops;
    for (int kind = 0; kind < N_TENSORS_PER_LAYER; kind++) TRY(verify(s, layer, kind));
    prefetch(s, layer + 1); // the disk reads ahead of the next request too
    const st_tensor *const *t = s->tensors + layer * 3;
    TRY(ops->upload_side(s->be->ctx, s->k_stage, t[0]->data, tensor_bytes(&s->id, 0)));
    TRY(ops->upload_side(s->be->ctx, s->v_stage, t[1]->data, tensor_bytes(&s->id, 1)));
    memcpy(s->q_stage, t[2]->data, tensor_bytes(&s->id, 2));
    return SNP_OK;
}

static int prefetch_wanted(const kv_store *s) {
    const char *env = getenv("SNAPTP_KV_STORE_PREFETCH"); // 0: never, 1: also on the CPU
    if (!s->be->ops->upload_side || (env && strcmp(env, "0") == 0)) return 0;
    return !s->be->ops->host_memory || (env && strcmp(env, "1") == 0);
}

static snp_status prefetcher_start(kv_store *s) {
    const backend_ops *ops = s->be->ops;
    void *ctx = s->be->ctx;
    const size_t n_rows = (size_t)s->id.n_kv_heads * (size_t)s->id.n_prefix;
    TRY(ops->alloc(ctx, tensor_bytes(&s->id, 0), &s->k_stage));
    TRY(ops->alloc(ctx, tensor_bytes(&s->id, 1), &s->v_stage));
    void *rows = NULL;
    TRY(ops->alloc(ctx, n_rows * sizeof(int32_t), &rows));
    s->rows = rows;
    int32_t *host_rows = malloc(n_rows * sizeof *host_rows);
    s->q_stage = malloc(tensor_bytes(&s->id, 2));
    if (!host_rows || !s->q_stage) {
        free(host_rows);
        return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory for the prefetcher's staging");
    }
    for (size_t i = 0; i < n_rows; i++) host_rows[i] = (int32_t)(i % (size_t)s->id.n_prefix);
    const snp_status st = ops->upload(ctx, s->rows, host_rows, n_rows * sizeof *host_rows);
    free(host_rows);
    TRY(st);
    return layer_prefetch_start(stage_layer, s, &s->prefetcher);
}

static void prefetcher_free(kv_store *s) {
    layer_prefetch_stop(s->prefetcher); // first: its thread may be copying into the stages
    s->prefetcher = NULL;
    if (!s->be) return;
    s->be->ops->dealloc(s->be->ctx, s->k_stage);
    s->be->ops->dealloc(s->be->ctx, s->v_stage);
    s->be->ops->dealloc(s->be->ctx, s->rows);
    free(s->q_stage);
    s->k_stage = s->v_stage = NULL;
    s->rows = NULL;
    s->q_stage = NULL;
}

// load_prefetched: layer `layer` from the staging buffers into the prefill's
// buffers (a gather on the compute stream), then the next layer is asked for once
// the gather has run (the stages are then free).
static snp_status load_prefetched(kv_store *s, int layer, void *k, void *v, int cap, float *q_tail) {
    const backend_ops *ops = s->be->ops;
    void *ctx = s->be->ctx;
    if (!s->prefetcher) TRY(prefetcher_start(s));
    if (layer > 0) s->stats.layers_prefetched++; // layer 0 is staged here, on this thread
    TRY(layer_prefetch_take(s->prefetcher, layer));
    const int Hkv = s->id.n_kv_heads, D = s->id.head_dim, P = s->id.n_prefix;
    TRY(ops->kv_gather(ctx, k, s->k_stage, s->rows, Hkv, D, P, P, cap, 0));
    TRY(ops->kv_gather(ctx, v, s->v_stage, s->rows, Hkv, D, P, P, cap, 0));
    if (q_tail) memcpy(q_tail, s->q_stage, tensor_bytes(&s->id, 2));
    TRY(ops->sync(ctx));
    if (layer + 1 < s->id.n_layers) TRY(layer_prefetch_request(s->prefetcher, layer + 1));
    return SNP_OK;
}

static snp_status store_load(void *user, int layer, void *k, void *v, int cap, float *q_tail) {
    kv_store *s = user;
    if (!s->st || layer < 0 || layer >= s->id.n_layers)
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: layer %d loaded from a store not open for "
                                          "reading", layer);
    if (cap < s->id.n_prefix)
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: a %d-row buffer for a %d-token prefix", cap,
                        s->id.n_prefix);
    const double t0 = engine_now_s(); // read_s: the time the compute thread waited
    uint64_t n = 2 * tensor_bytes(&s->id, 0);
    if (prefetch_wanted(s)) {
        TRY(load_prefetched(s, layer, k, v, cap, q_tail));
        n += tensor_bytes(&s->id, 2);
    } else {
        prefetch(s, layer + 1);
        TRY(load_kv(s, layer, 0, k, cap));
        TRY(load_kv(s, layer, 1, v, cap));
        if (q_tail) {
            TRY(verify(s, layer, 2));
            memcpy(q_tail, s->tensors[layer * 3 + 2]->data, tensor_bytes(&s->id, 2));
            n += tensor_bytes(&s->id, 2);
        }
    }
    s->stats.bytes_read += n;
    s->stats.read_s += engine_now_s() - t0;
    return SNP_OK;
}

// ---- opening, committing, closing -------------------------------------------------

static snp_status make_dir(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return snp_fail(SNP_ERR_ARGUMENT, "kv-store: directory name too long");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return snp_fail(SNP_ERR_IO, "kv-store: cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot create %s: %s", buf, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return snp_fail(SNP_ERR_IO, "kv-store: %s is not a directory", dir);
    return SNP_OK;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

// check_rank_count: a file of a job with another rank count in dir (rank-R-of-N for
// N != size) means the directory belongs to that job.
static snp_status check_rank_count(const char *dir, int size) {
    DIR *d = opendir(dir);
    if (!d) return snp_fail(SNP_ERR_IO, "kv-store: cannot list %s: %s", dir, strerror(errno));
    const struct dirent *e;
    snp_status st = SNP_OK;
    while ((e = readdir(d))) {
        int r, n, used = 0;
        if (sscanf(e->d_name, "rank-%d-of-%d.safetensors%n", &r, &n, &used) == 2 &&
            e->d_name[used] == '\0' && n != size) {
            st = snp_fail(SNP_ERR_ARGUMENT,
                          "kv-store: %s/%s was written by a job of %d ranks; this job has %d: "
                          "the store is per rank, so use another --kv-store directory for "
                          "this job",
                          dir, e->d_name, n, size);
            break;
        }
    }
    closedir(d);
    return st;
}

static snp_status check_space(const kv_store *s) {
    struct statvfs vf;
    if (statvfs(s->dir, &vf) != 0)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot stat the filesystem of %s: %s", s->dir,
                        strerror(errno));
    const uint64_t avail = (uint64_t)vf.f_bavail * (uint64_t)vf.f_frsize;
    const int local = s->comm ? comm_local_size(s->comm) : 1;
    const uint64_t mine = kv_store_data_bytes(s->id.n_layers, s->id.n_heads, s->id.n_kv_heads,
                                              s->id.head_dim, s->id.act_bytes, s->id.n_prefix);
    // The ranks of this host may share the filesystem: all of their files must fit.
    const uint64_t need = mine * (uint64_t)(local > 0 ? local : 1);
    if (need <= avail) return SNP_OK;
    return snp_fail(SNP_ERR_IO,
                    "kv-store: %s has %.1f MiB free; the store needs %.1f MiB per rank (%d "
                    "rank%s on this host, %.1f MiB): free space or use another --kv-store "
                    "directory",
                    s->dir, avail / 1048576.0, mine / 1048576.0, local, local == 1 ? "" : "s",
                    need / 1048576.0);
}

static snp_status begin_write(kv_store *s) {
    TRY(check_space(s));
    char name[96];
    snprintf(name, sizeof name, ".rank-%d-of-%d.safetensors.tmp.%ld", s->id.tp_rank,
             s->id.tp_size, (long)getpid());
    if (!(s->tmp_path = join(s->dir, name))) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    s->fd = open(s->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot create %s: %s", s->tmp_path, strerror(errno));
    const size_t n = (size_t)s->id.n_layers * N_TENSORS_PER_LAYER;
    if (!(s->checksums = calloc(n, sizeof *s->checksums)))
        return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    s->writing = 1;
    return write_header(s, NULL);
}

// take_lock: rank 0 serialises jobs on one directory; a job that finds it held waits
// (and says so) rather than writing a second copy of the same store.
static snp_status take_lock(kv_store *s) {
    char *path = join(s->dir, KV_STORE_LOCK_NAME);
    if (!path) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        snp_status st = snp_fail(SNP_ERR_IO, "kv-store: cannot create %s: %s", path, strerror(errno));
        free(path);
        return st;
    }
    free(path);
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0) return SNP_OK;
    fprintf(stderr, "kv-store: %s is being written by another snaptp; waiting for it\n", s->dir);
    while (flock(s->lock_fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return snp_fail(SNP_ERR_IO, "kv-store: cannot lock %s: %s", s->dir, strerror(errno));
    return SNP_OK;
}

static void release_lock(kv_store *s) {
    if (s->lock_fd >= 0) close(s->lock_fd); // closing drops the flock
    s->lock_fd = -1;
}

// all_ranks_count: the number of ranks for which `flag` is 1 (a sum over the job).
static snp_status all_ranks_count(kv_store *s, int flag, int *out) {
    float v = (float)flag;
    if (s->comm && comm_size(s->comm) > 1) TRY(comm_all_reduce_sum_f32(s->comm, &v, 1));
    *out = (int)(v + 0.5f);
    return SNP_OK;
}

static snp_status barrier(kv_store *s) {
    return s->comm && comm_size(s->comm) > 1 ? comm_barrier(s->comm) : SNP_OK;
}

snp_status kv_store_open(const char *dir, const kv_store_identity *id, backend *be, comm *c,
                         int temporary, kv_store **out) {
    *out = NULL;
    kv_store *s = calloc(1, sizeof *s);
    if (!s) return snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
    s->id = *id;
    s->be = be;
    s->comm = c;
    s->temporary = temporary;
    s->fd = s->lock_fd = -1;
    s->key_scale = 1.0f;
    snp_status st = SNP_OK;
    char name[64];
    snprintf(name, sizeof name, "rank-%d-of-%d.safetensors", id->tp_rank, id->tp_size);
    if (!(s->dir = strdup(dir)) || !(s->path = join(dir, name))) {
        st = snp_fail(SNP_ERR_MEMORY, "kv-store: out of memory");
        goto fail;
    }
    s->stats.path = s->path;
    TRY_GOTO(st, make_dir(dir), fail);
    const int rank = c ? comm_rank(c) : 0, size = c ? comm_size(c) : 1;
    if (rank == 0) TRY_GOTO(st, take_lock(s), fail);
    TRY_GOTO(st, barrier(s), fail); // the others wait until rank 0 holds the lock
    TRY_GOTO(st, check_rank_count(dir, id->tp_size), fail);
    const int present = access(s->path, F_OK) == 0;
    int n_present = 0;
    TRY_GOTO(st, all_ranks_count(s, present, &n_present), fail);
    if (n_present != 0 && n_present != size) {
        st = snp_fail(SNP_ERR_FORMAT,
                      "kv-store: %s holds the files of %d of this job's %d ranks (this rank's "
                      "%s is %s): a store is used whole or not at all; delete the directory to "
                      "rebuild it",
                      dir, n_present, size, name, present ? "there" : "missing");
        goto fail;
    }
    if (present) TRY_GOTO(st, open_for_reading(s), fail);
    else TRY_GOTO(st, begin_write(s), fail);
    TRY_GOTO(st, barrier(s), fail);
    s->stats.writing = s->writing;
    if (!s->writing) release_lock(s); // every rank has mapped its file
    *out = s;
    return SNP_OK;
fail:
    kv_store_close(s);
    return st;
}

void kv_store_prefix(kv_store *s, forward_prefix *out) {
    *out = (forward_prefix){
        .n_tokens = s->id.n_prefix,
        .n_query_rows = s->id.n_query_rows,
        .loaded = !s->writing,
        .save = store_save,
        .load = store_load,
        .key_scale = s->key_scale,
        .user = s,
    };
}

snp_status kv_store_commit(kv_store *s) {
    if (!s->writing) return SNP_OK;
    if (s->layers_saved != s->id.n_layers)
        return snp_fail(SNP_ERR_INTERNAL, "kv-store: %s: commit after %d of %d layers",
                        s->tmp_path, s->layers_saved, s->id.n_layers);
    const double t0 = engine_now_s();
    TRY(write_header(s, s->checksums));
    if (fsync(s->fd) != 0)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot sync %s: %s", s->tmp_path, strerror(errno));
    close(s->fd);
    s->fd = -1;
    if (rename(s->tmp_path, s->path) != 0)
        return snp_fail(SNP_ERR_IO, "kv-store: cannot rename %s to %s: %s", s->tmp_path, s->path,
                        strerror(errno));
    free(s->tmp_path);
    s->tmp_path = NULL;
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { // the rename itself must survive a crash too
        fsync(dfd);
        close(dfd);
    }
    s->writing = 0;
    s->stats.writing = 0;
    s->stats.write_s += engine_now_s() - t0;
    // Read back what this rank wrote, checked as any later run would check it.
    TRY(open_for_reading(s));
    TRY(barrier(s));
    release_lock(s);
    return SNP_OK;
}

void kv_store_get_stats(const kv_store *s, kv_store_stats *out) { *out = s->stats; }

void kv_store_close(kv_store *s) {
    if (!s) return;
    prefetcher_free(s); // before the mapping its thread reads goes away
    if (s->fd >= 0) close(s->fd);
    if (s->tmp_path) unlink(s->tmp_path); // an unfinished write is never published
    st_close(s->st);
    if (s->temporary && s->path) {
        unlink(s->path);
        if (s->lock_fd >= 0 || (s->comm ? comm_rank(s->comm) : 0) == 0) {
            char *lock = join(s->dir, KV_STORE_LOCK_NAME);
            if (lock) unlink(lock);
            free(lock);
        }
        rmdir(s->dir);
    }
    release_lock(s);
    free(s->tensors);
    free(s->expected);
    free(s->checksums);
    free(s->stage);
    free(s->tmp_path);
    free(s->path);
    free(s->dir);
    free(s);
}
