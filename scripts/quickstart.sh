#!/usr/bin/env bash
# Main job: installs what is missing, builds lowbit (Release), and runs quantization-aware training
# of LeNet-5 on Fashion-MNIST (Debian's dataset-fashion-mnist): DoReFa 4-bit weights and
# activations, with WaveQ learning each quantized layer's bitwidth (beta) through the sinusoid's
# period. Prints the learned per-layer bitwidths, FP32 vs quantized accuracy and the report's path;
# then exports the learned model as an integer model file (lowbit export: per-layer bits, file size
# against the FP32 parameters) and runs it integer-only on the test set (lowbit infer: accuracy,
# images/s against the FP32 model's, side by side).
# Usage: scripts/quickstart.sh [BUILD_DIR]      (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${1:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target lowbit_cli
lowbit=$build/cli/lowbit
run=runs/quickstart
"$lowbit" train --model lenet5 --data fashion-mnist --epochs 4 --batch 128 --lr 0.05 \
  --quant dorefa --wbits 4 --abits 4 --reg waveq --lambda-w 100 --lambda-beta 5 --beta-lr 0.01 \
  --out "$run"
echo
echo "== export: the learned low-bit model as an integer model file"
"$lowbit" export --checkpoint "$run/checkpoint.ckpt" --out "$run/model.lbq"
echo
echo "== infer: integer-only inference on the test set, against the FP32 model's speed"
"$lowbit" infer --model-file "$run/model.lbq" --data fashion-mnist --batch 128 --fp32-checkpoint "$run/checkpoint.ckpt"
