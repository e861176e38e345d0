// kv_store: the per-rank file of a document prefix's full K/V (DESIGN.md, "Many
// questions, one document"). The first question writes it layer by layer as its
// prefill makes each layer; later questions read it back instead of prefilling the
// document again, then run only their own tokens and SnapKV with their own window.
// One safetensors file per rank holding only that rank's heads, with metadata naming
// what made it. forward.c never sees the file, only the forward_prefix callbacks.
#ifndef SNAPTP_KV_STORE_H
#define SNAPTP_KV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "model.h"
#include "status.h"
#include "tokenizer.h"

// What a store must match to be used: the files that made it and the prompt prefix.
typedef struct kv_store_identity {
    char model[64];     // kv_store_fingerprint_model of the checkpoint
    char tokenizer[40]; // kv_store_fingerprint_tokenizer
    char prefix[40];    // kv_store_hash_ids of the prefix's token ids
    const char *dtype;  // "F32", "F16" or "BF16": the backend's KV cache type, stored as it is
    dtype kv_type;      // the same as an enum
    int act_bytes;      // bytes of one stored K/V element: 4 or 2
    int tp_size, tp_rank;
    int n_layers, n_heads, n_kv_heads, head_dim; // this rank's heads
    int kv_head_first;  // the first (global) KV head this rank holds
    int n_prefix;       // document tokens, at positions 0 .. n_prefix - 1
    int n_query_rows;   // queries of the prefix's last tokens kept per layer
} kv_store_identity;

// kv_store_fingerprint_model: "<bytes>:<xxh3-128>" over the checkpoint's files (a
// GGUF, or a directory's config.json and safetensors shards): each file's name, size
// and first MiB, which hold its header. Fails naming a file it cannot read.
snp_status kv_store_fingerprint_model(const char *path, char out[64]);

// kv_store_fingerprint_tokenizer: xxh3-128 over the vocabulary (every id's bytes and
// special flag), BOS/EOS and the chat template.
void kv_store_fingerprint_tokenizer(const tokenizer *t, char out[40]);

// kv_store_hash_ids: xxh3-128 of n token ids.
void kv_store_hash_ids(const int32_t *ids, size_t n, char out[40]);

// kv_store_identity_make: the identity of `m` (loaded from model_path, this rank's
// shard) with tokenizer `t` for a prompt prefix of n_prefix ids. t may be NULL for
// ids that no tokenizer made (tests): the fingerprint is then "none".
snp_status kv_store_identity_make(const char *model_path, const model *m, const tokenizer *t,
                                  const int32_t *prefix_ids, int n_prefix,
                                  kv_store_identity *out);

// kv_store_data_bytes: the bytes of tensor data in one rank's store (its file adds a
// header of a few KiB): per layer K and V [Hkv, n_prefix, D] in the activation type and
// the query tail [min(n_prefix, FORWARD_PREFIX_QUERY_ROWS), H, D] fp32.
uint64_t kv_store_data_bytes(int n_layers, int n_heads, int n_kv_heads, int head_dim,
                             int act_bytes, int n_prefix);

typedef struct kv_store kv_store;
struct comm;

typedef struct kv_store_stats {
    const char *path; // this rank's file
    int writing;      // 1 until kv_store_commit: this run writes the store
    uint64_t bytes_written, bytes_read;
    double write_s, read_s; // in save / load calls (checksums and copies included; with
                            // the prefetcher, only the time the compute thread waited)
    int layers_prefetched;  // layers the prefetcher's thread had staged before they were due
} kv_store_stats;

// kv_store_open: this rank's store in `dir` (made if missing) for `id`. Collective
// over `c` (NULL: one rank): every rank's file present and matching: read mode. No
// rank's file present: write mode, into a temporary file that kv_store_commit
// publishes. Anything else fails naming the file and what differs: another model,
// tokenizer, document, tp size or rank count; a truncated or corrupted file; some
// ranks' files missing; `dir` unwritable or too small for the store. Rank 0 holds a
// lock on `dir` from here to the end of the write, so a second job waits, then reads
// what the first wrote. `temporary`: the store is this process's own and is removed by
// kv_store_close (several questions without --kv-store).
// K/V move between the store and buffers of `be` (borrowed).
snp_status kv_store_open(const char *dir, const kv_store_identity *id, backend *be,
                         struct comm *c, int temporary, kv_store **out);

// kv_store_prefix: the forward_prefix of the store: saving (write mode) or loaded.
void kv_store_prefix(kv_store *s, forward_prefix *out);

// kv_store_commit: after a prefill saved every layer: writes the checksums, syncs and
// renames the file into place, and reopens it in read mode. Collective over the
// communicator given to kv_store_open. A no-op in read mode.
snp_status kv_store_commit(kv_store *s);

void kv_store_get_stats(const kv_store *s, kv_store_stats *out);

// kv_store_close: unmaps, drops an uncommitted temporary file, releases the lock;
// removes a temporary store's files. NULL is a no-op.
void kv_store_close(kv_store *s);

#endif
