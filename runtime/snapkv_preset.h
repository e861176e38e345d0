// snapkv_preset: SnapKV settings measured for particular models, matched by the
// model's architecture and shape (not by a file name or GGUF key, so a GGUF, a
// safetensors checkpoint and a re-quantization of one model all get them). A field
// a config or flag sets wins over the preset; a field neither sets takes the
// preset's value, else snaptp's default (snapkv_params_default).
#ifndef SNAPTP_SNAPKV_PRESET_H
#define SNAPTP_SNAPKV_PRESET_H

#include "model_config.h"
#include "snapkv.h"

typedef struct snapkv_preset {
    const char *name; // the model family and size, e.g. "SmolLM2-135M"
    model_arch arch;
    int n_layers, n_embd, n_heads, n_kv_heads;
    int window, budget, kernel; // 0: snaptp's default
    const char *why;            // the measurement behind it
} snapkv_preset;

// snapkv_preset_match: the preset for this model's shape, or NULL.
const snapkv_preset *snapkv_preset_match(const model_config *c);

// snapkv_params_fill: sets each of window, budget and kernel that is 0 in *p (not
// given) from the model's preset, else the default; returns the preset used for at
// least one of them, or NULL. The pooling is left as it is.
const snapkv_preset *snapkv_params_fill(snapkv_params *p, const model_config *c);

#endif
