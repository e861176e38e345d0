// model: a transformer's weights resident on a backend, for one tensor-parallel
// shard, plus its config. Loading (model_load.c) maps names and shapes of GGUF and
// safetensors checkpoints; the forward pass lives in forward.c.
#ifndef SNAPTP_MODEL_H
#define SNAPTP_MODEL_H

#include <stdint.h>

#include "../kernels/backend.h"
#include "model_config.h"
#include "status.h"

typedef struct layer_weights {
    bk_weight *attn_norm;       // [C]
    bk_weight *wq, *wk, *wv;    // [Hl*D, C], [Hkvl*D, C], [Hkvl*D, C]  (column-parallel)
    bk_weight *bq, *bk, *bv;    // biases or NULL
    bk_weight *q_norm, *k_norm; // [D] or NULL (Qwen3)
    bk_weight *wo;              // [C, Hl*D]  (row-parallel)
    bk_weight *ffn_norm;        // [C]
    bk_weight *w_gate, *w_up;   // [Fl, C]  (column-parallel)
    bk_weight *w_down;          // [C, Fl]  (row-parallel)
    // GLM-4-0414: RMSNorm of the (all-reduced) attention and MLP outputs before each
    // residual add; NULL for every other architecture.
    bk_weight *post_attn_norm, *post_ffn_norm; // [C]
} layer_weights;

// Which slice of the model this rank holds. tp_size == 1 is the whole model.
typedef struct model_shard {
    int tp_rank, tp_size;
} model_shard;

typedef struct model {
    model_config cfg;
    model_shard shard;
    int n_heads_local;    // Hl: query heads on this rank
    int n_kv_heads_local; // Hkvl: KV heads on this rank
    int n_ff_local;       // Fl
    backend *be;          // borrowed
    bk_weight *tok_embd;  // [V, C]
    bk_weight *output_norm;
    bk_weight *output;    // [V, C]; == tok_embd when embeddings are tied
    layer_weights *layers;
    float *inv_freq;      // [D/2], host: the frequencies at load
    float *inv_freq_step; // [D/2], host: dynamic NTK's set for inv_freq_step_len
    int inv_freq_step_len; // the sequence length inv_freq_step was made for (0: none)
    uint64_t weight_bytes; // bytes of the checkpoint tensors this rank loaded
    uint64_t weight_elems; // their elements (a bf16 backend stores 2 bytes each)
    char *path;
    // The checkpoint stays open (mapped) while the model lives when the backend works
    // in host memory: its weights may point into the mapping (weight_src.persistent).
    struct checkpoint *mapped;
} model;

// model_load: opens `path` (a .gguf file, or a directory / config.json of a
// safetensors checkpoint), reads the config and loads this shard's weights into
// `be`. Fails naming the file and tensor for a missing tensor, a wrong shape or
// an unsupported dtype.
snp_status model_load(const char *path, backend *be, const model_shard *shard, model **out);
void model_free(model *m); // NULL is a no-op

// model_rope_params: the rope parameters of a forward call over a sequence of seq_len
// tokens (its largest position + 1): the load-time frequencies and YaRN's cos/sin
// scale, or for dynamic NTK the frequencies HF recomputes for that length
// (model_config_inv_freq_at), kept in m->inv_freq_step until the length changes.
// One forward at a time per model: the set it points to is the model's.
rope_params model_rope_params(model *m, int seq_len);

// model_plan_weights: the config and the bytes of this shard's weights as a
// backend stores them, without loading anything (for the memory plan): the
// checkpoint's own bytes when act_bytes is 4 (the CPU keeps its formats), two
// bytes per element when it is 2 (CUDA converts every weight to bf16).
snp_status model_plan_weights(const char *path, const model_shard *shard, size_t act_bytes,
                              model_config *cfg, uint64_t *out_bytes);

// model_path_check: `path` is a GGUF file (by its magic), a directory, a .json or a
// .safetensors file; anything else (a text file, /dev/null) fails saying so, before a
// reader reports it as malformed JSON.
snp_status model_path_check(const char *path);

// model_read_config: only the config of the checkpoint at `path` (no weights).
snp_status model_read_config(const char *path, model_config *out);

#endif
