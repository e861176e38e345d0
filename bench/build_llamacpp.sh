#!/usr/bin/env bash
# build_llamacpp: builds llama.cpp's llama-bench and llama-server from the llama.cpp
# sources vendored in the llama-cpp-python sdist on PyPI (the one registry with
# llama.cpp sources this machine reaches), CPU only, tuned for this CPU, into
# DIR/build/bin (default /work/llamacpp). The instruction sets are this CPU's (as
# GGML_NATIVE would pick) except AMX: a VM's CPU flags can list it while the kernel
# does not grant the tile state, and ggml's AMX matmul then segfaults.
# The benchmarks that compare against
# llama.cpp (bench_generate.sh, bench_contention.sh) look there by default.
#
# Usage: bash bench/build_llamacpp.sh [DIR]    (env LLAMACPP_PYPI_VERSION pins the sdist)
set -euo pipefail
dir="${1:-/work/llamacpp}"
mkdir -p "$dir"
cd "$dir"
spec="llama-cpp-python${LLAMACPP_PYPI_VERSION:+==$LLAMACPP_PYPI_VERSION}"
sdist="$(ls llama_cpp_python-*.tar.gz 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$sdist" ]; then
    python3 -m pip download --no-deps --no-binary :all: "$spec" -d . >&2
    sdist="$(ls llama_cpp_python-*.tar.gz | sort -V | tail -1)"
fi
src="$dir/src"
if [ ! -f "$src/CMakeLists.txt" ]; then
    rm -rf "$src" "$dir/unpack"
    mkdir -p "$dir/unpack"
    tar -xzf "$sdist" -C "$dir/unpack"
    mv "$dir"/unpack/llama_cpp_python-*/vendor/llama.cpp "$src"
    rm -rf "$dir/unpack"
fi
flags=" $(grep -m1 '^flags' /proc/cpuinfo) "
isa=""
for f in avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512vbmi avx512_vnni avx512_bf16; do
    on=OFF
    case "$flags" in *" $f "*) on=ON ;; esac
    case $f in
    avx512f) isa+=" -DGGML_AVX512=$on" ;;
    avx512vbmi) isa+=" -DGGML_AVX512_VBMI=$on" ;;
    avx512_vnni) isa+=" -DGGML_AVX512_VNNI=$on" ;;
    avx512_bf16) isa+=" -DGGML_AVX512_BF16=$on" ;;
    avx512bw | avx512vl | avx512dq) ;; # part of GGML_AVX512
    *) isa+=" -DGGML_$(echo $f | tr a-z A-Z)=$on" ;;
    esac
done
cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
    $isa -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >&2
cmake --build "$dir/build" -j "$(nproc)" --target llama-bench llama-server >&2
echo "build_llamacpp: $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "from $(basename "$sdist")")" >&2
ls "$dir/build/bin/llama-bench" "$dir/build/bin/llama-server"
