#!/usr/bin/env bash
# bench/gpu/slim.sh on|off|size: keeps a device call under its 64 MiB. A call sends the
# working tree (the index's files and the untracked ones git does not ignore) plus the
# carried .gpu, and the tracked tree alone has grown past that (69 MiB: the golden
# models). The GPU check reads none of SnapKV's goldens, the tokenizer and chat-template
# test data, or the fuzz corpora, so for the call they leave the index and are ignored:
#
#   bash bench/gpu/slim.sh on     # before the `run` call: drop SLIM from the index
#   bash bench/gpu/slim.sh off    # right after it: put them back (the files never left disk)
#   bash bench/gpu/slim.sh size   # what a call would send now, in MiB
#   bash bench/gpu/slim.sh tree-bytes   # the tree a call sends once slimmed, in bytes
#
# Between on and off the index holds their deletion: commit nothing then. `on` refuses
# to start with anything staged, `off` restores exactly the state before `on`.
set -euo pipefail
cd "$(dirname "$0")/../.."
SLIM=(tests/golden_snapkv tests/data tests/fuzz/corpus)
exclude="$(git rev-parse --git-path info/exclude)"
begin="# bench/gpu/slim.sh: begin" end="# bench/gpu/slim.sh: end"

tree_bytes() { # tracked and untracked-not-ignored files; with `slimmed`, less SLIM
    local drop='^$' # matches no path
    [ "${1:-}" = slimmed ] && drop="^($(IFS='|'; echo "${SLIM[*]}"))/"
    git ls-files -co --exclude-standard | grep -v -E "$drop" | tr '\n' '\0' |
        du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1
}

sent_bytes() { # what a call sends now: the tree and .gpu (carried)
    local extra=0
    [ -d .gpu ] && extra=$(du -sb .gpu | cut -f1)
    echo $(($(tree_bytes) + extra))
}

case "${1:-}" in
on)
    if grep -qxF "$begin" "$exclude" 2>/dev/null; then echo "slim.sh: already on" >&2; exit 1; fi
    if ! git diff --cached --quiet; then
        echo "slim.sh: the index has staged changes; commit or unstage them first" >&2
        exit 1
    fi
    git rm -r -q --cached -- "${SLIM[@]}"
    { echo "$begin"; for p in "${SLIM[@]}"; do echo "/$p/"; done; echo "$end"; } >>"$exclude"
    echo "slim.sh: on: a call sends $(($(sent_bytes) >> 20)) MiB (limit 64); run 'slim.sh off' after it"
    ;;
off)
    if ! grep -qxF "$begin" "$exclude" 2>/dev/null; then echo "slim.sh: not on" >&2; exit 1; fi
    sed -i "\\|^$begin\$|,\\|^$end\$|d" "$exclude"
    git reset -q -- "${SLIM[@]}"
    echo "slim.sh: off: the index is back ($(git status --short -- "${SLIM[@]}" | wc -l) changes there)"
    ;;
size)
    echo "$(($(sent_bytes) >> 20)) MiB"
    ;;
tree-bytes) # the tree a call sends once slimmed (build_carry.sh, tests/test_gpu_bench_dry.sh)
    tree_bytes slimmed
    ;;
*)
    echo "usage: bench/gpu/slim.sh on|off|size|tree-bytes" >&2
    exit 2
    ;;
esac
