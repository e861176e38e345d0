#!/usr/bin/env bash
# run_all: the test command of the README and of CI. Installs and builds (setup.sh),
# builds the loader tests again under AddressSanitizer, the thread pool under
# ThreadSanitizer, and runs every test, then each libFuzzer harness for 30 s.
# ctest includes the multi-host tests: test_netns (three network-namespace hosts
# over TCP, and faults across them) and test_slurm (a one-node Slurm of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
export SNAPTP_SMOLLM2_GGUF="$(bash tests/fetch_smollm2.sh)"

# ctest includes test_gpu_bench_dry: bench/gpu/run_bench.py --phase all dry-run on the
# CPU (--tiny --with-rt), so the one-call GPU check cannot rot between GPU sessions.
echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j 2

echo "== bad-input tests under AddressSanitizer and LeakSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSNAPTP_SANITIZE=ON -DSNAPTP_CUDA=OFF >/dev/null
asan_tests="test_gguf|test_safetensors|test_bad_input|test_tokenizer_bad|test_cpu_pool|test_golden_models|test_backend_parity|test_qa_prompt|test_kv_store|test_scheduler|fuzz_.*_replay"
targets=(snaptp)
for t in test_gguf test_safetensors test_tokenizer_bad test_cpu_pool test_golden_models test_backend_parity \
    test_qa_prompt test_kv_store test_scheduler; do
  [ -f "tests/$t.c" ] && targets+=("$t")
done
# The fuzz harnesses replay their seeds and crash reproducers (tests/fuzz/regress):
# here a reproducer's out-of-bounds read is a failure, not luck.
for src in tests/fuzz/fuzz_*.c; do
  t="$(basename "$src" .c)"
  [ "$t" = fuzz_support ] || targets+=("${t}_replay")
done
cmake --build build-asan -j 2 --target "${targets[@]}"
# Open MPI keeps what MPI_Init allocates until exit (tests/lsan.supp names its
# libraries; their plugins must stay loaded for the frames to be named). Leaks in
# snaptp's own code are not suppressed. test_bad_input.sh sets the same itself.
ASAN_OPTIONS=detect_leaks=1 \
    LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0" \
    OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1 \
    ctest --test-dir build-asan --output-on-failure -R "^($asan_tests)\$"

echo "== the CPU thread pool and the KV store prefetcher under ThreadSanitizer"
# The pool's few lines of lock-free hand-off are where a data race would hide;
# built on its own (the rest of the core needs no TSan and would take minutes).
gcc -std=gnu11 -O1 -g -fsanitize=thread -o build-asan/test_cpu_pool_tsan tests/test_cpu_pool.c \
    kernels/cpu/cpu_pool.c runtime/status.c tests/support/test_support.c -lcjson -lm
TSAN_OPTIONS=halt_on_error=1 build-asan/test_cpu_pool_tsan
# The KV store's prefetcher thread (a mutex and a condition variable), the same way.
gcc -std=gnu11 -O1 -g -fsanitize=thread -o build-asan/test_layer_prefetch_tsan \
    tests/test_layer_prefetch.c runtime/layer_prefetch.c runtime/status.c \
    tests/support/test_support.c -lcjson -lm -lpthread
TSAN_OPTIONS=halt_on_error=1 build-asan/test_layer_prefetch_tsan

echo "== fuzzers (libFuzzer, ASan + UBSan), 30 s each"
# A crash fails CI; its input is in build-fuzz/crashes/<target>/ (tests/fuzz/run.sh).
bash tests/fuzz/run.sh "${SNAPTP_FUZZ_SECONDS:-30}"
