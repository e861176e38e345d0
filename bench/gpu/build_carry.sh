#!/usr/bin/env bash
# build_carry.sh: prepares, HERE, what the GPU benchmark carries to the lent machine
# (the folder .gpu, ignored by git): the snaptp binary built for sm_80/sm_90 without
# -march=native (the device's CPU may lack this machine's vector extensions), and the
# runtime .debs (fetch_mpi_debs.sh). Building here rather than there saves 2-3
# minutes of device time per call and needs no -dev packages on the device; the
# binary needs glibc >= 2.34, libcudart.so.13 and libcublas.so.13 there.
#
#   bench/gpu/build_carry.sh [BUILD_DIR]     (default: <repo>/build-gpu)
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build-gpu}"
carry="$root/.gpu"

cmake -S "$root" -B "$build" -DSNAPTP_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j2 --target snaptp test_cuda_ops test_backend_parity test_tp
mkdir -p "$carry/bin"
cp "$build/snaptp" "$build/tests/test_cuda_ops" "$build/tests/test_backend_parity" \
    "$build/tests/test_tp" "$carry/bin/"

# test_comm_select with NCCL linked (a build of its own, so that the benchmark's
# snaptp does not depend on finding libnccl.so.2 there): on one GPU it runs the real
# NCCL all-reduce through the CUDA backend's stream.
nccl=""
for f in /usr/local/cuda/lib64/libnccl.so /usr/local/cuda/lib/libnccl.so \
    /usr/lib/x86_64-linux-gnu/libnccl.so; do
    [ -e "$f" ] && nccl="$f" && break
done
if [ -n "$nccl" ]; then
    cmake -S "$root" -B "$build-nccl" -DSNAPTP_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release \
        -DNCCL_LIBRARY="$nccl" >/dev/null
    cmake --build "$build-nccl" -j2 --target test_comm_select
    cp "$build-nccl/tests/test_comm_select" "$carry/bin/"
else
    echo "build_carry.sh: no libnccl.so found: test_comm_select is not carried" >&2
fi
"$root/bench/gpu/fetch_mpi_debs.sh" "$carry/debs"

# What a device call sends: the tracked and untracked-not-ignored files, plus .gpu,
# once slim.sh has taken out what the GPU check does not read.
tree=$(cd "$root" && bash bench/gpu/slim.sh tree-bytes)
extra=$(du -sb "$carry" | cut -f1)
total=$((tree + extra))
echo "build_carry.sh: working tree after slim.sh $((tree >> 20)) MiB + .gpu $((extra >> 20)) MiB = $((total >> 20)) MiB (limit 64 MiB)"
glibc=$(objdump -T "$carry/bin/snaptp" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "build_carry.sh: .gpu/bin/snaptp needs $glibc; the .debs need GLIBC_2.36"
[ "$total" -lt $((64 << 20)) ] || { echo "build_carry.sh: over the 64 MiB limit" >&2; exit 1; }
