// sampler: next-token selection on the host.
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct candidate {
    float logit;
    int32_t id;
} candidate;

struct sampler {
    sampler_params p;
    int n_vocab;
    candidate *cand;  // [n_vocab]
    uint8_t *seen;    // [n_vocab] repetition-penalty marks
    uint64_t rng_state, rng_inc;
};

sampler_params sampler_params_default(void) {
    return (sampler_params){.temperature = 0.0f,
                            .top_k = 0,
                            .top_p = 1.0f,
                            .repetition_penalty = 1.0f,
                            .repetition_window = 64,
                            .seed = 0};
}

// PCG32 (O'Neill): small, fast and reproducible across platforms.
static uint32_t pcg32(sampler *s) {
    uint64_t old = s->rng_state;
    s->rng_state = old * 6364136223846793005ull + s->rng_inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

static float uniform01(sampler *s) { return (float)(pcg32(s) >> 8) * 0x1p-24f; }

snp_status sampler_init(const sampler_params *p, int n_vocab, sampler **out) {
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return snp_fail(SNP_ERR_ARGUMENT, "sampler: temperature %g must be >= 0", p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return snp_fail(SNP_ERR_ARGUMENT, "sampler: top-p %g must be in (0, 1]", p->top_p);
    if (p->top_k < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "sampler: top-k %d must be >= 0", p->top_k);
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return snp_fail(SNP_ERR_ARGUMENT, "sampler: repetition penalty %g must be > 0",
                        p->repetition_penalty);
    if (p->repetition_window < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "sampler: repetition window %d must be >= 0",
                        p->repetition_window);
    if (n_vocab <= 0) return snp_fail(SNP_ERR_ARGUMENT, "sampler: vocabulary size %d", n_vocab);
    sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->cand = malloc(sizeof *s->cand * (size_t)n_vocab);
        s->seen = calloc((size_t)n_vocab, 1);
    }
    if (!s || !s->cand || !s->seen) {
        sampler_free(s);
        return snp_fail(SNP_ERR_MEMORY, "sampler: out of memory");
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng_inc = (p->seed << 1u) | 1u;
    s->rng_state = 0;
    pcg32(s);
    s->rng_state += 0x853c49e6748fea9bull;
    pcg32(s);
    *out = s;
    return SNP_OK;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->seen);
    free(s);
}

int32_t sampler_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void apply_repetition_penalty(sampler *s, float *logits, const int32_t *history,
                                     int n_history) {
    const int first = s->p.repetition_window > 0 && n_history > s->p.repetition_window
                          ? n_history - s->p.repetition_window
                          : 0;
    // Each id is penalized once however often it appeared (HF's gather/scatter).
    for (int i = first; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->n_vocab || s->seen[id]) continue;
        s->seen[id] = 1;
        float *l = &logits[id];
        *l = *l > 0 ? *l / s->p.repetition_penalty : *l * s->p.repetition_penalty;
    }
    for (int i = first; i < n_history; i++)
        if (history[i] >= 0 && history[i] < s->n_vocab) s->seen[history[i]] = 0;
}

snp_status sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history,
                          int32_t *out_token) {
    const int V = s->n_vocab;
    if (s->p.repetition_penalty != 1.0f) apply_repetition_penalty(s, logits, history, n_history);
    if (s->p.temperature == 0.0f) {
        *out_token = sampler_argmax(logits, V);
        return SNP_OK;
    }
    for (int i = 0; i < V; i++) s->cand[i] = (candidate){logits[i] / s->p.temperature, i};
    int n = V;
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
    // A full sort is O(V log V) ~ 1 ms at V = 128K: negligible beside a decode step.
    qsort(s->cand, (size_t)V, sizeof *s->cand, by_logit_desc);
    const float max_logit = s->cand[0].logit;
    double total = 0;
    for (int i = 0; i < n; i++) total += exp((double)(s->cand[i].logit - max_logit));
    if (s->p.top_p < 1.0f) { // smallest prefix whose probability reaches top_p
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)(s->cand[i].logit - max_logit)) / total;
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
        total = 0;
        for (int i = 0; i < n; i++) total += exp((double)(s->cand[i].logit - max_logit));
    }
    double r = (double)uniform01(s) * total;
    for (int i = 0; i < n; i++) {
        r -= exp((double)(s->cand[i].logit - max_logit));
        if (r <= 0) {
            *out_token = s->cand[i].id;
            return SNP_OK;
        }
    }
    *out_token = s->cand[n - 1].id; // rounding left a sliver of mass
    return SNP_OK;
}
