// snapkv: the SnapKV policy of ../shared/SNAPKV.md: its parameters, their
// validation, and the compression of one layer's full K/V into the layer's
// compressed cache through the backend's snapkv ops. The prefill loop that calls it
// is forward.c's.
#ifndef SNAPTP_SNAPKV_H
#define SNAPTP_SNAPKV_H

#include <stdint.h>

#include "../kernels/backend.h"
#include "status.h"

typedef struct snapkv_params {
    int window;   // w: observation window, the prompt's last w tokens
    int budget;   // C: prompt rows kept per KV head, window included
    int kernel;   // pooling kernel, odd
    snapkv_pooling pooling;
} snapkv_params;

// snapkv_params_default: snaptp's defaults (SNAPKV.md): w 32, C 2048, k 7, max.
snapkv_params snapkv_params_default(void);

// snapkv_params_validate: w >= 1, C > w, k odd >= 1; messages name the flag.
snp_status snapkv_params_validate(const snapkv_params *p);

// snapkv_check_prompt: a prompt of L tokens must be longer than the window.
snp_status snapkv_check_prompt(const snapkv_params *p, int L);

// snapkv_rows_kept: rows per KV head after compressing a prompt of L tokens:
// L when L <= C (nothing is dropped), else C.
int snapkv_rows_kept(const snapkv_params *p, int L);

const char *snapkv_pooling_name(snapkv_pooling p);
snp_status snapkv_pooling_parse(const char *s, snapkv_pooling *out);

typedef struct snapkv_workspace snapkv_workspace;

// snapkv_workspace_init: backend buffers for one layer's scoring of a prompt of L
// tokens with H query / Hkv KV heads on this rank.
snp_status snapkv_workspace_init(backend *be, const snapkv_params *p, int L, int H, int Hkv, int D,
                                 snapkv_workspace **out);
void snapkv_workspace_free(snapkv_workspace *ws); // NULL is a no-op

struct comm;
// snapkv_workspace_set_replicas: when tp > KV heads, several ranks hold the same KV
// head, each with part of its query heads. Their pooled votes are averaged over
// `group` (the ranks replicating this rank's KV head) before selection, so every
// replica keeps what tp = 1 keeps. NULL or a group of one: nothing to join.
void snapkv_workspace_set_replicas(snapkv_workspace *ws, struct comm *group);

// snapkv_window_queries: the backend buffer [w, H, D] the prefill fills with the
// last w queries (after RoPE) before snapkv_compress_layer runs.
void *snapkv_window_queries(snapkv_workspace *ws);

// snapkv_workspace_set_dca: Dual Chunk Attention: the votes see each key with the
// query rotation its chunk asks for (backend.h, attn_dca); allocates the window's
// two other rotations, which the prefill fills (snapkv_window_queries_dca).
snp_status snapkv_workspace_set_dca(snapkv_workspace *ws, int chunk_len);
void snapkv_window_queries_dca(snapkv_workspace *ws, void **q_succ, void **q_inter);

// snapkv_kept_positions: after snapkv_compress_layer, its kept positions into the
// backend buffer dst [Hkv, dst_cap] (int32), rows 0 .. rows_kept - 1 of each head.
snp_status snapkv_kept_positions(snapkv_workspace *ws, int32_t *dst, int dst_cap);

// snapkv_compress_layer: selects rows of full_k/full_v ([Hkv, full_cap, D], L rows
// valid) and writes them to rows 0.. of cache_k/cache_v ([Hkv, cache_cap, D]).
// `selected` (host, may be NULL) receives the kept positions [Hkv, rows_kept].
snp_status snapkv_compress_layer(snapkv_workspace *ws, const void *full_k, const void *full_v,
                                 int full_cap, void *cache_k, void *cache_v, int cache_cap,
                                 int32_t *selected);

#endif
