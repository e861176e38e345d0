// session: what every model-running subcommand sets up the same way: the backend,
// the model and (optionally) its tokenizer, and their teardown.
#ifndef SNAPTP_SESSION_H
#define SNAPTP_SESSION_H

#include "../comm/comm.h"
#include "../kernels/backend.h"
#include "../runtime/model.h"
#include "../runtime/tokenizer.h"

typedef struct session_options {
    const char *model_path;
    const char *tokenizer_path; // NULL: the model's own (GGUF metadata or tokenizer.json)
    const char *backend_name;   // "cpu" unless given
    int n_threads;
    int no_mmap; // --no-mmap: copy weights out of the checkpoint (backend_options.copy_weights)
    const char *kv_dtype; // --kv-dtype: "f16", "f32", "bf16"; NULL: the backend's default
    int need_tokenizer;
} session_options;

typedef struct session {
    comm *comm; // this run's ranks (size 1 without mpirun)
    backend *be;
    model *m;
    tokenizer *tok; // NULL unless asked for
    double load_s;
} session;

// session_init_comm: joins the MPI job (a job of one without mpirun). Call first;
// session_close leaves it.
snp_status session_init_comm(int *argc, char ***argv, session *out);

// session_is_root: rank 0 prints results, progress and tables.
int session_is_root(const session *s);

// session_shard: this rank's tensor-parallel slice.
model_shard session_shard(const session *s);

// session_open: opens everything in options; on failure prints nothing, leaves
// the message in snp_error() and what it opened in *out (session_close frees it).
snp_status session_open(const session_options *opt, session *out);

// session_open_tokenizer / session_open_model: the two halves of session_open, for
// commands that tokenize (and plan memory) before loading any weight. `out` must
// be zeroed before the first.
snp_status session_open_tokenizer(const session_options *opt, session *out);
snp_status session_open_model(const session_options *opt, session *out);
void session_close(session *s);

// session_kv_type: the K/V element type the backend of `opt` keeps for its
// --kv-dtype, for memory plans made before the backend opens; an unknown name or a
// type the backend cannot keep fails naming the flag.
snp_status session_kv_type(const session_options *opt, dtype *out);

// session_note_chat_template: on rank 0, says on stderr which template family a
// prompt was formatted with when the model ships no chat template and the family was
// assumed from its vocabulary (never silently). Fails when no family fits.
snp_status session_note_chat_template(const session *s, const char *command);

// session_report_error: "[rank r/n host] snaptp <command>: <message>" on stderr;
// on several ranks it ends them all (MPI_Abort), never leaving peers hung.
// Returns the exit code for a single rank.
int session_report_error(session *s, const char *command, snp_status st);

#endif
