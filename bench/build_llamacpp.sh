#!/usr/bin/env bash
# build_llamacpp: builds llama.cpp's llama-bench and llama-server from the llama.cpp
# sources vendored in the llama-cpp-python sdist on PyPI (the one registry with
# llama.cpp sources this machine reaches), CPU only, tuned for this CPU, into
# DIR/build/bin (default /work/llamacpp). The benchmarks that compare against
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
cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$dir/build" -j "$(nproc)" --target llama-bench llama-server >&2
echo "build_llamacpp: $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "from $(basename "$sdist")")" >&2
ls "$dir/build/bin/llama-bench" "$dir/build/bin/llama-server"
