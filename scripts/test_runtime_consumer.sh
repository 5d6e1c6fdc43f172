#!/usr/bin/env bash
# The standalone runtime as a firmware project uses it: a tiny LeNet-5 run (DoReFa 4/4) exported with
# `lowbit export --c-header`, then tests/runtime_consumer/main.cpp compiled by the system compiler with
# nothing on the include path but deploy/runtime/ and a temporary folder (the generated model.h), no
# lowbit library, TBB or BLAS, `-std=c++17 -Wall -Wextra -Werror -pedantic`: once with the model
# compiled in (checking its bytes equal the .lbq file), once loading the .lbq file. Both builds'
# predictions on the test images must equal `lowbit infer --predictions`', and a truncated file must
# be refused naming it.
# Data: Fashion-MNIST when installed, else a synthetic IDX set made here (10 classes of noisy images
# with a bright band whose row is the class).
# Usage: scripts/test_runtime_consumer.sh BUILD_DIR     (CXX: the compiler, default c++)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: test_runtime_consumer.sh BUILD_DIR}" && pwd)
lowbit="$build/cli/lowbit"
cxx=${CXX:-c++}
command -v "$cxx" > /dev/null || { echo "skipped: no C++ compiler '$cxx' (set CXX)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=300  # test images

idx() {  # FILE COUNT LABELS(0|1) SEED: a synthetic IDX file (images 28x28, or their labels)
  awk -v count="$2" -v labels="$3" -v seed="$4" 'function u32(v) {
      printf "%c%c%c%c", int(v / 16777216) % 256, int(v / 65536) % 256, int(v / 256) % 256, v % 256 }
    BEGIN {
      srand(seed)
      u32(labels ? 2049 : 2051); u32(count)
      if (labels) { for (i = 0; i < count; i++) printf "%c", i % 10; exit }
      u32(28); u32(28)
      for (i = 0; i < count; i++)
        for (p = 0; p < 784; p++) {
          row = int(p / 28)
          printf "%c", int(rand() * 100) + (int(row / 3) == i % 10 ? 150 : 0)
        }
    }' > "$1"
}
if [ -d /usr/share/datasets/fashion-mnist ] && [ -z "${LOWBIT_SYNTHETIC_DATA:-}" ]; then
  data=fashion-mnist
  { zcat /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || true; } | head -c $((16 + n * 784)) \
    | tail -c +17 > "$work/images.raw"
else
  mkdir "$work/data"
  idx "$work/data/train-images-idx3-ubyte" 2048 0 1
  idx "$work/data/train-labels-idx1-ubyte" 2048 1 1
  idx "$work/data/t10k-images-idx3-ubyte" $n 0 2
  idx "$work/data/t10k-labels-idx1-ubyte" $n 1 2
  data=mnist:$work/data
  tail -c +17 "$work/data/t10k-images-idx3-ubyte" > "$work/images.raw"
fi
[ "$(wc -c < "$work/images.raw")" -eq $((n * 784)) ]

"$lowbit" train --model lenet5 --width 0.5 --data "$data" --limit-train 2048 --limit-test $n --batch 64 --epochs 2 \
  --lr 0.05 --seed 7 --threads 2 --quiet --quant dorefa --wbits 4 --abits 4 --out "$work/run" > /dev/null
"$lowbit" export --checkpoint "$work/run/checkpoint.ckpt" --out "$work/model.lbq" --c-header "$work/model.h" \
  | grep "model.h: C header"
"$lowbit" infer --model-file "$work/model.lbq" --data "$data" --limit-test $n --predictions "$work/infer.csv" \
  > /dev/null
cut -d, -f1,3 "$work/infer.csv" | sed '1s/.*/index,predicted/' > "$work/expected.csv"

flags=(-std=c++17 -Wall -Wextra -Werror -pedantic -O2 -I"$src/deploy/runtime")
"$cxx" "${flags[@]}" -I"$work" -DLOWBIT_EMBEDDED "$src/tests/runtime_consumer/main.cpp" -o "$work/embedded"
"$cxx" "${flags[@]}" "$src/tests/runtime_consumer/main.cpp" -o "$work/from_file"
"$work/embedded" "$work/images.raw" "$work/model.lbq" > "$work/embedded.csv"
"$work/from_file" "$work/images.raw" "$work/model.lbq" > "$work/from_file.csv"
cmp "$work/expected.csv" "$work/embedded.csv"
cmp "$work/expected.csv" "$work/from_file.csv"
classes=$(tail -n +2 "$work/expected.csv" | cut -d, -f2 | sort -u | wc -l)
echo "runtime consumer: $n/$n predictions equal lowbit infer's ($classes classes predicted; embedded and from file)"

head -c 1000 "$work/model.lbq" > "$work/cut.lbq"
if "$work/from_file" "$work/images.raw" "$work/cut.lbq" 2> "$work/err"; then
  echo "FAIL: the runtime accepted a truncated file"; exit 1
fi
grep -q "$work/cut.lbq: truncated" "$work/err" || { echo "FAIL: $(cat "$work/err")"; exit 1; }
echo "runtime consumer: ok"
