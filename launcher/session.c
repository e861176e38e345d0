// session: backend + model + tokenizer setup shared by the subcommands.
#include "session.h"

#include "../runtime/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/engine.h"

snp_status session_init_comm(int *argc, char ***argv, session *out) {
    memset(out, 0, sizeof *out);
    return comm_init(argc, argv, &out->comm);
}

int session_is_root(const session *s) { return !s->comm || comm_rank(s->comm) == 0; }

model_shard session_shard(const session *s) {
    return s->comm ? (model_shard){comm_rank(s->comm), comm_size(s->comm)} : (model_shard){0, 1};
}

snp_status session_open_tokenizer(const session_options *opt, session *out) {
    if (!opt->model_path) return snp_fail(SNP_ERR_ARGUMENT, "--model PATH is required");
    TRY(model_path_check(opt->model_path));
    const char *tp = opt->tokenizer_path ? opt->tokenizer_path : opt->model_path;
    return tokenizer_load(tp, &out->tok);
}

// session_check_vocab: the model samples ids below its n_vocab; a tokenizer that
// lacks most of them belongs to another model. Checkpoints pad their embedding past
// the tokenizer (Qwen2.5: 151,936 rows for 151,665 tokens), so a tokenizer covering
// 99% is accepted, and an id beyond it that still comes up fails in the decoder.
static snp_status session_check_vocab(const session_options *opt, const session *s) {
    const int32_t n_tok = tokenizer_n_vocab(s->tok), n_model = s->m->cfg.n_vocab;
    if ((int64_t)n_tok * 100 >= (int64_t)n_model * 99) return SNP_OK;
    return snp_fail(SNP_ERR_ARGUMENT,
                    "the tokenizer %s has %d tokens but the model %s has a vocabulary of %d: "
                    "they do not belong together (the model would produce ids the tokenizer "
                    "cannot decode)",
                    opt->tokenizer_path ? opt->tokenizer_path : "(the model's own)", n_tok,
                    opt->model_path, n_model);
}

static snp_status kv_dtype_from_flag(const session_options *opt, kv_dtype *out) {
    *out = KV_DTYPE_DEFAULT;
    if (!opt->kv_dtype) return SNP_OK;
    const int t = kv_dtype_parse(opt->kv_dtype);
    if (t < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "--kv-dtype '%s' must be f16, f32 or bf16", opt->kv_dtype);
    *out = (kv_dtype)t;
    return SNP_OK;
}

snp_status session_kv_type(const session_options *opt, dtype *out) {
    kv_dtype asked;
    TRY(kv_dtype_from_flag(opt, &asked));
    const char *backend = opt->backend_name ? opt->backend_name : "cpu";
    const int t = backend_kv_type_for(backend, asked);
    if (t < 0)
        return snp_fail(SNP_ERR_ARGUMENT, "--kv-dtype %s: the %s backend keeps %s", opt->kv_dtype,
                        backend, strcmp(backend, "cuda") == 0 ? "bf16 only" : "f16 or f32");
    *out = (dtype)t;
    return SNP_OK;
}

snp_status session_open_model(const session_options *opt, session *out) {
    if (!opt->model_path) return snp_fail(SNP_ERR_ARGUMENT, "--model PATH is required");
    TRY(model_path_check(opt->model_path));
    double t0 = engine_now_s();
    // One rank per GPU: the local rank picks the device (the backend wraps it
    // around the devices it sees). On the CPU the ranks of one host share its
    // cores: the default of every core per rank would oversubscribe them, and
    // every op waits for its slowest thread.
    int n_threads = opt->n_threads;
    const char *env = getenv("SNAPTP_THREADS"); // a batch script's default for --threads
    if (n_threads <= 0 && env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end != '\0' || v < 1 || v > 512)
            return snp_fail(SNP_ERR_ARGUMENT, "SNAPTP_THREADS='%s': expected 1 to 512 threads", env);
        n_threads = (int)v;
    }
    const int local = out->comm ? comm_local_size(out->comm) : 1;
    if (n_threads <= 0 && local > 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cores > local ? (int)(cores / local) : 1;
    }
    kv_dtype kv_type;
    TRY(kv_dtype_from_flag(opt, &kv_type));
    const backend_options bo = {.n_threads = n_threads,
                                .copy_weights = opt->no_mmap,
                                .kv_type = kv_type,
                                .device = out->comm ? comm_local_rank(out->comm) : 0};
    TRY(backend_open(opt->backend_name ? opt->backend_name : "cpu", &bo, &out->be));
    // Device-memory backends join partial sums with NCCL where every rank has its
    // own GPU, else through host memory over MPI (SNAPTP_COMM, comm.h). NCCL must
    // sit on the device the backend chose, not on the raw local rank: with one
    // visible GPU per rank (Slurm's CUDA_VISIBLE_DEVICES) the backend wraps rank 1
    // to device 0, and the raw ordinal 1 would make every rank >= 1 decline NCCL.
    if (out->comm && !out->be->ops->host_memory) {
        const int device = out->be->ops->device ? out->be->ops->device(out->be->ctx) : bo.device;
        TRY(comm_device_setup(out->comm, device));
    }
    const model_shard shard = session_shard(out);
    TRY(model_load(opt->model_path, out->be, &shard, &out->m));
    out->load_s = engine_now_s() - t0;
    if (out->tok) TRY(session_check_vocab(opt, out));
    return SNP_OK;
}

snp_status session_open(const session_options *opt, session *out) {
    // On failure what was opened stays in *out for session_close, and the
    // communicator stays up so the error can still name the rank and end the job.
    if (opt->need_tokenizer) TRY(session_open_tokenizer(opt, out));
    TRY(session_open_model(opt, out));
    return SNP_OK;
}

void session_close(session *s) {
    tokenizer_free(s->tok);
    model_free(s->m);
    backend_close(s->be);
    comm_free(s->comm);
    memset(s, 0, sizeof *s);
}

int session_report_error(session *s, const char *command, snp_status st) {
    if (s->comm) return comm_fail(s->comm, st, command);
    fprintf(stderr, "snaptp %s: %s: %s\n", command, snp_status_name(st), snp_error());
    return 1;
}

snp_status session_note_chat_template(const session *s, const char *command) {
    const char *family = NULL;
    TRY(chat_template_family(s->tok, &family));
    if (!tokenizer_chat_template(s->tok) && session_is_root(s))
        fprintf(stderr,
                "snaptp %s: the model has no chat template; formatting the prompt as '%s', "
                "which its vocabulary implies\n",
                command, family);
    return SNP_OK;
}
