// sampler: picks the next token from fp32 logits on the host: repetition penalty,
// then temperature, top-k, top-p, and a seeded draw (temperature 0 is greedy).
// The order is llama.cpp's and HF's; the random stream is snaptp's own (PCG32).
#ifndef SNAPTP_SAMPLER_H
#define SNAPTP_SAMPLER_H

#include <stdint.h>

#include "status.h"

typedef struct sampler_params {
    float temperature;        // 0: greedy (argmax, lowest id on ties)
    int top_k;                // 0: off
    float top_p;              // 1: off
    float repetition_penalty; // 1: off; HF's rule: logit > 0 divided, < 0 multiplied
    int repetition_window;    // last n tokens penalized; 0: all seen
    uint64_t seed;
} sampler_params;

typedef struct sampler sampler;

// sampler_params_default: greedy, no penalty, seed 0.
sampler_params sampler_params_default(void);

// sampler_init: checks the parameters (temperature >= 0, 0 < top_p <= 1, top_k >= 0,
// penalty > 0) naming the one at fault, and sizes scratch for n_vocab.
snp_status sampler_init(const sampler_params *p, int n_vocab, sampler **out);
void sampler_free(sampler *s); // NULL is a no-op

// sampler_sample: the next token for `logits` [n_vocab] (modified in place by the
// penalty), given the tokens seen so far (prompt and generated).
snp_status sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history,
                          int32_t *out_token);

// sampler_argmax: index of the largest logit, lowest on ties.
int32_t sampler_argmax(const float *logits, int n);

#endif
