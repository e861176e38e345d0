// fuzz_support: what the libFuzzer harnesses of tests/fuzz share: the readers take
// paths, so each input is written to a file of this process's own (in tmpfs when
// there is one) under the name the reader expects, and a directory to put it in.
#ifndef SNAPTP_FUZZ_SUPPORT_H
#define SNAPTP_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

// fuzz_dir: this process's scratch directory, made on first use and removed at exit.
const char *fuzz_dir(void);

// fuzz_file: writes data[0..size) to fuzz_dir()/name (replacing it) and returns the
// path (a static buffer, valid until the next call). Aborts on an I/O error: a
// harness that cannot write its input tests nothing.
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);

// fuzz_split: cuts data at the first n_parts - 1 NUL bytes into NUL-terminated
// malloc'd copies in parts[] (missing parts are ""). Free with fuzz_split_free.
void fuzz_split(const uint8_t *data, size_t size, char **parts, int n_parts);
void fuzz_split_free(char **parts, int n_parts);

// The libFuzzer entry point each harness defines (replay_main.c calls it too).
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
