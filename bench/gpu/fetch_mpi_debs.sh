#!/usr/bin/env bash
# fetch_mpi_debs.sh: downloads, HERE (Debian bookworm, apt reachable), the .debs of
# the shared libraries the snaptp binary needs and the lent GPU machines lack: Open
# MPI 4.1 (libmpi links into snaptp even for tp = 1, where it runs as a singleton)
# with the libraries its components load, OpenBLAS, cJSON, utf8proc, PCRE2 and the
# GCC runtime pieces OpenBLAS uses. They go into an ignored folder of the repo,
# .gpu/debs, which the device call carries; bench/gpu/rt.py unpacks them there with
# `dpkg -x` into /tmp/snaptp-rt (never into /) and points only snaptp at them
# (LD_LIBRARY_PATH, OPAL_PREFIX). Bookworm's libraries need glibc >= 2.36 (Ubuntu
# 24.04 has 2.39); the binary itself needs 2.34.
#
#   bench/gpu/fetch_mpi_debs.sh [DEST]      (default: <repo>/.gpu/debs, about 14 MB)
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:-$root/.gpu/debs}"

# Each line: a package, and why it is carried. Base-system libraries every Ubuntu
# image has (libc6, libstdc++6, libgcc-s1, zlib1g, libudev1) stay out on purpose:
# older copies of those must not shadow the machine's own.
packages=(
    libopenmpi3             # libmpi, libopen-rte, libopen-pal and the MCA components
    openmpi-common          # help texts: Open MPI's error messages read them
    openmpi-bin             # mpirun and orted: test_tp at tp = 2 on one GPU
    libpmix2                # PMIx, linked by the pmix components
    libevent-core-2.1-7     # libopen-pal's event loop
    libevent-pthreads-2.1-7
    libhwloc15              # topology (libopen-pal)
    libfabric1              # components opened at MPI_Init (failing ones are skipped,
    libucx0                 #   but each costs a warning; carrying them keeps it quiet)
    libibverbs1
    librdmacm1
    libnl-3-200
    libnl-route-3-200
    libpsm-infinipath1
    libpsm2-2
    libnuma1
    libmunge2
    libopenblas0-pthread    # BLAS of the CPU backend (linked even when it is not used)
    libgfortran5            # OpenBLAS's LAPACK part
    libquadmath0
    libcjson1               # configs and --json
    libutf8proc2            # tokenizer normalization
    libxxhash0              # KV store checksums and fingerprints
    libmicrohttpd12         # snaptp serve's HTTP server (linked into the binary)
    libpcre2-8-0            # tokenizer pre-split
)

mkdir -p "$dest"
# The folder must never be committed; .git/info/exclude is this clone's own list.
if [ -d "$root/.git" ] && ! grep -qx '/.gpu/' "$root/.git/info/exclude" 2>/dev/null; then
    mkdir -p "$root/.git/info"
    echo '/.gpu/' >>"$root/.git/info/exclude"
fi
rm -f "$dest"/*.deb
# apt-get download writes into the current directory; as root it may warn that the
# download ran unsandboxed (the _apt user cannot write into $dest): harmless.
(cd "$dest" && apt-get download "${packages[@]}" 2>&1 | grep -v "unsandboxed" || true)
n=$(ls "$dest"/*.deb 2>/dev/null | wc -l)
if [ "$n" -ne "${#packages[@]}" ]; then
    echo "fetch_mpi_debs.sh: got $n of ${#packages[@]} packages in $dest" >&2
    exit 1
fi
echo "fetch_mpi_debs.sh: $n packages, $(du -sh "$dest" | cut -f1) in $dest"
