// bench_cpu_ops: times the CPU backend's hot ops at SmolLM2-135M's shapes: the
// decode matvec per weight type (exact fp32 and the opt-in int8 path), the
// prefill matmul, and attention for decode and prefill. Not built by CMake; see
// the command at the end of this comment. Times are the best of repeated runs
// (the machine is shared); results on stdout, one table per op.
//   cc -O3 -march=native -fopenmp -I. bench/bench_cpu_ops.c <snaptp_core> -lopenblas -lm
#include "../kernels/backend.h"
#include "../kernels/cpu/cpu_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// Wall clock by default; "cpu" as the third argument times CPU seconds of the
// whole process instead, which a loaded shared machine does not inflate (with
// one thread it is the op's own time; with more it sums the threads, spinning
// included).
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_cpu_ops: %s: %s\n", what, snp_error());
    exit(1);
}

// A random N x K weight of type t loaded on the backend (quantized through the
// backend-independent path: random bytes are valid blocks once scales are sane).
static bk_weight *random_weight(backend *be, dtype t, int N, int K) {
    uint64_t rb;
    dtype_row_bytes(t, (uint64_t)K, "bench", &rb);
    unsigned char *data = malloc(rb * (size_t)N);
    for (size_t i = 0; i < rb * (size_t)N; i++)
        data[i] = (unsigned char)(rand() >> 7);
    // Overwrite scales / values with finite ones.
    size_t be_ = dtype_block_bytes(t), ne = dtype_block_elems(t);
    for (size_t b = 0; b < rb * (size_t)N / be_; b++) {
        unsigned char *blk = data + b * be_;
        if (t == DTYPE_F32) {
            float f = (float)rand() / RAND_MAX - 0.5f;
            memcpy(blk, &f, 4);
        } else if (t == DTYPE_F16 || t == DTYPE_BF16) {
            float f = (float)rand() / RAND_MAX - 0.5f;
            uint16_t h = t == DTYPE_F16 ? dtype_f32_to_f16(f) : dtype_f32_to_bf16(f);
            memcpy(blk, &h, 2);
        } else {
            uint16_t d = dtype_f32_to_f16(0.01f), m = dtype_f32_to_f16(-0.05f);
            memcpy(blk, &d, 2);
            if (t == DTYPE_Q4_1) memcpy(blk + 2, &m, 2);
        }
    }
    (void)ne;
    weight_src src = {.name = "bench",
                      .type = t,
                      .rows = (uint64_t)N,
                      .cols = (uint64_t)K,
                      .row_stride_bytes = rb,
                      .data = data};
    bk_weight *w = NULL;
    if (be->ops->weight_load(be->ctx, &src, &w) != SNP_OK) die("weight_load");
    free(data);
    return w;
}

// Decode matvec: hot = one weight repeatedly (L2/L3 resident), cold = a rotation
// of copies totalling >= 256 MiB (DRAM, as in a real model bigger than L3).
static void bench_matvec(backend *be) {
    static const dtype types[] = {DTYPE_F32, DTYPE_BF16, DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_1};
    static const int shapes[][2] = {{1536, 576}, {576, 1536}, {49152, 576}};
    cpu_ctx *c = be->ctx;
    printf("# matvec (T = 1), %d threads; GB/s counts weight bytes, GFLOP/s 2 N K per call\n",
           c->n_threads);
    printf("# %-5s %-4s %6s %6s %10s %8s %8s %10s %8s\n", "type", "path", "N", "K", "hot_us",
           "hot_GB/s", "GFLOP/s", "cold_us", "cold_GB/s");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (int q8 = 0; q8 < 2; q8++) {
            dtype t = types[ti];
            if (q8 && (t == DTYPE_F32 || t == DTYPE_BF16)) continue;
            for (size_t si = 0; si < 3; si++) {
                int N = shapes[si][0], K = shapes[si][1];
                uint64_t rb;
                dtype_row_bytes(t, (uint64_t)K, "bench", &rb);
                double bytes = (double)rb * N;
                int copies = (int)ceil(256.0 * (1 << 20) / bytes);
                bk_weight **w = malloc(sizeof *w * copies);
                for (int i = 0; i < copies; i++)
                    w[i] = random_weight(be, t, N, K);
                float *x = malloc(sizeof(float) * K), *y = malloc(sizeof(float) * N);
                for (int i = 0; i < K; i++)
                    x[i] = (float)rand() / RAND_MAX - 0.5f;
                c->matvec_q8 = q8;
                double us[2];
                for (int cold = 0; cold < 2; cold++) {
                    int reps = 0;
                    double t0 = now_s(), t1 = t0, best = 1e30;
                    do {
                        bk_weight *wi = w[cold ? reps % copies : 0];
                        double ts = now_s();
                        if (be->ops->matmul(be->ctx, y, x, wi, NULL, 1) != SNP_OK) die("matmul");
                        reps++;
                        t1 = now_s();
                        if (t1 - ts < best) best = t1 - ts;
                    } while (t1 - t0 < 0.4 || reps < 5);
                    us[cold] = best * 1e6;
                }
                c->matvec_q8 = 0;
                printf("  %-5s %-4s %6d %6d %10.1f %8.1f %8.1f %10.1f %8.1f\n", dtype_name(t),
                       q8 ? "int8" : "fp32", N, K, us[0], bytes / us[0] * 1e-3,
                       2.0 * N * K / us[0] * 1e-3, us[1], bytes / us[1] * 1e-3);
                for (int i = 0; i < copies; i++)
                    be->ops->weight_free(be->ctx, w[i]);
                free(w), free(x), free(y);
            }
        }
}

static void bench_gemm(backend *be) {
    printf("# matmul (prefill), GFLOP/s = 2 T N K / time\n");
    printf("# %-5s %6s %6s %6s %10s %8s\n", "type", "T", "N", "K", "ms", "GFLOP/s");
    static const dtype types[] = {DTYPE_F32, DTYPE_Q8_0, DTYPE_Q4_1};
    static const int shapes[][3] = {
        {4, 1536, 576}, {16, 576, 1536}, {512, 1536, 576}, {512, 576, 1536}, {4096, 1536, 576}};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int T = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            bk_weight *w = random_weight(be, types[ti], N, K);
            float *x = malloc(sizeof(float) * T * K), *y = malloc(sizeof(float) * T * N);
            for (int i = 0; i < T * K; i++)
                x[i] = (float)rand() / RAND_MAX - 0.5f;
            int reps = 0;
            double t0 = now_s(), t1 = t0, best = 1e30;
            do {
                double ts = now_s();
                if (be->ops->matmul(be->ctx, y, x, w, NULL, T) != SNP_OK) die("matmul");
                reps++;
                t1 = now_s();
                if (t1 - ts < best) best = t1 - ts;
            } while (t1 - t0 < 0.5 || reps < 3);
            double ms = best * 1e3;
            printf("  %-5s %6d %6d %6d %10.2f %8.1f\n", dtype_name(types[ti]), T, N, K, ms,
                   2.0 * T * N * K / ms * 1e-6);
            be->ops->weight_free(be->ctx, w);
            free(x), free(y);
        }
}

static void bench_attention(backend *be) {
    printf("# attention, SmolLM2 heads unless noted; GFLOP/s = 4 D H x (visible q-k pairs)\n");
    printf("# %6s %6s %4s %4s %4s %10s %8s\n", "T", "keys", "H", "Hkv", "D", "ms", "GFLOP/s");
    static const int cases[][5] = {
        {1, 8192, 9, 3, 64},   {1, 32768, 9, 3, 64},  {1, 8192, 3, 1, 64},
        {1, 8192, 32, 8, 128}, {512, 8192, 9, 3, 64}, {4096, 4096, 9, 3, 64},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int T = cases[ci][0], n = cases[ci][1], H = cases[ci][2], Hkv = cases[ci][3],
            D = cases[ci][4];
        attn_shape s = {.T = T,
                        .H = H,
                        .Hkv = Hkv,
                        .D = D,
                        .S_cap = n,
                        .n_keys = n,
                        .q_offset = n - T,
                        .scale = 1.0f / sqrtf((float)D)};
        size_t nq = (size_t)T * H * D, nkv = (size_t)Hkv * n * D;
        float *q = malloc(sizeof(float) * nq), *o = malloc(sizeof(float) * nq);
        float *k = malloc(sizeof(float) * nkv), *v = malloc(sizeof(float) * nkv);
        for (size_t i = 0; i < nq; i++)
            q[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t i = 0; i < nkv; i++)
            k[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t i = 0; i < nkv; i++)
            v[i] = (float)rand() / RAND_MAX - 0.5f;
        int reps = 0;
        double t0 = now_s(), t1 = t0, best = 1e30;
        do {
            double ts = now_s();
            if (be->ops->attention(be->ctx, o, q, k, v, &s) != SNP_OK) die("attention");
            reps++;
            t1 = now_s();
            if (t1 - ts < best) best = t1 - ts;
        } while (t1 - t0 < 0.5 || reps < 3);
        double ms = best * 1e3;
        double pairs = (double)T * (n - T) + (double)T * (T + 1) / 2;
        printf("  %6d %6d %4d %4d %4d %10.3f %8.1f\n", T, n, H, Hkv, D, ms,
               4.0 * D * H * pairs / ms * 1e-6);
        free(q), free(o), free(k), free(v);
    }
}

// A SmolLM2-135M decode step made of this backend's ops alone (random Q4_1 layer
// weights, a Q8_0 LM head, as in SmolLM2-135M-Instruct.Q4_1.gguf): tokens/s for
// n_gen tokens after an empty cache, comparable with llama-bench's tg128.
static void bench_decode(backend *be) {
    enum { L = 30, C = 576, F = 1536, H = 9, HKV = 3, D = 64, V = 49152, N_GEN = 128 };
    const backend_ops *o = be->ops;
    void *ctx = be->ctx;
    struct layer {
        bk_weight *q, *k, *v, *out, *gate, *up, *down, *n1, *n2;
        float *kc, *vc;
    } ly[L];
    for (int l = 0; l < L; l++) {
        ly[l].q = random_weight(be, DTYPE_Q4_1, H * D, C);
        ly[l].k = random_weight(be, DTYPE_Q4_1, HKV * D, C);
        ly[l].v = random_weight(be, DTYPE_Q4_1, HKV * D, C);
        ly[l].out = random_weight(be, DTYPE_Q4_1, C, H * D);
        ly[l].gate = random_weight(be, DTYPE_Q4_1, F, C);
        ly[l].up = random_weight(be, DTYPE_Q4_1, F, C);
        ly[l].down = random_weight(be, DTYPE_Q4_1, C, F);
        ly[l].n1 = random_weight(be, DTYPE_F32, 1, C);
        ly[l].n2 = random_weight(be, DTYPE_F32, 1, C);
        ly[l].kc = calloc((size_t)HKV * N_GEN * D, sizeof(float));
        ly[l].vc = calloc((size_t)HKV * N_GEN * D, sizeof(float));
    }
    bk_weight *head = random_weight(be, DTYPE_Q8_0, V, C), *nf = random_weight(be, DTYPE_F32, 1, C);
    float x[C], h[C], q[H * D], k[HKV * D], v[HKV * D], a[H * D], g[F], u[F];
    float *logits = malloc(sizeof(float) * V), inv_freq[D / 2];
    for (int i = 0; i < D / 2; i++)
        inv_freq[i] = powf(10000.0f, -2.0f * i / D);
    rope_params rp = {.mode = ROPE_MODE_NEOX, .inv_freq = inv_freq};
    cpu_ctx *c = ctx;
    printf("# decode: SmolLM2-135M shapes from this backend's ops, %d threads, %d tokens\n",
           c->n_threads, N_GEN);
    printf("# %-4s %8s %8s\n", "path", "ms/tok", "tok/s");
    for (int q8 = 0; q8 < 2; q8++) {
        c->matvec_q8 = q8;
        for (int i = 0; i < C; i++)
            x[i] = (float)rand() / RAND_MAX - 0.5f;
        double t0 = now_s();
        for (int pos = 0; pos < N_GEN; pos++) {
            int32_t p32 = pos;
            for (int l = 0; l < L; l++) {
                struct layer *y = &ly[l];
                attn_shape as = {.T = 1,
                                 .H = H,
                                 .Hkv = HKV,
                                 .D = D,
                                 .S_cap = N_GEN,
                                 .n_keys = pos + 1,
                                 .q_offset = pos,
                                 .scale = 0.125f};
                snp_status st = o->rms_norm(ctx, h, x, y->n1, 1e-5f, 1, C);
                if (!st) st = o->matmul(ctx, q, h, y->q, NULL, 1);
                if (!st) st = o->matmul(ctx, k, h, y->k, NULL, 1);
                if (!st) st = o->matmul(ctx, v, h, y->v, NULL, 1);
                if (!st) st = o->rope(ctx, q, &p32, 1, H, D, &rp);
                if (!st) st = o->rope(ctx, k, &p32, 1, HKV, D, &rp);
                if (!st) st = o->kv_store(ctx, y->kc, k, 1, HKV, D, N_GEN, pos);
                if (!st) st = o->kv_store(ctx, y->vc, v, 1, HKV, D, N_GEN, pos);
                if (!st) st = o->attention(ctx, a, q, y->kc, y->vc, &as);
                if (!st) st = o->matmul(ctx, h, a, y->out, NULL, 1);
                if (!st) st = o->add(ctx, x, h, C);
                if (!st) st = o->rms_norm(ctx, h, x, y->n2, 1e-5f, 1, C);
                if (!st) st = o->matmul(ctx, g, h, y->gate, NULL, 1);
                if (!st) st = o->matmul(ctx, u, h, y->up, NULL, 1);
                if (!st) st = o->swiglu(ctx, g, g, u, F);
                if (!st) st = o->matmul(ctx, h, g, y->down, NULL, 1);
                if (!st) st = o->add(ctx, x, h, C);
                if (st) die("decode step");
                // Random weights blow the residual up: keep it bounded.
                for (int i = 0; i < C; i++)
                    x[i] = tanhf(x[i]);
            }
            if (o->rms_norm(ctx, h, x, nf, 1e-5f, 1, C) || o->matmul(ctx, logits, h, head, NULL, 1))
                die("decode head");
        }
        double ms = (now_s() - t0) / N_GEN * 1e3;
        printf("  %-4s %8.2f %8.1f\n", q8 ? "int8" : "fp32", ms, 1e3 / ms);
    }
    c->matvec_q8 = 0;
    for (int l = 0; l < L; l++) {
        bk_weight *ws[] = {ly[l].q,  ly[l].k,    ly[l].v,  ly[l].out, ly[l].gate,
                           ly[l].up, ly[l].down, ly[l].n1, ly[l].n2};
        for (int i = 0; i < 9; i++)
            o->weight_free(ctx, ws[i]);
        free(ly[l].kc), free(ly[l].vc);
    }
    o->weight_free(ctx, head), o->weight_free(ctx, nf);
    free(logits);
}

int main(int argc, char **argv) {
    backend *be = NULL;
    backend_options opt = {.n_threads = argc > 1 ? atoi(argv[1]) : 0};
    if (backend_open("cpu", &opt, &be) != SNP_OK) die("backend_open");
    const char *which = argc > 2 ? argv[2] : "all";
    if (argc > 3 && !strcmp(argv[3], "cpu")) bench_clock = CLOCK_PROCESS_CPUTIME_ID;
    printf("# usage: bench_cpu_ops [threads] [all|matvec|gemm|attention|decode] [wall|cpu]; clock: "
           "%s\n",
           bench_clock == CLOCK_MONOTONIC ? "wall" : "process CPU time");
    if (!strcmp(which, "all") || !strcmp(which, "matvec")) bench_matvec(be);
    if (!strcmp(which, "all") || !strcmp(which, "gemm")) bench_gemm(be);
    if (!strcmp(which, "all") || !strcmp(which, "attention")) bench_attention(be);
    if (!strcmp(which, "all") || !strcmp(which, "decode")) bench_decode(be);
    backend_close(be);
    return 0;
}
