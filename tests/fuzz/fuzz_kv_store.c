// fuzz_kv_store: the KV store's reading side (runtime/kv_store.c: its safetensors
// header, the identity metadata, tensor shapes and checksums) on arbitrary bytes as
// this rank's rank-0-of-1.safetensors, with a fixed identity (2 layers, 2 query
// heads, 1 KV head, D 4, a 3-token prefix, F32). A store it accepts is then read
// back layer by layer into CPU buffers, checksums and all.
//
// With SNAPTP_FUZZ_WRITE_SEED=DIR in the environment it instead writes a valid store
// for that identity to DIR/rank-0-of-1.safetensors (the seed tests/fuzz/make_seeds.sh
// commits), through kv_store's own writer.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "kernels/backend.h"
#include "runtime/kv_store.h"

enum { L = 2, H = 2, HKV = 1, D = 4, N_PREFIX = 3 };

static kv_store_identity identity(void) {
    kv_store_identity id = {.dtype = "F32",
                            .kv_type = DTYPE_F32,
                            .act_bytes = 4,
                            .tp_size = 1,
                            .tp_rank = 0,
                            .n_layers = L,
                            .n_heads = H,
                            .n_kv_heads = HKV,
                            .head_dim = D,
                            .kv_head_first = 0,
                            .n_prefix = N_PREFIX,
                            .n_query_rows = N_PREFIX};
    snprintf(id.model, sizeof id.model, "1234:fuzz-model");
    snprintf(id.tokenizer, sizeof id.tokenizer, "fuzz-tokenizer");
    snprintf(id.prefix, sizeof id.prefix, "fuzz-prefix");
    return id;
}

static backend *cpu(void) {
    static backend *be;
    const backend_options opt = {.n_threads = 1};
    if (!be && backend_open("cpu", &opt, &be) != SNP_OK) {
        fprintf(stderr, "fuzz_kv_store: %s\n", snp_error());
        abort();
    }
    return be;
}

static void write_seed(const char *dir) {
    const kv_store_identity id = identity();
    kv_store *s = NULL;
    forward_prefix p;
    float k[HKV * N_PREFIX * D], v[HKV * N_PREFIX * D], q[N_PREFIX * H * D];
    for (int i = 0; i < HKV * N_PREFIX * D; i++)
        k[i] = (float)i, v[i] = -(float)i;
    for (int i = 0; i < N_PREFIX * H * D; i++)
        q[i] = 0.5f * (float)i;
    if (kv_store_open(dir, &id, cpu(), NULL, 0, &s) != SNP_OK) goto fail;
    kv_store_prefix(s, &p);
    for (int l = 0; l < L; l++)
        if (p.save(p.user, l, k, v, N_PREFIX, q, 1.0f) != SNP_OK) goto fail;
    if (kv_store_commit(s) != SNP_OK) goto fail;
    kv_store_close(s);
    exit(0);
fail:
    fprintf(stderr, "fuzz_kv_store: writing the seed store in %s: %s\n", dir, snp_error());
    exit(1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *seed_dir = getenv("SNAPTP_FUZZ_WRITE_SEED");
    if (seed_dir) write_seed(seed_dir);
    const kv_store_identity id = identity();
    fuzz_file("rank-0-of-1.safetensors", data, size);
    kv_store *s = NULL;
    if (kv_store_open(fuzz_dir(), &id, cpu(), NULL, 0, &s) != SNP_OK) return 0;
    forward_prefix p;
    kv_store_prefix(s, &p);
    float k[HKV * N_PREFIX * D], v[HKV * N_PREFIX * D], q[N_PREFIX * H * D];
    for (int l = 0; p.loaded && l < L; l++)
        if (p.load(p.user, l, k, v, N_PREFIX, q) != SNP_OK) break;
    kv_store_close(s);
    return 0;
}
