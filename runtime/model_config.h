// model_config: the hyperparameters of a decoder-only transformer, read from GGUF
// metadata or a Hugging Face config.json. It decides which architectures snaptp
// runs and rejects the rest naming the field; it loads no weights.
#ifndef SNAPTP_MODEL_CONFIG_H
#define SNAPTP_MODEL_CONFIG_H

#include "../kernels/backend.h"
#include "gguf.h"
#include "status.h"

typedef enum model_arch {
    MODEL_ARCH_LLAMA,   // Llama 2/3, SmolLM2
    MODEL_ARCH_MISTRAL, // Llama layout; sliding window unsupported beyond the prompt
    MODEL_ARCH_QWEN2,   // q/k/v bias
    MODEL_ARCH_QWEN3,   // q/k RMSNorm per head, head_dim decoupled from hidden
    MODEL_ARCH_GLM,     // GLM-4 (HF "glm", GGUF "chatglm"): partial rotary on adjacent pairs,
                        // q/k/v bias, fused gate_up MLP
    MODEL_ARCH_GLM4,    // GLM-4-0414 (HF and GGUF "glm4"): GLM plus post-attention and
                        // post-MLP RMSNorms on each block's output
    MODEL_ARCH_COUNT
} model_arch;

typedef enum rope_scaling {
    ROPE_SCALING_NONE,
    ROPE_SCALING_LLAMA3,  // per-band frequency division (Llama 3.1+)
    ROPE_SCALING_YARN,    // per-dimension ramp + attention temperature on cos/sin
    ROPE_SCALING_DYNAMIC, // dynamic NTK: the base grows with the sequence length
    ROPE_SCALING_COUNT
} rope_scaling;

typedef struct model_config {
    model_arch arch;
    int n_layers;
    int n_embd;     // C
    int n_heads;    // H
    int n_kv_heads; // Hkv
    int head_dim;   // D
    int rope_dims;  // dims of each head that rotate (D, or D x partial_rotary_factor)
    int n_ff;       // MLP inner width
    int n_vocab;    // V
    int n_ctx;      // context the model was trained for
    float rms_eps;
    float rope_theta;
    rope_mode rope_mode;
    rope_scaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    // llama3, yarn: the pretraining context (rope_scaling.original_max_position_embeddings);
    // dynamic: max_position_embeddings, the length past which HF starts growing the base.
    int rope_original_ctx;
    float rope_beta_fast, rope_beta_slow; // yarn ramp bounds, in rotations
    int rope_yarn_truncate;               // yarn: round the ramp bounds to whole dims
    float rope_attn_scale;                // multiplies cos and sin (yarn mscale); else 1
    int tied_embeddings;                  // LM head reads the token embedding table
    int qkv_bias;
    int qk_norm;
    int post_norms;     // GLM-4-0414: RMSNorm of the attention and MLP outputs before the residual
    int ffn_fused;      // GLM: gate and up are one [2F, C] tensor (gate rows first)
    int sliding_window; // 0 if none
    // Dual Chunk Attention (Qwen2.5-1M's dual_chunk_attention_config; README, "Dual
    // Chunk Attention"): chunks of dca_chunk_size - dca_local_size positions; 0: none.
    int dca_chunk_size, dca_local_size;
    int dca_original_ctx; // its length scaling's pretraining context; 0: no scaling
} model_config;

const char *model_arch_name(model_arch a);

// model_config_from_gguf: reads `<arch>.*` keys. Fails naming the key when one is
// missing or out of range, and names general.architecture when it is unsupported.
snp_status model_config_from_gguf(const gguf_file *f, model_config *out);

// model_config_from_json: reads a Hugging Face config.json.
snp_status model_config_from_json(const char *path, model_config *out);

// model_config_validate: cross-field checks (H % Hkv, even D, positive sizes).
snp_status model_config_validate(const model_config *c, const char *source);

// model_config_inv_freq: RoPE inverse frequencies [rope_dims/2] as HF computes them in
// fp32 at load, with llama3 or yarn scaling applied when the config asks for it.
// For dynamic NTK this is the set for sequences up to rope_original_ctx.
void model_config_inv_freq(const model_config *c, float *inv_freq);

// model_config_inv_freq_at: the inverse frequencies HF uses for a forward call whose
// largest position is seq_len - 1. Only dynamic NTK depends on seq_len: HF's
// dynamic_rope_update recomputes the base from max(seq_len, max_position_embeddings)
// when a call's sequence grows past what it has cached; a fresh model that runs a
// prompt then decodes token by token therefore uses inv_freq_at(L) for the whole
// prompt and inv_freq_at(p + 1) for the token at position p. Other types: as
// model_config_inv_freq.
void model_config_inv_freq_at(const model_config *c, int seq_len, float *inv_freq);

// model_config_rope_name: "none", "llama3", "yarn", "dynamic".
const char *model_config_rope_name(rope_scaling s);

// model_config_dca_chunk_len: the positions of one Dual Chunk Attention chunk
// (chunk_size - local_size, vLLM's chunk_len); 0 for a model without DCA.
int model_config_dca_chunk_len(const model_config *c);

// model_config_dca_scale: DCA's length scaling for a sequence of seq_len tokens,
// max(1, 0.1 ln(seq_len / original) + 1) (1 without an original context), by which
// vLLM multiplies a key as it is cached and the query of the call that attends.
float model_config_dca_scale(const model_config *c, int seq_len);

#endif
