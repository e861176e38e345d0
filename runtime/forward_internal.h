// forward_internal: what the pieces of the forward pass share (forward.c holds the
// per-layer blocks, forward_run and the decode batch; forward_prefill.c the
// layer-major prefill). Private to runtime/forward*.c.
#ifndef SNAPTP_FORWARD_INTERNAL_H
#define SNAPTP_FORWARD_INTERNAL_H

#include "../comm/comm.h"
#include "forward.h"

struct forward_ctx {
    model *m;
    int chunk; // max tokens per step
    // Hidden states of the whole call, [cap_tokens, C]; grown on demand.
    void *x;
    int cap_tokens;
    // Chunk workspace, each [chunk, width].
    void *xn;   // C
    void *q;    // Hl * D
    void *k;    // Hkvl * D
    void *v;    // Hkvl * D
    void *att;  // Hl * D
    void *proj; // C
    void *gate; // Fl
    void *up;   // Fl
    void *logits; // [logit_rows, V]
    int logit_rows; // LM-head rows per step: logits are wanted for one token, or all
                    // of a short prompt in tests, so a chunk's worth (~100 MB at
                    // chunk 512, V 49152) would be waste
    int32_t *pos; // host [chunk]
    // Dual Chunk Attention only (else NULL): the queries' rotations for the previous
    // chunk and for earlier ones, [chunk, Hl * D] each, and host positions [chunk]
    // handed to the rope op.
    void *q_succ, *q_inter;
    int32_t *rot_pos;
    forward_progress_fn progress;
    void *progress_user;
    comm *comm;       // NULL or size 1: no tensor parallelism
    comm *kv_group;   // ranks replicating this rank's KV head (tp > KV heads), or NULL
    float *stage;     // host staging for all-reduce on device-memory backends
    size_t stage_cap; // floats
};

// Backend buffers of n activation / KV elements.
snp_status forward_alloc_act(model *m, size_t n, void **out);
snp_status forward_alloc_kv(model *m, size_t n, void **out);

// forward_act_row: row `row` of an activation matrix with `width` columns.
void *forward_act_row(const model *m, void *base, size_t row, size_t width);

// The blocks of one layer over a chunk of Tc tokens at positions f->pos (forward.c
// says what each computes). They use the chunk workspace of f, so one chunk's
// blocks run to the end before the next chunk's begin.
snp_status forward_qkv_project(forward_ctx *f, int l, const void *x_c, int Tc, int seq_len);
snp_status forward_store_and_attend(forward_ctx *f, void *k_buf, void *v_buf, int cap, int t0,
                                    int Tc, int row0, const kv_cache *kv, int l);

// forward_dca_queries: from queries q_intra [T, Hl, D] rotated for their own chunk
// (positions pos[T]), the rotations for the previous chunk and for earlier chunks
// into q_succ and q_inter. Each is q_intra turned further by the difference of the
// angles (rotations compose), so the window queries a KV store kept after the
// intra rotation give the same numbers as queries just computed.
snp_status forward_dca_queries(forward_ctx *f, const void *q_intra, void *q_succ, void *q_inter,
                               const int32_t *pos, int T);
snp_status forward_attention_out(forward_ctx *f, int l, void *x_c, int Tc);
snp_status forward_mlp_block(forward_ctx *f, int l, void *x_c, int Tc);

// forward_output_logits: final norm and LM head for rows [first, first + n) of the
// hidden states x ([*, C]), copied to host logits [n, V] chunk by chunk.
snp_status forward_output_logits(forward_ctx *f, void *x, int first, int n, float *logits);

#endif
