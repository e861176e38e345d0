// forward: the transformer forward pass, written once against the backend op
// table. Layer-major and chunked (DESIGN.md, "Long prefill"): for each layer, the
// prompt's chunks run through attention and MLP before the next layer starts, so
// only the hidden states [T, C] and one chunk's workspace are live across layers.
#ifndef SNAPTP_FORWARD_H
#define SNAPTP_FORWARD_H

#include <stdint.h>

#include "kv_cache.h"
#include "model.h"
#include "snapkv.h"
#include "status.h"

// Called after each (layer, chunk) of a forward call; may be NULL.
typedef void (*forward_progress_fn)(void *user, int layer, int n_layers, int chunk, int n_chunks,
                                    int n_tokens);

typedef struct forward_ctx forward_ctx;

// forward_init: workspace for calls of up to `chunk` tokens per step.
snp_status forward_init(model *m, int chunk, forward_ctx **out);
void forward_free(forward_ctx *f); // NULL is a no-op

void forward_set_progress(forward_ctx *f, forward_progress_fn fn, void *user);

struct comm;
// forward_set_comm: the communicator of a tensor-parallel run (NULL: tp = 1). The
// model must have been loaded with the matching shard. Collective: when tp > KV
// heads it splits off the ranks that replicate each KV head (for SnapKV's votes).
snp_status forward_set_comm(forward_ctx *f, struct comm *c);

// How a rank joins the partial sums of its row-parallel projections (what --json
// reports as "allreduce_path"); the model's all_reduce takes exactly this path:
//   NONE            one rank (tp = 1, or no communicator): nothing crosses ranks
//   MPI             host-memory backend (CPU): MPI sums the buffers in place
//   MPI_HOST_STAGED device backend without device collectives: each buffer is
//                   copied to the host, summed by MPI in fp32, and copied back
//   NCCL            device backend with NCCL up: summed on the device, in stream order
typedef enum forward_reduce_path {
    FORWARD_REDUCE_NONE,
    FORWARD_REDUCE_MPI,
    FORWARD_REDUCE_MPI_HOST_STAGED,
    FORWARD_REDUCE_NCCL,
    FORWARD_REDUCE_PATH_COUNT
} forward_reduce_path;

// forward_reduce_path_for: the path for backend be and communicator c (NULL: tp = 1).
forward_reduce_path forward_reduce_path_for(const backend *be, const struct comm *c);

// forward_reduce_path_name: "none", "mpi", "mpi-host-staged", "nccl".
const char *forward_reduce_path_name(forward_reduce_path p);

// forward_run: runs tokens ids[0..T) at positions pos0.. through the model,
// appending their K/V to `kv` (rows kv->n_keys..). Writes fp32 logits to the host
// array `logits`: [T, V] when logits_all, else [1, V] for the last token.
// Fails when the cache has no room or an id is out of the vocabulary.
snp_status forward_run(forward_ctx *f, kv_cache *kv, const int32_t *ids, int T, int pos0,
                       int logits_all, float *logits);

// The queries of a document prefix's last tokens that a store keeps per layer, so a
// later question's SnapKV window may reach back this far into the document.
enum { FORWARD_PREFIX_QUERY_ROWS = 256 };

// How far Dual Chunk Attention's length scaling of a prompt served by a stored
// document may be from the scaling of the prompt that wrote it (relative): the
// document's rows were computed under the writer's scale, so a loaded document
// gives a fresh run's numbers only when the two agree; within this bound (at 1M
// tokens: prompts within about 1% of the writer's length) it is served with its
// keys rescaled, past it refused. README, "Dual Chunk Attention".
#define FORWARD_STORE_SCALE_TOL 1e-3

// forward_prefix: the document prefix of a prompt, rows [0, n_tokens), shared by
// several questions (DESIGN.md, "Many questions, one document"). Chunks never
// straddle n_tokens, so the question's rows are computed by the same operations
// whether the prefix was run or loaded, and give the same numbers.
// - loaded == 0: the prefix is run; `save` (may be NULL) gets each layer as soon as
//   its rows [0, n_tokens) are final: k, v backend memory [Hkv, cap, D], and q_tail
//   host fp32 [n_query_rows, H, D], the queries of the prefix's last n_query_rows
//   tokens after RoPE (what a later SnapKV window needs of the document), and
//   key_scale, the factor the keys carry (Dual Chunk Attention's length scaling of
//   the prompt that ran them; 1 for every other model).
// - loaded == 1: `load` fills rows [0, n_tokens) of k and v and, when q_tail is not
//   NULL, the same queries; key_scale is the factor the stored keys carry, which
//   the prefill brings to its own prompt's (FORWARD_STORE_SCALE_TOL). ids[0,
//   n_tokens) are not run.
// Layers are saved and loaded in order 0, 1, ...
typedef struct forward_prefix {
    int n_tokens;
    int n_query_rows; // min(n_tokens, FORWARD_PREFIX_QUERY_ROWS)
    int loaded;
    snp_status (*save)(void *user, int layer, const void *k, const void *v, int cap,
                       const float *q_tail, float key_scale);
    snp_status (*load)(void *user, int layer, void *k, void *v, int cap, float *q_tail);
    float key_scale; // loaded: the factor the stored keys carry (0 reads as 1)
    void *user;
} forward_prefix;

// forward_prefill: the layer-major prefill of a whole prompt of L tokens (positions
// 0..L-1) into the empty cache `kv`. p == NULL: the full policy, every row kept.
// Else SnapKV: each layer's K/V go to a full-length buffer reused by every layer,
// and after the layer's last chunk SnapKV keeps snapkv_rows_kept(p, L) rows per KV
// head in `kv`; `selected` (host, may be NULL) receives the kept positions
// [n_layers, Hkv, rows_kept]. `prefix` may be NULL (no document prefix). Writes the
// last token's logits [V].
snp_status forward_prefill(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                           const snapkv_params *p, const forward_prefix *prefix,
                           int32_t *selected, float *logits);

// forward_prefill_job: forward_prefill cut at layer boundaries, so that a server can
// run one layer of a pending prompt between decode steps of its running batch
// (DESIGN.md, "Serving"). begin checks the request and allocates the job's own
// hidden states [L, C] (and, for SnapKV, the one-layer full K/V and the vote
// workspace); each step runs the next layer's chunks and compression; the step of
// the last layer also writes the last token's logits [V] and sets *done. The chunk
// workspace of f is shared with other calls on f, which may run between steps.
// ids, kv, prefix and selected must outlive the job. forward_prefill is begin, the
// steps back to back, and free: the numbers are the same either way.
typedef struct forward_prefill_job forward_prefill_job;
snp_status forward_prefill_begin(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                                 const snapkv_params *p, const forward_prefix *prefix,
                                 int32_t *selected, forward_prefill_job **out);
snp_status forward_prefill_step(forward_prefill_job *j, float *logits, int *done);
int forward_prefill_layers_done(const forward_prefill_job *j);
void forward_prefill_job_free(forward_prefill_job *j); // NULL is a no-op

// forward_prefill_snapkv: forward_prefill with SnapKV and no document prefix.
snp_status forward_prefill_snapkv(forward_ctx *f, kv_cache *kv, const int32_t *ids, int L,
                                  const snapkv_params *p, int32_t *selected, float *logits);

// forward_decode_batch: one decode step for B sequences at once, token ids[b] at
// position pos[b] appended to kvs[b]; logits [B, V] on the host. B <= chunk.
snp_status forward_decode_batch(forward_ctx *f, kv_cache *const *kvs, const int32_t *ids,
                                const int32_t *pos, int B, float *logits);

#endif
