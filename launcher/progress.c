// progress: prefill progress display.
#include "progress.h"

#include <stdio.h>
#include <unistd.h>

#include "../runtime/engine.h"

void progress_init(progress *p, int enabled) {
    p->t_start = engine_now_s();
    p->t_last = 0;
    p->is_tty = isatty(fileno(stderr));
    p->enabled = enabled;
    p->printed = 0;
}

void progress_update(void *user, int layer, int n_layers, int chunk, int n_chunks, int n_tokens) {
    progress *p = user;
    if (!p->enabled) return;
    const double now = engine_now_s();
    const int layer_done = chunk + 1 == n_chunks;
    // A terminal gets at most 10 redraws a second; a log gets one line per layer.
    if (p->is_tty ? now - p->t_last < 0.1 && !(layer_done && layer + 1 == n_layers) : !layer_done)
        return;
    p->t_last = now;
    const double frac = ((double)layer * n_chunks + chunk + 1) / ((double)n_layers * n_chunks);
    const double elapsed = now - p->t_start;
    const double tps = elapsed > 0 ? frac * n_tokens / elapsed : 0;
    const double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0;
    // The prefill's last line ends at once, also on a terminal: the answer streams on
    // stdout right after it and must not land on the progress line.
    const int last = layer_done && layer + 1 == n_layers;
    fprintf(stderr, "%sprefill layer %d/%d chunk %d/%d | %d tokens | %.0f tokens/s | ETA %.0f s%s",
            p->is_tty ? "\r\033[K" : "", layer + 1, n_layers, chunk + 1, n_chunks, n_tokens, tps,
            eta, !p->is_tty || last ? "\n" : "");
    fflush(stderr);
    p->printed = p->is_tty && !last; // a redrawn line still open
}

// progress_done: ends a line left open by a prefill that stopped early (an error).
void progress_done(progress *p) {
    if (p->enabled && p->is_tty && p->printed) fprintf(stderr, "\n");
    p->printed = 0;
}
