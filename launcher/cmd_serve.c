// cmd_serve: `snaptp serve`: an OpenAI-compatible HTTP server over continuous
// batching (runtime/scheduler.h). Rank 0 owns the HTTP server (server/); under
// mpirun every rank runs the scheduler's step loop in lockstep. SIGTERM or SIGINT
// drains (SIGUSR1 too, the signal mpirun passes on to the ranks): the listening
// socket closes, running and queued requests finish, then every rank exits 0; a
// second signal cancels what still runs.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/chat_template.h"
#include "../runtime/memory_plan.h"
#include "../runtime/run_config.h"
#include "../runtime/scheduler.h"
#include "../runtime/snapkv_preset.h"
#include "../server/http_server.h"
#include "../server/serve.h"
#include "args.h"
#include "commands.h"
#include "session.h"

// Signals: the handler only writes the signal's number into a pipe (what a handler
// may safely do, on whichever thread the kernel picked); a thread of rank 0 reads it
// and turns the first into a drain, the next into a stop. A handler rather than a
// blocked mask and sigwait: MPI's own threads do not keep an inherited mask.
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    const int saved = errno;
    const unsigned char c = (unsigned char)sig;
    if (write(signal_pipe[1], &c, 1) < 0) {
        // The pipe is full of earlier signals: this one adds nothing.
    }
    errno = saved;
}

typedef struct signal_watch {
    scheduler *sched;
    http_server *http;
    pthread_t thread;
    int started;
} signal_watch;

static void *watch_signals(void *arg) {
    signal_watch *w = arg;
    for (int n = 0;;) {
        unsigned char sig = 0;
        const ssize_t k = read(signal_pipe[0], &sig, 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0 || sig == 0) return NULL; // 0: the server ended on its own
        if (n++ == 0) {
            fprintf(stderr, "snaptp serve: %s: draining (no new connections; running and queued "
                            "requests finish; again to cancel them)\n", strsignal(sig));
            http_server_quiesce(w->http);
            scheduler_drain(w->sched);
        } else {
            fprintf(stderr, "snaptp serve: %s again: cancelling the running requests\n",
                    strsignal(sig));
            scheduler_stop(w->sched);
        }
    }
}

// catch_signals: SIGTERM, SIGINT and SIGUSR1 drain rank 0; the other ranks ignore
// them and end when rank 0's step plan says so. Under mpirun SIGUSR1 is the one to
// send: Open MPI's mpirun passes it on to every rank, while on SIGTERM it kills
// the job itself.
static snp_status catch_signals(int root) {
    if (root && pipe(signal_pipe) != 0)
        return snp_fail(SNP_ERR_IO, "serve: pipe for signals: %s", strerror(errno));
    struct sigaction sa = {0};
    sa.sa_handler = root ? on_signal : SIG_IGN;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    const int sigs[] = {SIGTERM, SIGINT, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
    return SNP_OK;
}

// default_kv_pool: the KV pool when --kv-memory is not given: on the CPU, half of
// this rank's share of the machine's memory, less its weights.
static snp_status default_kv_pool(const session *s, uint64_t *out) {
    if (!s->be->ops->host_memory)
        return snp_fail(SNP_ERR_ARGUMENT, "serve: give --kv-memory SIZE on the %s backend (the "
                        "device memory each rank may spend on KV caches)", s->be->ops->name);
    const uint64_t machine = memory_machine_bytes();
    const int local = s->comm ? comm_local_size(s->comm) : 1;
    const uint64_t share = machine / 2 / (uint64_t)(local > 0 ? local : 1);
    if (share <= s->m->weight_bytes + (64u << 20))
        return snp_fail(SNP_ERR_MEMORY, "serve: half of this rank's share of the machine's memory "
                        "(%.0f MiB) does not exceed its weights (%.0f MiB): give --kv-memory",
                        (double)share / 1048576.0, (double)s->m->weight_bytes / 1048576.0);
    *out = share - s->m->weight_bytes;
    return SNP_OK;
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b && b[1] ? b + 1 : path;
}

int cmd_serve(int argc, char **argv) {
    run_config rc = run_config_defaults();
    const char *config = NULL, *host = "127.0.0.1", *api_key = NULL, *kv_memory = NULL;
    const char *max_body = "64M", *served_name = NULL;
    int port = 8080, max_seqs = 16, max_queue = 256, no_mmap = 0;
    signal_watch watch = {0};
    session s;
    snp_status st = session_init_comm(&argc, &argv, &s);
    if (st != SNP_OK) return session_report_error(&s, "serve", st);
    const char *cfg_path = args_find_value(argc, argv, "--config");
    if (cfg_path && (st = run_config_load(cfg_path, &rc)) != SNP_OK) {
        int code = session_report_error(&s, "serve", st);
        session_close(&s);
        return code;
    }
    const arg_spec specs[] = {
        {"--config", ARG_STRING, &config, "PATH", "runtime preset (configs/*.json): the defaults of every request; flags override it", NULL},
        {"--model", ARG_STRING, &rc.model, "PATH", "GGUF file or safetensors directory", NULL},
        {"--tokenizer", ARG_STRING, &rc.tokenizer, "PATH", "tokenizer (default: the model's)", NULL},
        {"--served-model-name", ARG_STRING, &served_name, "NAME", "the model id of /v1/models and of requests (default: the model's file name)", NULL},
        {"--host", ARG_STRING, &host, "ADDR", "address to listen on (127.0.0.1)", NULL},
        {"--port", ARG_INT, &port, "N", "port to listen on (8080; 0: any free port, printed at start)", NULL},
        {"--api-key", ARG_STRING, &api_key, "KEY", "require 'Authorization: Bearer KEY' on /v1/ (default: none)", NULL},
        {"--max-seqs", ARG_POSITIVE, &max_seqs, "N", "sequences decoding at once (16)", NULL},
        {"--max-queue", ARG_COUNT, &max_queue, "N", "requests waiting beyond those; more get 429 (256)", NULL},
        {"--kv-memory", ARG_STRING, &kv_memory, "SIZE", "memory per rank for KV caches and prefill buffers, e.g. 4G (CPU default: half of the rank's share of memory, less its weights)", NULL},
        {"--max-body", ARG_STRING, &max_body, "SIZE", "largest request body; more gets 413 (64M)", NULL},
        {"--kv-policy", ARG_STRING, &rc.kv_policy, "full|snapkv", "default KV policy of a request (snapkv; a prompt within the budget runs full, which is the same)", NULL},
        {"--window", ARG_POSITIVE, &rc.snapkv.window, "N", "default SnapKV window (the model's preset, else 32)", NULL},
        {"--budget", ARG_POSITIVE, &rc.snapkv.budget, "N", "default SnapKV rows kept per KV head (the model's preset, else 2048)", NULL},
        {"--kernel", ARG_POSITIVE, &rc.snapkv.kernel, "N", "default SnapKV pooling kernel, odd (the model's preset, else 7)", NULL},
        {"--pooling", ARG_STRING, &rc.pooling, "avg|max", "default SnapKV pooling (max)", NULL},
        {"--max-tokens", ARG_POSITIVE, &rc.max_tokens, "N", "tokens a request generates when it gives no max_tokens (256, within the context)", NULL},
        {"--temperature", ARG_FLOAT, &rc.sampling.temperature, "T", "temperature of a request that gives none (0: greedy; OpenAI's API default is 1)", NULL},
        {"--top-k", ARG_COUNT, &rc.sampling.top_k, "K", "default top-k (0: off)", NULL},
        {"--top-p", ARG_FLOAT, &rc.sampling.top_p, "P", "default nucleus mass (1: off)", NULL},
        {"--chunk", ARG_POSITIVE, &rc.chunk, "N", "prefill chunk in tokens (512; at least --max-seqs)", NULL},
        {"--threads", ARG_POSITIVE, &rc.threads, "N", "CPU threads (default: the cores this process may run on, split between the ranks of a host; env SNAPTP_THREADS)", NULL},
        {"--no-mmap", ARG_FLAG, &no_mmap, NULL, "copy weights into memory instead of using the file's mapping", NULL},
        {"--backend", ARG_STRING, &rc.backend, "NAME", "cpu or cuda (cpu)", NULL},
        {"--kv-dtype", ARG_STRING, &rc.kv_dtype, "f16|f32|bf16", "KV cache element type (CPU: f16; CUDA: bf16)", NULL},
    };
    int rcode = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], "serve",
                           "usage: snaptp serve --model PATH [--host ADDR] [--port N] "
                           "[--max-seqs N] [--api-key KEY] [options]   (under mpirun -np N too)");
    if (rcode) {
        run_config_free(&rc);
        session_close(&s);
        return rcode == 1 ? 0 : rcode;
    }
    const int root = session_is_root(&s);
    session_options so = {.model_path = rc.model, .tokenizer_path = rc.tokenizer,
                          .backend_name = rc.backend, .n_threads = rc.threads, .no_mmap = no_mmap,
                          .kv_dtype = rc.kv_dtype, .need_tokenizer = 1};
    forward_ctx *f = NULL;
    scheduler *sched = NULL;
    http_server *http = NULL;
    int32_t *stop_ids = NULL;
    metrics met;
    metrics_init(&met);
    uint64_t pool = 0, body_limit = 0;
    serve_defaults def = {.sampling = rc.sampling, .max_tokens = rc.max_tokens};
    TRY_GOTO(st, catch_signals(root), done);
    if (!rc.model) {
        st = snp_fail(SNP_ERR_ARGUMENT, "give --model (or a --config with one)");
        goto done;
    }
    if (rc.tp > 0 && s.comm && comm_size(s.comm) != rc.tp) {
        st = snp_fail(SNP_ERR_ARGUMENT, "serve: the config asks for tp = %d ranks, the job has %d",
                      rc.tp, comm_size(s.comm));
        goto done;
    }
    if (max_seqs > rc.chunk) {
        st = snp_fail(SNP_ERR_ARGUMENT, "serve: --max-seqs %d must not exceed --chunk %d (a decode "
                      "batch is one chunk)", max_seqs, rc.chunk);
        goto done;
    }
    TRY_GOTO(st, kv_policy_parse(rc.kv_policy ? rc.kv_policy : "snapkv", &def.policy), done);
    TRY_GOTO(st, snapkv_pooling_parse(rc.pooling, &rc.snapkv.pooling), done);
    TRY_GOTO(st, memory_parse_size(max_body, &body_limit), done);
    sampler *probe = NULL; // the defaults are checked now, not at the first request
    TRY_GOTO(st, sampler_init(&def.sampling, 1, &probe), done);
    sampler_free(probe);
    TRY_GOTO(st, session_open(&so, &s), done);
    snapkv_params_fill(&rc.snapkv, &s.m->cfg);
    def.snapkv = rc.snapkv;
    if (def.policy == KV_POLICY_SNAPKV) TRY_GOTO(st, snapkv_params_validate(&def.snapkv), done);
    if (kv_memory) TRY_GOTO(st, memory_parse_size(kv_memory, &pool), done);
    else TRY_GOTO(st, default_kv_pool(&s, &pool), done);
    TRY_GOTO(st, forward_init(s.m, rc.chunk, &f), done);
    TRY_GOTO(st, forward_set_comm(f, s.comm), done);
    const int32_t V = s.m->cfg.n_vocab;
    if (!(stop_ids = malloc(sizeof(int32_t) * (size_t)V))) {
        st = snp_fail(SNP_ERR_MEMORY, "serve: out of memory");
        goto done;
    }
    int n_stop = 0;
    for (int32_t id = 0; id < V; id++)
        if (tokenizer_is_eog(s.tok, id)) stop_ids[n_stop++] = id;
    const sched_options sopt = {.max_seqs = max_seqs, .max_queue = max_queue,
                                .kv_pool_bytes = pool, .stop_ids = stop_ids, .n_stop_ids = n_stop};
    TRY_GOTO(st, scheduler_create(s.m, f, s.comm, &sopt, &sched), done);

    serve_ctx sc = {0};
    if (root) {
        const char *family = NULL;
        sc = (serve_ctx){.model_id = served_name ? served_name : base_name(rc.model),
                         .model_path = rc.model, .tok = s.tok, .cfg = &s.m->cfg,
                         .has_chat = chat_template_family(s.tok, &family) == SNP_OK,
                         .sched = sched, .met = &met, .def = def, .api_key = api_key,
                         .max_body_bytes = (size_t)body_limit,
                         .tp_size = s.comm ? comm_size(s.comm) : 1, .created = (double)time(NULL)};
        TRY_GOTO(st, http_server_start(&sc, host, port, &http), done);
        watch.sched = sched;
        watch.http = http;
        if (pthread_create(&watch.thread, NULL, watch_signals, &watch) == 0) watch.started = 1;
        fprintf(stderr,
                "snaptp serve: listening on http://%s:%d (model %s, tp %d, %s backend, up to %d "
                "sequences, KV pool %.0f MiB per rank, default KV policy %s, chat template %s)\n",
                host, http_server_port(http), sc.model_id, sc.tp_size, s.be->ops->name, max_seqs,
                (double)pool / 1048576.0, kv_policy_name(def.policy),
                sc.has_chat ? family : "none");
    }
    st = scheduler_run(sched);
    if (root && st == SNP_OK) {
        // Every request has ended; its HTTP thread may still be sending the last bytes
        // (a stream's [DONE]): wait for them before the connections close.
        for (int i = 0; i < 3000 && atomic_load(&sc.live) > 0; i++) usleep(10000);
        fprintf(stderr, "snaptp serve: drained, exiting\n");
    }
done:
    if (watch.started) {
        const unsigned char end = 0;
        if (write(signal_pipe[1], &end, 1) == 1) pthread_join(watch.thread, NULL);
    }
    http_server_stop(http);
    scheduler_free(sched);
    forward_free(f);
    free(stop_ids);
    metrics_free(&met);
    run_config_free(&rc);
    int code = st != SNP_OK ? session_report_error(&s, "serve", st) : 0;
    session_close(&s);
    return code;
}
