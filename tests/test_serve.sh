#!/usr/bin/env bash
# test_serve: snaptp serve, driven by OpenAI's Python client and raw HTTP
# (tests/serve_check.py says what it checks), at tp=1 and at tp=3 under mpirun.
set -u -o pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/tests/mpi_env.sh"
: "${SNAPTP_BIN:=$root/build/snaptp}"
if [ -z "${SNAPTP_SMOLLM2_GGUF:-}" ]; then
    [ "${CI:-}" = true ] && { echo "FAIL: SNAPTP_SMOLLM2_GGUF not set"; exit 1; }
    echo "skipped: SNAPTP_SMOLLM2_GGUF not set (bash tests/fetch_smollm2.sh prints the path)"
    exit 0
fi
python3 -c "import openai" 2>/dev/null || { echo "FAIL: the openai package is missing (tests/setup.sh installs it)"; exit 1; }
export SNAPTP_BIN SNAPTP_SOURCE_DIR="${SNAPTP_SOURCE_DIR:-$root}" MPI_FLAGS="${mpi_flags[*]}"
exec timeout -k 10 540 python3 "$root/tests/serve_check.py"
