#!/usr/bin/env bash
# Main job: installs what is missing, builds lowbit (Release), and runs quantization-aware training
# of LeNet-5 on Fashion-MNIST (Debian's dataset-fashion-mnist): DoReFa 4-bit weights and
# activations, with WaveQ learning each quantized layer's bitwidth (beta) through the sinusoid's
# period. Prints the learned per-layer bitwidths, FP32 vs quantized accuracy and the report's path.
# Usage: scripts/quickstart.sh [BUILD_DIR]      (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${1:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target lowbit_cli
exec "$build/cli/lowbit" train --model lenet5 --data fashion-mnist --epochs 4 --batch 128 --lr 0.05 \
  --quant dorefa --wbits 4 --abits 4 --reg waveq --lambda-w 100 --lambda-beta 5 --beta-lr 0.01 \
  --out runs/quickstart
