#!/usr/bin/env bash
# Fuzz smoke test (the suite's `fuzz_smoke`): configures and builds the libFuzzer harnesses of
# tests/fuzz with clang in their own build folder, then runs each one for a bounded time over its
# seed corpus (tests/fuzz/corpus) plus what earlier runs added (BUILD_DIR/corpus). Any crash,
# undefined behaviour, leak, out-of-memory or hang fails the test, naming the fuzzer and the input
# libFuzzer saved. The long runs (10 million executions each) are in docs/reliability.md.
#
# Usage: scripts/fuzz_smoke.sh BUILD_DIR [SECONDS_PER_FUZZER]   (default 15 s)
# env: LOWBIT_FUZZ_CXX (default clang++-14, else clang++)
# Exits 77 (CTest's "skipped") when clang or libFuzzer is not installed
# (apt-get install clang-14 libclang-rt-14-dev; scripts/install-deps.sh installs both).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: scripts/fuzz_smoke.sh BUILD_DIR [SECONDS_PER_FUZZER]}
seconds=${2:-15}

cxx=${LOWBIT_FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++-14 clang++; do
    command -v "$c" > /dev/null && { cxx=$c; break; }
  done
fi
if [ -z "$cxx" ] || ! command -v "$cxx" > /dev/null; then
  echo "skipped: clang is not installed (apt-get install clang-14 libclang-rt-14-dev)"
  exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" > "$probe/log" 2>&1; then
  echo "skipped: $cxx cannot link libFuzzer (apt-get install libclang-rt-14-dev):"
  head -5 "$probe/log"
  exit 77
fi

# Build type None: the ordinary library, which only fuzz_config links (for cli/trainer.cpp's option
# table), compiles without optimisation; the harnesses and the readers they test get -O1 and the
# sanitizers from tests/fuzz/CMakeLists.txt.
# LOWBIT_FUZZ_PREBUILT_LIB (set by the suite: its own build's liblowbit.a, with LOWBIT_FUZZ_WITH_MPI its
# MPI setting): fuzz_config links that library instead of compiling lowbit once more with clang.
prebuilt=(-DLOWBIT_FUZZ_PREBUILT_LIB=)  # (not the cache's value from an earlier run)
if [ -n "${LOWBIT_FUZZ_PREBUILT_LIB:-}" ]; then
  prebuilt=(-DLOWBIT_FUZZ_PREBUILT_LIB="$LOWBIT_FUZZ_PREBUILT_LIB" -DLOWBIT_WITH_MPI="${LOWBIT_FUZZ_WITH_MPI:-AUTO}")
fi
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=None -DLOWBIT_FUZZ=ON \
  -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_BUILD_CLI=OFF -DLOWBIT_BUILD_EXAMPLES=OFF \
  "${prebuilt[@]}" > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target fuzzers

# fuzzer:max_len (bytes), sized to the format's seeds.
fuzzers="idx:4096 cifar:8192 svhn_mat:8192 image:4096 checkpoint:2048 config:2048 model:4096"
failed=()
for entry in $fuzzers; do
  name=${entry%%:*}
  max_len=${entry#*:}
  work="$build/corpus/$name"
  artifacts="$build/artifacts/$name/"
  mkdir -p "$work" "$artifacts"
  dict=()
  [ -f "$root/tests/fuzz/dict/$name.dict" ] && dict=(-dict="$root/tests/fuzz/dict/$name.dict")
  log="$build/fuzz_$name.log"
  # No single allocation above 256 MB from inputs of a few KB, no input slower than 10 s.
  if "$build/tests/fuzz/fuzz_$name" -max_total_time="$seconds" -runs=2000000 -max_len="$max_len" -rss_limit_mb=2048 \
    -malloc_limit_mb=256 -timeout=10 "${dict[@]}" -artifact_prefix="$artifacts" -print_final_stats=1 \
    "$work" "$root/tests/fuzz/corpus/$name" > "$log" 2>&1; then
    echo "fuzz_$name: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
  else
    echo "fuzz_$name: FAILED (log: $log; input saved in $artifacts):"
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -10
    failed+=("$name")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz_smoke: ${#failed[@]} fuzzer(s) failed: ${failed[*]} (reproduce: BUILD/tests/fuzz/fuzz_NAME INPUT)"
  exit 1
fi
echo "fuzz_smoke: all fuzzers ran clean for ${seconds} s each"
