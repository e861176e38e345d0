// session: backend + model + tokenizer setup shared by the subcommands.
#include "session.h"

#include <stdio.h>
#include <string.h>

#include "../runtime/engine.h"

snp_status session_open_tokenizer(const session_options *opt, session *out) {
    if (!opt->model_path) return snp_fail(SNP_ERR_ARGUMENT, "--model PATH is required");
    const char *tp = opt->tokenizer_path ? opt->tokenizer_path : opt->model_path;
    return tokenizer_load(tp, &out->tok);
}

snp_status session_open_model(const session_options *opt, session *out) {
    if (!opt->model_path) return snp_fail(SNP_ERR_ARGUMENT, "--model PATH is required");
    double t0 = engine_now_s();
    const backend_options bo = {.n_threads = opt->n_threads, .device = 0};
    TRY(backend_open(opt->backend_name ? opt->backend_name : "cpu", &bo, &out->be));
    const model_shard whole = {0, 1};
    TRY(model_load(opt->model_path, out->be, &whole, &out->m));
    out->load_s = engine_now_s() - t0;
    return SNP_OK;
}

snp_status session_open(const session_options *opt, session *out) {
    memset(out, 0, sizeof *out);
    snp_status st = SNP_OK;
    if (opt->need_tokenizer) TRY_GOTO(st, session_open_tokenizer(opt, out), fail);
    TRY_GOTO(st, session_open_model(opt, out), fail);
    return SNP_OK;
fail:
    session_close(out);
    return st;
}

void session_close(session *s) {
    tokenizer_free(s->tok);
    model_free(s->m);
    backend_close(s->be);
    memset(s, 0, sizeof *s);
}

int session_report_error(const char *command, snp_status st) {
    fprintf(stderr, "snaptp %s: %s: %s\n", command, snp_status_name(st), snp_error());
    return 1;
}
