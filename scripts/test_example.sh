#!/usr/bin/env bash
# Runs examples/waveq_lenet5 (DoReFa 4/4 + WaveQ on LeNet-5 through the library alone) on a slice of
# Fashion-MNIST and checks what it prints: a line per layer with its bits, the learned bits within
# the quantizer's range, and the accuracy at them well above chance.
# Usage: scripts/test_example.sh PATH/TO/waveq_lenet5      (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
example=${1:?usage: test_example.sh PATH/TO/waveq_lenet5}
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "skipped: /usr/share/datasets/fashion-mnist is missing (apt-get install dataset-fashion-mnist)"
  exit 77
fi
out=$(LOWBIT_NUM_THREADS=2 "$example" 2 8192)
echo "$out"
grep -q '^conv1  fp32$' <<<"$out"
grep -q '^fc2    fp32$' <<<"$out"
for layer in conv2 fc1; do
  bits=$(sed -nE "s/^$layer +([0-9]+) bits$/\1/p" <<<"$out")
  [ -n "$bits" ] && [ "$bits" -ge 2 ] && [ "$bits" -le 9 ] || { echo "FAIL: no learned bits for $layer"; exit 1; }
done
acc=$(sed -nE 's/.*accuracy at these bits ([0-9.]+)%.*/\1/p' <<<"$out")
awk -v a="$acc" 'BEGIN { exit !(a > 50) }' || { echo "FAIL: accuracy at the learned bits $acc% (chance 10%)"; exit 1; }
echo "example: learned bits printed per layer, accuracy at them $acc%"
