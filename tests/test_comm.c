// test_comm: the communicator on 1..N ranks (tests/test_comm.sh runs it under
// mpirun -np 1, 2, 4; ctest runs it alone, a job of one): topology, exact
// all-reduce sums of rank-dependent values, broadcast from every root, counters,
// argument errors that name the rank, and the SNAPTP_FAULT parser.
// `test_comm --fault-run DIR` is the fault scenario test_comm.sh drives: each rank
// writes DIR/pid.<rank>, then runs all-reduces until the injected fault ends the job.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../comm/comm.h"
#include "../comm/comm_fault.h"
#include "support/test_support.h"

static int g_rank;

#define CHECKF(tc, cond, fmt, ...) test_check((tc), (cond), "rank %d: " fmt, g_rank, __VA_ARGS__)

static int contains(const char *hay, const char *needle) {
    return strstr(hay, needle) != NULL;
}

// Every rank learns every rank's (host, local rank) by broadcasts; the local ranks
// on each host must be exactly 0..k-1 and k must be that host's local size.
static void test_topology(comm *c, test_counts *tc) {
    int rank = comm_rank(c), size = comm_size(c);
    CHECKF(tc, size >= 1 && rank >= 0 && rank < size, "rank %d of size %d", rank, size);
    CHECKF(tc, comm_local_rank(c) >= 0 && comm_local_rank(c) < comm_local_size(c),
           "local rank %d of local size %d", comm_local_rank(c), comm_local_size(c));
    CHECKF(tc, comm_local_size(c) <= size, "local size %d > size %d", comm_local_size(c), size);
    CHECKF(tc, comm_host(c)[0] != '\0', "host '%s' is empty", comm_host(c));
    CHECKF(tc, strcmp(comm_backend_name(c), "mpi") == 0, "backend '%s'", comm_backend_name(c));

    struct {
        char host[256];
        int local_rank;
    } me = {0}, other;
    snprintf(me.host, sizeof me.host, "%s", comm_host(c));
    me.local_rank = comm_local_rank(c);
    unsigned seen = 0; // bit l: local rank l seen on my host
    int on_my_host = 0, bad = 0;
    for (int root = 0; root < size; root++) {
        other = me;
        snp_status st = comm_broadcast(c, &other, sizeof other, root);
        CHECKF(tc, st == SNP_OK, "topology broadcast from %d: %s", root, snp_error());
        if (strcmp(other.host, me.host) != 0) continue;
        on_my_host++;
        if (other.local_rank < 0 || other.local_rank >= 32 || (seen >> other.local_rank & 1u))
            bad = 1;
        else
            seen |= 1u << other.local_rank;
    }
    CHECKF(tc, !bad && on_my_host == comm_local_size(c) && seen == (1u << on_my_host) - 1u,
           "host %s: %d ranks, local size %d, local ranks seen 0x%x", me.host, on_my_host,
           comm_local_size(c), seen);
    printf("rank %d/%d: host %s, local rank %d/%d\n", rank, size, comm_host(c), comm_local_rank(c),
           comm_local_size(c));
}

// buf[i] = (rank + 1) * f(i) + 0.5 on rank 0 only; the sum over ranks is
// S * f(i) + 0.5 with S = size (size + 1) / 2, exact in fp32 for these sizes.
static void test_all_reduce(comm *c, test_counts *tc) {
    const size_t sizes[] = {0, 1, 7, 4099, (1u << 20) + 3};
    int rank = comm_rank(c), size = comm_size(c);
    float S = (float)(size * (size + 1) / 2);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        float *buf = malloc((n ? n : 1) * sizeof *buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (float)(rank + 1) * (float)(i % 13 + 1) + (rank == 0 ? 0.5f : 0.0f);
        snp_status st = comm_all_reduce_sum_f32(c, n ? buf : NULL, n);
        CHECKF(tc, st == SNP_OK, "all-reduce of %zu floats: %s", n, snp_error());
        size_t wrong = 0, first = 0;
        for (size_t i = 0; i < n; i++) {
            float want = S * (float)(i % 13 + 1) + 0.5f;
            if (buf[i] != want && wrong++ == 0) first = i;
        }
        CHECKF(tc, wrong == 0, "all-reduce of %zu floats: %zu wrong, first [%zu] = %g, want %g", n,
               wrong, first, n ? buf[first] : 0.0, S * (float)(first % 13 + 1) + 0.5);
        if (rank == 0)
            printf("all-reduce n=%zu on %d ranks: %zu of %zu elements differ from the exact sum\n",
                   n, size, wrong, n);
        free(buf);
    }
}

static void test_broadcast(comm *c, test_counts *tc) {
    int rank = comm_rank(c), size = comm_size(c);
    for (int root = 0; root < size; root++) {
        size_t n = 1000 + (size_t)root;
        unsigned char *buf = malloc(n);
        for (size_t i = 0; i < n; i++)
            buf[i] = rank == root ? (unsigned char)((i * 31 + (size_t)root * 7) & 0xff) : 0xEE;
        snp_status st = comm_broadcast(c, buf, n, root);
        CHECKF(tc, st == SNP_OK, "broadcast from %d: %s", root, snp_error());
        size_t wrong = 0;
        for (size_t i = 0; i < n; i++)
            wrong += buf[i] != (unsigned char)((i * 31 + (size_t)root * 7) & 0xff);
        CHECKF(tc, wrong == 0, "broadcast of %zu bytes from %d: %zu bytes differ", n, root, wrong);
        free(buf);
    }
    snp_status st = comm_broadcast(c, NULL, 0, size - 1);
    CHECKF(tc, st == SNP_OK, "empty broadcast: %s", snp_error());
    st = comm_barrier(c);
    CHECKF(tc, st == SNP_OK, "barrier: %s", snp_error());
}

static void test_counters(comm *c, test_counts *tc) {
    float x[10] = {0};
    char bytes[100] = {0};
    comm_counters k;
    comm_counters_reset(c);
    for (int i = 0; i < 3; i++)
        comm_all_reduce_sum_f32(c, x, 10);
    for (int i = 0; i < 2; i++)
        comm_broadcast(c, bytes, sizeof bytes, 0);
    comm_barrier(c);
    comm_stats(c, &k);
    CHECKF(tc, k.all_reduce_calls == 3 && k.all_reduce_elems == 30 && k.all_reduce_bytes == 120,
           "all-reduce counters %llu calls %llu elems %llu bytes, want 3 30 120",
           (unsigned long long)k.all_reduce_calls, (unsigned long long)k.all_reduce_elems,
           (unsigned long long)k.all_reduce_bytes);
    CHECKF(tc, k.broadcast_calls == 2 && k.broadcast_bytes == 200 && k.barrier_calls == 1,
           "broadcast counters %llu calls %llu bytes, barrier %llu; want 2 200 1",
           (unsigned long long)k.broadcast_calls, (unsigned long long)k.broadcast_bytes,
           (unsigned long long)k.barrier_calls);
    CHECKF(tc, k.all_reduce_s >= 0 && k.broadcast_s >= 0, "times %g %g", k.all_reduce_s,
           k.broadcast_s);
    comm_counters_reset(c);
    comm_stats(c, &k);
    CHECKF(tc, k.all_reduce_calls == 0 && k.broadcast_bytes == 0 && k.barrier_calls == 0,
           "after reset: %llu all-reduces", (unsigned long long)k.all_reduce_calls);
}

// Argument errors are found before any collective starts, so a rank may hit them
// alone without desynchronising the others.
static void test_errors(comm *c, test_counts *tc) {
    char want[64];
    snprintf(want, sizeof want, "rank %d/%d", comm_rank(c), comm_size(c));
    char b[4];
    snp_status st = comm_broadcast(c, b, sizeof b, comm_size(c));
    CHECKF(tc,
           st == SNP_ERR_ARGUMENT && contains(snp_error(), want) && contains(snp_error(), "root"),
           "bad root: status %d, message '%s'", st, snp_error());
    st = comm_broadcast(c, b, sizeof b, -1);
    CHECKF(tc, st == SNP_ERR_ARGUMENT, "root -1: status %d", st);
    st = comm_all_reduce_sum_f32(c, NULL, 5);
    CHECKF(tc, st == SNP_ERR_ARGUMENT && contains(snp_error(), want),
           "NULL buffer: status %d, message '%s'", st, snp_error());
    st = comm_all_reduce_sum_f32(NULL, NULL, 0);
    CHECKF(tc, st == SNP_ERR_ARGUMENT, "NULL comm: status %d", st);
    comm_free(NULL);
    comm_counters k;
    comm_stats(c, &k);
    CHECKF(tc, k.all_reduce_calls == 0 && k.broadcast_calls == 0,
           "failed calls were counted: %llu all-reduces, %llu broadcasts",
           (unsigned long long)k.all_reduce_calls, (unsigned long long)k.broadcast_calls);
    if (comm_size(c) == 1) {
        snp_fail(SNP_ERR_COMM, "(expected) a message comm_fail prints on a job of one");
        CHECKF(tc, comm_fail(c, SNP_ERR_COMM, "test_comm") == 1, "%s", "comm_fail on one rank");
    }
}

static void test_fault_parser(test_counts *tc) {
    comm_fault f;
    snp_status st = comm_fault_parse("rank=2,at=allreduce:3,mode=kill", &f);
    CHECKF(tc,
           st == SNP_OK && f.rank == 2 && f.op == COMM_FAULT_OP_ALL_REDUCE && f.at == 3 &&
               f.mode == COMM_FAULT_MODE_KILL,
           "parse kill spec: %s", snp_error());
    st = comm_fault_parse("at=broadcast:1,rank=0", &f);
    CHECKF(tc, st == SNP_OK && f.op == COMM_FAULT_OP_BROADCAST && f.mode == COMM_FAULT_MODE_ERROR,
           "parse default mode: %s", snp_error());
    st = comm_fault_parse("", &f);
    CHECKF(tc, st == SNP_OK && f.op == COMM_FAULT_OP_NONE, "%s", "empty spec disarms");
    const struct {
        const char *spec, *names;
    } bad[] = {
        {"rank=2", "at=OP:N"},
        {"rank=x,at=allreduce:1", "'x'"},
        {"rank=1,at=reduce:1", "'reduce'"},
        {"rank=1,at=allreduce:0", "'0'"},
        {"rank=1,at=allreduce", "OP:N"},
        {"rank=1,at=allreduce:3,mode=explode", "'explode'"},
        {"rank=1,at=barrier:2,color=red", "'color'"},
        {"rank", "key=value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st = comm_fault_parse(bad[i].spec, &f);
        CHECKF(tc, st == SNP_ERR_ARGUMENT && contains(snp_error(), bad[i].names),
               "spec '%s': status %d, message '%s' should name %s", bad[i].spec, st, snp_error(),
               bad[i].names);
    }
    comm_fault_parse("rank=2,at=allreduce:3", &f);
    st = comm_fault_fire(&f, 2, 4, "hostX", COMM_FAULT_OP_ALL_REDUCE, 2);
    CHECKF(tc, st == SNP_OK, "%s", "fault fired at the 2nd call");
    st = comm_fault_fire(&f, 1, 4, "hostX", COMM_FAULT_OP_ALL_REDUCE, 3);
    CHECKF(tc, st == SNP_OK, "%s", "fault fired on rank 1");
    st = comm_fault_fire(&f, 2, 4, "hostX", COMM_FAULT_OP_BROADCAST, 3);
    CHECKF(tc, st == SNP_OK, "%s", "fault fired on a broadcast");
    st = comm_fault_fire(&f, 2, 4, "hostX", COMM_FAULT_OP_ALL_REDUCE, 3);
    CHECKF(tc, st == SNP_ERR_COMM && contains(snp_error(), "rank 2/4 (hostX)"),
           "fault at rank 2 call 3: status %d, message '%s'", st, snp_error());
}

// The scenario of test_comm.sh: all-reduces until the fault configured in
// SNAPTP_FAULT ends the job. A failed call goes down the launcher's path.
static int fault_run(comm *c, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/pid.%d", dir, comm_rank(c));
    FILE *fp = fopen(path, "w");
    if (fp) {
        fprintf(fp, "%ld\n", (long)getpid());
        fclose(fp);
    }
    // Every rank has written its pid before anyone can fail.
    snp_status st = comm_barrier(c);
    if (st != SNP_OK) return comm_fail(c, st, "test_comm");
    float buf[1024];
    for (int i = 0; i < 10; i++) {
        for (int j = 0; j < 1024; j++)
            buf[j] = (float)j;
        st = comm_all_reduce_sum_f32(c, buf, 1024);
        if (st != SNP_OK) return comm_fail(c, st, "test_comm");
    }
    fprintf(stderr, "rank %d: 10 all-reduces done, no fault fired (is SNAPTP_FAULT set?)\n",
            comm_rank(c));
    comm_free(c);
    return 0;
}

int main(int argc, char **argv) {
    comm *c = NULL;
    snp_status st = comm_init(&argc, &argv, &c);
    if (st != SNP_OK) return comm_fail(NULL, st, "test_comm");
    g_rank = comm_rank(c);
    if (argc == 3 && strcmp(argv[1], "--fault-run") == 0) return fault_run(c, argv[2]);

    test_counts tc = {0};
    test_topology(c, &tc);
    test_all_reduce(c, &tc);
    test_broadcast(c, &tc);
    test_counters(c, &tc);
    test_errors(c, &tc);
    test_fault_parser(&tc);

    // The verdict is the job's: every rank reports the sums, rank 0 prints them.
    float totals[2] = {(float)tc.passed, (float)tc.failed};
    st = comm_all_reduce_sum_f32(c, totals, 2);
    if (st != SNP_OK) return comm_fail(c, st, "test_comm");
    test_counts all = {(int)totals[0], (int)totals[1], 0};
    int size = comm_size(c);
    int rc = all.failed ? 1 : 0;
    if (comm_rank(c) == 0) {
        char name[64];
        snprintf(name, sizeof name, "test_comm (%d rank%s)", size, size == 1 ? "" : "s");
        rc = test_finish(&all, name);
    }
    comm_free(c);
    return rc;
}
