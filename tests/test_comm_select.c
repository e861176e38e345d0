// test_comm_select: the choice between NCCL and MPI for device buffers. Without
// arguments it checks SNAPTP_COMM's parser and the all-ranks device check (pure C),
// then runs itself once per scenario (SNAPTP_COMM = auto, mpi, nccl, and nccl with a
// collective timeout) as `test_comm_select --child`, each a job of one.
// tests/test_comm_select.sh runs the children under mpirun -np 2 as well.
// Without a GPU, NCCL must be refused with "no CUDA device" and MPI must refuse
// device buffers; with one (on a lent GPU), a real NCCL all-reduce through the CUDA
// backend's stream is checked too.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../comm/comm.h"
#include "../comm/comm_device.h"
#include "../kernels/backend.h"
#include "support/test_support.h"

static int g_rank;

#define CHECKF(tc, cond, fmt, ...) test_check((tc), (cond), "rank %d: " fmt, g_rank, __VA_ARGS__)

static int contains(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

static void test_mode_parse(test_counts *tc) {
    const struct {
        const char *value;
        comm_device_mode want;
    } good[] = {{NULL, COMM_DEVICE_MODE_AUTO},   {"", COMM_DEVICE_MODE_AUTO},
                {"auto", COMM_DEVICE_MODE_AUTO}, {"mpi", COMM_DEVICE_MODE_MPI},
                {"NCCL", COMM_DEVICE_MODE_NCCL}, {"nccl", COMM_DEVICE_MODE_NCCL}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        comm_device_mode m = COMM_DEVICE_MODE_COUNT;
        snp_status st = comm_device_mode_parse(good[i].value, &m);
        CHECKF(tc, st == SNP_OK && m == good[i].want, "SNAPTP_COMM='%s' gave %s (%s)",
               good[i].value ? good[i].value : "(unset)", comm_device_mode_name(m), snp_error());
    }
    const char *bad[] = {"gloo", "nccl2", " mpi", "mpi,nccl"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        comm_device_mode m;
        snp_status st = comm_device_mode_parse(bad[i], &m);
        CHECKF(tc,
               st == SNP_ERR_ARGUMENT && contains(snp_error(), bad[i]) &&
                   contains(snp_error(), "auto, mpi or nccl"),
               "SNAPTP_COMM='%s': status %d, message '%s'", bad[i], st, snp_error());
    }
}

static comm_device_probe probe_of(comm_device_probe_code code, unsigned char tag) {
    comm_device_probe p = {.code = code};
    if (code == COMM_DEVICE_PROBE_OK)
        for (int i = 0; i < 16; i++)
            p.uuid[i] = (unsigned char)(tag * 17 + i * 29 + (i == 15 ? 255 : 0));
    return p;
}

static void test_probe_check(test_counts *tc) {
    // Packing survives the float all-reduce: a row plus zero rows is exact.
    comm_device_probe a = probe_of(COMM_DEVICE_PROBE_OK, 3), b;
    float row[COMM_DEVICE_PROBE_FLOATS], zeros[COMM_DEVICE_PROBE_FLOATS] = {0};
    comm_device_probe_pack(&a, row);
    for (int i = 0; i < COMM_DEVICE_PROBE_FLOATS; i++)
        row[i] += zeros[i];
    comm_device_probe_unpack(row, &b);
    CHECKF(tc, b.code == a.code && memcmp(a.uuid, b.uuid, 16) == 0, "%s",
           "probe pack/unpack round trip");
    row[0] = 7.5f; // not a code: must not read as a usable GPU
    comm_device_probe_unpack(row, &b);
    CHECKF(tc, b.code == COMM_DEVICE_PROBE_CUDA_ERROR, "garbage code read as %d", b.code);

    char note[256];
    comm_device_probe ok4[4] = {
        probe_of(COMM_DEVICE_PROBE_OK, 0), probe_of(COMM_DEVICE_PROBE_OK, 1),
        probe_of(COMM_DEVICE_PROBE_OK, 2), probe_of(COMM_DEVICE_PROBE_OK, 3)};
    CHECKF(tc, comm_device_probe_check(ok4, 4, note, sizeof note) == 1, "4 GPUs refused: %s", note);
    comm_device_probe shared[4] = {ok4[0], ok4[1], ok4[2], ok4[1]};
    int ok = comm_device_probe_check(shared, 4, note, sizeof note);
    CHECKF(tc, ok == 0 && contains(note, "ranks 1 and 3 share one GPU"), "shared GPU: %d '%s'", ok,
           note);
    comm_device_probe missing[3] = {ok4[0], ok4[1], probe_of(COMM_DEVICE_PROBE_NO_DEVICE, 0)};
    ok = comm_device_probe_check(missing, 3, note, sizeof note);
    CHECKF(tc, ok == 0 && contains(note, "rank 2 has no CUDA device"), "no device: %d '%s'", ok,
           note);
    comm_device_probe bad_ordinal[2] = {probe_of(COMM_DEVICE_PROBE_BAD_ORDINAL, 0), ok4[0]};
    ok = comm_device_probe_check(bad_ordinal, 2, note, sizeof note);
    CHECKF(tc, ok == 0 && contains(note, "rank 0 asked for a CUDA device"), "ordinal: %d '%s'", ok,
           note);
    CHECKF(tc, comm_device_probe_check(ok4, 1, note, sizeof note) == 1, "one rank: '%s'", note);
}

// A malformed SNAPTP_COMM is refused before the job is joined (so this process may
// still call comm_init again, in its children).
static void test_init_refuses_bad_mode(test_counts *tc) {
    setenv("SNAPTP_COMM", "infiniband", 1);
    comm *c = NULL;
    snp_status st = comm_init(NULL, NULL, &c);
    CHECKF(tc, st == SNP_ERR_ARGUMENT && !c && contains(snp_error(), "SNAPTP_COMM='infiniband'"),
           "bad SNAPTP_COMM: status %d, message '%s'", st, snp_error());
    unsetenv("SNAPTP_COMM");
}

// One bf16 and one fp32 all-reduce of device buffers through the CUDA backend's
// stream: buf[i] = (rank + 1) * (i % 8) sums to S * (i % 8), exact in bf16.
static void test_device_all_reduce(comm *c, test_counts *tc) {
    backend *be = NULL;
    const backend_options bo = {.device = comm_local_rank(c)};
    snp_status st = backend_open("cuda", &bo, &be);
    if (!CHECKF(tc, st == SNP_OK, "open the cuda backend: %s", snp_error())) return;
    enum { N = 4099 };
    const int rank = comm_rank(c), size = comm_size(c);
    const float S = (float)(size * (size + 1) / 2);
    float *host = malloc(N * sizeof *host), *back = malloc(N * sizeof *back);
    void *d16 = NULL, *d32 = NULL;
    comm_counters k0, k1;
    comm_stats(c, &k0);
    for (int i = 0; i < N; i++)
        host[i] = (float)(rank + 1) * (float)(i % 8);
    st = be->ops->alloc(be->ctx, N * 2, &d16);
    if (st == SNP_OK) st = be->ops->alloc(be->ctx, N * 4, &d32);
    if (st == SNP_OK) st = be->ops->from_host_f32(be->ctx, d16, host, N);
    if (st == SNP_OK) st = be->ops->upload(be->ctx, d32, host, N * sizeof *host);
    void *stream = be->ops->stream ? be->ops->stream(be->ctx) : NULL;
    CHECKF(tc, stream != NULL, "%s", "the cuda backend exposes its stream");
    if (st == SNP_OK) st = comm_all_reduce_sum_device(c, d16, N, COMM_ELEM_BF16, stream);
    if (st == SNP_OK) st = comm_all_reduce_sum_device(c, d32, N, COMM_ELEM_F32, stream);
    CHECKF(tc, st == SNP_OK, "device all-reduces: %s", snp_error());
    for (int pass = 0; pass < 2 && st == SNP_OK; pass++) {
        st = pass == 0 ? be->ops->to_host_f32(be->ctx, back, d16, N)
                       : be->ops->download(be->ctx, back, d32, N * sizeof *back);
        int wrong = 0, first = 0;
        for (int i = 0; st == SNP_OK && i < N; i++)
            if (back[i] != S * (float)(i % 8) && wrong++ == 0) first = i;
        CHECKF(tc, st == SNP_OK && wrong == 0, "%s sum on %d ranks: %d wrong, [%d] = %g, want %g",
               pass == 0 ? "bf16" : "fp32", size, wrong, first, (double)back[first],
               (double)(S * (float)(first % 8)));
        if (rank == 0)
            printf("device all-reduce %s n=%d on %d rank(s): %d elements wrong\n",
                   pass == 0 ? "bf16" : "fp32", N, size, wrong);
    }
    comm_stats(c, &k1);
    CHECKF(tc,
           k1.all_reduce_device_calls - k0.all_reduce_device_calls == 2 &&
               k1.all_reduce_bytes - k0.all_reduce_bytes == (uint64_t)N * 6,
           "device counters: %llu calls, %llu bytes; want 2, %d",
           (unsigned long long)(k1.all_reduce_device_calls - k0.all_reduce_device_calls),
           (unsigned long long)(k1.all_reduce_bytes - k0.all_reduce_bytes), N * 6);
    be->ops->dealloc(be->ctx, d16);
    be->ops->dealloc(be->ctx, d32);
    backend_close(be);
    free(host);
    free(back);
}

// The checks that need no device: the refusal, argument errors, split groups.
static void test_refusals(comm *c, test_counts *tc) {
    int dummy[4] = {0};
    comm_counters k;
    CHECKF(tc, !comm_has_device_collectives(c) && !comm_has_device_collectives(NULL), "%s",
           "no device collectives before comm_device_setup");
    snp_status st = comm_all_reduce_sum_device(c, dummy, 4, COMM_ELEM_BF16, NULL);
    CHECKF(tc, st == SNP_ERR_UNSUPPORTED && contains(snp_error(), "takes host memory only"),
           "device all-reduce on MPI: status %d, message '%s'", st, snp_error());
    st = comm_all_reduce_sum_device(c, dummy, 4, (comm_elem_type)7, NULL);
    CHECKF(tc, st == SNP_ERR_ARGUMENT && contains(snp_error(), "element type"),
           "bad element type: status %d, '%s'", st, snp_error());
    st = comm_all_reduce_sum_device(c, NULL, 4, COMM_ELEM_F32, NULL);
    CHECKF(tc, st == SNP_ERR_ARGUMENT, "NULL device buffer: status %d", st);
    comm_stats(c, &k);
    CHECKF(tc, k.all_reduce_calls == 0 && k.all_reduce_device_calls == 0,
           "refused calls were counted: %llu", (unsigned long long)k.all_reduce_calls);
    st = comm_device_setup(c, -1);
    CHECKF(tc, st == SNP_ERR_ARGUMENT && contains(snp_error(), "negative"),
           "device -1: status %d, '%s'", st, snp_error());
    comm *g = NULL;
    st = comm_split(c, 0, &g);
    CHECKF(tc, st == SNP_OK, "split: %s", snp_error());
    if (g) {
        st = comm_device_setup(g, 0);
        CHECKF(tc, st == SNP_ERR_ARGUMENT && contains(snp_error(), "comm_split group"),
               "setup on a split group: status %d, '%s'", st, snp_error());
        CHECKF(tc, !comm_has_device_collectives(g), "%s", "a split group has device collectives");
        comm_free(g);
    }
}

// One scenario, as the environment sets it up; a job of one or several ranks.
static int child(int argc, char **argv) {
    const char *mode = getenv("SNAPTP_COMM") ? getenv("SNAPTP_COMM") : "auto";
    const int want_mismatch = getenv("SNAPTP_TEST_MODE_MISMATCH") != NULL;
    test_counts tc = {0};
    comm *c = NULL;
    snp_status st = comm_init(&argc, &argv, &c);
    if (st != SNP_OK && strcmp(mode, "nccl") == 0 && contains(snp_error(), "has no NCCL")) {
        // A build without NCCL refuses SNAPTP_COMM=nccl before joining the job.
        printf("SNAPTP_COMM=nccl refused at init: %s\n", snp_error());
        tc.passed++;
        tc.skipped++;
        return test_finish(&tc, "test_comm_select --child (nccl, not built)");
    }
    if (st != SNP_OK) return comm_fail(NULL, st, "test_comm_select");
    g_rank = comm_rank(c);
    const int size = comm_size(c);
    CHECKF(&tc, strcmp(comm_backend_name(c), "mpi") == 0, "backend '%s' before setup",
           comm_backend_name(c));
    test_refusals(c, &tc);

    st = comm_device_setup(c, comm_local_rank(c));
    const char *note = comm_device_note(c);
    if (g_rank == 0)
        printf("SNAPTP_COMM=%s, %d rank(s): setup %s; note: %s\n", mode, size,
               st == SNP_OK ? "ok" : "failed (as the note says)", note);
    if (want_mismatch) {
        CHECKF(&tc, st == SNP_ERR_ARGUMENT && contains(snp_error(), "differs between ranks"),
               "mismatched SNAPTP_COMM: status %d, '%s'", st, snp_error());
    } else if (strcmp(mode, "mpi") == 0) {
        CHECKF(&tc, st == SNP_OK && !comm_has_device_collectives(c) && contains(note, "=mpi"),
               "mpi: status %d, note '%s'", st, note);
    } else if (strcmp(mode, "nccl") == 0 && st != SNP_OK) {
        // No GPU (the usual case off a lent machine), or ranks sharing one: refused,
        // naming the reason, on every rank at once; the host side keeps working.
        const int no_gpu = contains(snp_error(), "no CUDA device");
        CHECKF(&tc, st == SNP_ERR_DEVICE && (no_gpu || contains(snp_error(), "share one GPU")),
               "nccl refused: status %d, '%s'", st, snp_error());
        CHECKF(&tc, !comm_has_device_collectives(c), "%s", "failed setup left NCCL up");
        tc.skipped++;
        if (g_rank == 0)
            printf("skipped: the NCCL all-reduce (%s)\n",
                   no_gpu ? "no CUDA device" : "ranks share one GPU");
    } else if (strcmp(mode, "nccl") == 0) {
        CHECKF(&tc, comm_has_device_collectives(c) && strcmp(comm_backend_name(c), "nccl") == 0,
               "nccl up: backend '%s', note '%s'", comm_backend_name(c), note);
        CHECKF(&tc, comm_device_setup(c, comm_local_rank(c)) == SNP_OK, "second setup: %s",
               snp_error());
        test_device_all_reduce(c, &tc);
    } else { // auto: declines on one rank, without NCCL, or without a GPU per rank
        CHECKF(&tc, st == SNP_OK, "auto: setup failed: %s", snp_error());
        if (size == 1)
            CHECKF(&tc,
                   !comm_has_device_collectives(c) &&
                       (contains(note, "job of one") || contains(note, "has no NCCL")),
                   "auto on one rank: note '%s'", note);
        if (comm_has_device_collectives(c))
            test_device_all_reduce(c, &tc);
        else if (size > 1)
            tc.skipped++;
    }
    // The host side works whatever happened above.
    float totals[3] = {(float)tc.passed, (float)tc.failed, 1.0f};
    st = comm_all_reduce_sum_f32(c, totals, 3);
    if (st != SNP_OK) return comm_fail(c, st, "test_comm_select");
    test_counts all = {(int)totals[0], (int)totals[1] + (totals[2] != (float)size), tc.skipped};
    int rc = all.failed ? 1 : 0;
    if (g_rank == 0) {
        char name[96];
        snprintf(name, sizeof name, "test_comm_select --child (%s, %d rank%s)", mode, size,
                 size == 1 ? "" : "s");
        rc = test_finish(&all, name);
    }
    comm_free(c);
    return rc;
}

// run_child: this binary again with --child and the scenario's environment.
static int run_child(const char *mode, const char *timeout_s) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setenv("SNAPTP_COMM", mode, 1);
        if (timeout_s)
            setenv("SNAPTP_COMM_TIMEOUT_S", timeout_s, 1);
        else
            unsetenv("SNAPTP_COMM_TIMEOUT_S");
        unsetenv("SNAPTP_FAULT");
        execl("/proc/self/exe", "test_comm_select", "--child", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) return child(argc, argv);
    test_counts tc = {0};
    test_mode_parse(&tc);
    test_probe_check(&tc);
    test_init_refuses_bad_mode(&tc);
    const struct {
        const char *mode, *timeout_s;
    } runs[] = {{"auto", NULL}, {"mpi", NULL}, {"nccl", NULL}, {"nccl", "30"}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int rc = run_child(runs[i].mode, runs[i].timeout_s);
        CHECKF(&tc, rc == 0, "child SNAPTP_COMM=%s%s exited %d", runs[i].mode,
               runs[i].timeout_s ? " SNAPTP_COMM_TIMEOUT_S=30" : "", rc);
    }
    return test_finish(&tc, "test_comm_select");
}
