// progress: the prefill progress line on stderr (layer i/L, chunk, tokens/s, ETA):
// redrawn in place on a terminal, one line per layer otherwise.
#ifndef SNAPTP_PROGRESS_H
#define SNAPTP_PROGRESS_H

typedef struct progress {
    double t_start;
    double t_last;
    int is_tty;
    int enabled;
    int printed;
} progress;

// progress_init: enabled = 0 silences it (--quiet, --json, ranks other than 0).
void progress_init(progress *p, int enabled);

// progress_update: a forward_progress_fn (user = progress*).
void progress_update(void *user, int layer, int n_layers, int chunk, int n_chunks, int n_tokens);

// progress_done: ends the line on a terminal.
void progress_done(progress *p);

#endif
