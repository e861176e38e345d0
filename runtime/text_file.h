// text_file: reads a whole file (prompt, document, config) into a NUL-terminated
// buffer; the one file reader of the launcher and the JSON configs.
#ifndef SNAPTP_TEXT_FILE_H
#define SNAPTP_TEXT_FILE_H

#include <stddef.h>

#include "status.h"

// text_file_read: *out is malloc'd and NUL-terminated; *out_n (if not NULL) is the
// length without the NUL. "-" reads stdin. Fails naming the file.
snp_status text_file_read(const char *path, char **out, size_t *out_n);

#endif
