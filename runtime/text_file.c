// text_file: whole-file reads.
#include "text_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

snp_status text_file_read(const char *path, char **out, size_t *out_n) {
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!fp) return snp_fail(SNP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    snp_status st = SNP_OK;
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) break;
            buf = b;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    if (!buf || n + 1 > cap) {
        st = snp_fail(SNP_ERR_MEMORY, "out of memory reading %s", path);
    } else if (ferror(fp)) {
        st = snp_fail(SNP_ERR_IO, "cannot read %s", path);
    } else {
        buf[n] = '\0';
        *out = buf;
        buf = NULL;
        if (out_n) *out_n = n;
    }
    free(buf);
    if (fp != stdin) fclose(fp);
    return st;
}
