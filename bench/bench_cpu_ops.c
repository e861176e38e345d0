// bench_cpu_ops: times the CPU backend's hot ops at SmolLM2-135M's shapes: the
// decode matvec per weight type (exact fp32 and the opt-in int8 path), the
// prefill matmul, and attention for decode and prefill. Not built by CMake; see
// the command at the end of this comment. Results on stdout, one table per op.
//   cc -O3 -march=native -fopenmp -I. bench/bench_cpu_ops.c <snaptp_core> -lopenblas -lm
#include "../kernels/backend.h"
#include "../kernels/cpu/cpu_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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
                    double t0 = now_s(), t1;
                    do {
                        bk_weight *wi = w[cold ? reps % copies : 0];
                        if (be->ops->matmul(be->ctx, y, x, wi, NULL, 1) != SNP_OK) die("matmul");
                        reps++;
                        t1 = now_s();
                    } while (t1 - t0 < 0.4 || reps < 5);
                    us[cold] = (t1 - t0) / reps * 1e6;
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
    static const int shapes[][3] = {{512, 1536, 576}, {512, 576, 1536}, {4096, 1536, 576}};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t si = 0; si < 3; si++) {
            int T = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            bk_weight *w = random_weight(be, types[ti], N, K);
            float *x = malloc(sizeof(float) * T * K), *y = malloc(sizeof(float) * T * N);
            for (int i = 0; i < T * K; i++)
                x[i] = (float)rand() / RAND_MAX - 0.5f;
            int reps = 0;
            double t0 = now_s(), t1;
            do {
                if (be->ops->matmul(be->ctx, y, x, w, NULL, T) != SNP_OK) die("matmul");
                reps++;
                t1 = now_s();
            } while (t1 - t0 < 0.5 || reps < 2);
            double ms = (t1 - t0) / reps * 1e3;
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
        double t0 = now_s(), t1;
        do {
            if (be->ops->attention(be->ctx, o, q, k, v, &s) != SNP_OK) die("attention");
            reps++;
            t1 = now_s();
        } while (t1 - t0 < 0.5 || reps < 2);
        double ms = (t1 - t0) / reps * 1e3;
        double pairs = (double)T * (n - T) + (double)T * (T + 1) / 2;
        printf("  %6d %6d %4d %4d %4d %10.3f %8.1f\n", T, n, H, Hkv, D, ms,
               4.0 * D * H * pairs / ms * 1e-6);
        free(q), free(o), free(k), free(v);
    }
}

int main(int argc, char **argv) {
    backend *be = NULL;
    backend_options opt = {.n_threads = argc > 1 ? atoi(argv[1]) : 0};
    if (backend_open("cpu", &opt, &be) != SNP_OK) die("backend_open");
    const char *which = argc > 2 ? argv[2] : "all";
    if (!strcmp(which, "all") || !strcmp(which, "matvec")) bench_matvec(be);
    if (!strcmp(which, "all") || !strcmp(which, "gemm")) bench_gemm(be);
    if (!strcmp(which, "all") || !strcmp(which, "attention")) bench_attention(be);
    backend_close(be);
    return 0;
}
