// fuzz_support: scratch files for the harnesses (fuzz_support.h).
#include "fuzz_support.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void remove_dir(void) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

const char *fuzz_dir(void) {
    if (dir[0]) return dir;
    // /dev/shm keeps a million small writes off the disk.
    struct stat sb;
    const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/snaptp_fuzz.%ld", base, (long)getpid());
    if (mkdir(dir, 0700) != 0) {
        fprintf(stderr, "fuzz: cannot create %s\n", dir);
        abort();
    }
    atexit(remove_dir);
    return dir;
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
    return path;
}

void fuzz_split(const uint8_t *data, size_t size, char **parts, int n_parts) {
    size_t start = 0;
    for (int i = 0; i < n_parts; i++) {
        size_t end = start;
        if (i + 1 < n_parts)
            while (end < size && data[end] != 0)
                end++;
        else
            end = size;
        size_t n = start < size ? end - start : 0;
        parts[i] = malloc(n + 1);
        if (!parts[i]) abort();
        if (n) memcpy(parts[i], data + start, n);
        parts[i][n] = '\0';
        start = end + 1;
    }
}

void fuzz_split_free(char **parts, int n_parts) {
    for (int i = 0; i < n_parts; i++)
        free(parts[i]);
}
