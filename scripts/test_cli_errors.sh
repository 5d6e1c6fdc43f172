#!/usr/bin/env bash
# Bad input to the `lowbit` command: each case must exit non-zero with a message that names the
# culprit (flag, config file and line, data path, checkpoint) — and never crash.
# Usage: scripts/test_cli_errors.sh BUILD_DIR
set -uo pipefail
build=$(cd "${1:?usage: test_cli_errors.sh BUILD_DIR}" && pwd)
lowbit="$build/cli/lowbit"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
cases=0
expect() {  # expect "what" "pattern" cmd...
  local what=$1 pattern=$2
  shift 2
  local out rc
  cases=$((cases + 1))
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "FAIL: $what (exit $rc): $out"
    fails=$((fails + 1))
  else
    echo "ok: $what -> $(tail -n 1 <<<"$out")"
  fi
}
printf 'model = lenet5\nepochs 3\n' > "$work/bad.cfg"
printf 'modle = lenet5\n' > "$work/unknown.cfg"
mkdir -p "$work/mnist"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  printf 'not an idx file' > "$work/mnist/$f"
done
printf 'garbage' > "$work/bad.ckpt"
expect "unknown flag" "unknown option 'epoch'" "$lowbit" train --epoch 3
expect "missing value" "needs a value" "$lowbit" train --lr
expect "not a number" "is not a number" "$lowbit" train --lr fast
expect "bad config line" "bad.cfg:2" "$lowbit" train --config "$work/bad.cfg"
expect "unknown config key" "unknown.cfg:1" "$lowbit" train --config "$work/unknown.cfg"
expect "missing config" "cannot open config file" "$lowbit" train --config "$work/none.cfg"
expect "unknown model" "lenet6" "$lowbit" train --model lenet6 --data fashion-mnist --limit-train 64
expect "unknown quantizer" "int3" "$lowbit" train --quant int3 --limit-train 64
expect "budget without learned bits" "needs weight bits that are learned" "$lowbit" train --quant dorefa \
  --weight-budget-kb 10 --limit-train 64 --out "$work/budget1"
expect "unreachable weight budget" "is below the least these weights can take" "$lowbit" train --quant u3 \
  --quantize-first-last --weight-budget-kb 1 --limit-train 64 --out "$work/budget2"
expect "bad activation budget kind" "--act-budget 'most'" "$lowbit" train --quant u3 --act-budget-kb 1 \
  --act-budget most --limit-train 64 --out "$work/budget3"
expect "negative activation budget lambda" "lambdas (--budget-lambda, --act-budget-lambda) must be >= 0" "$lowbit" train \
  --quant u3 --act-budget-kb 1 --act-budget-lambda -1 --limit-train 64 --out "$work/budget4"
expect "weight scale tanh with WRPN" "weight-scale tanh: wrpn quantizes w or w / max|w|" "$lowbit" train --quant wrpn --reg sinreq --weight-scale tanh --limit-train 64
expect "unknown weight scale" "weight-scale 'l2' is not one of auto, none, max, tanh" "$lowbit" train --reg sinreq --weight-scale l2 --limit-train 64
expect "grid that is not the quantizer's" "--grid auto --weight-scale none with --quant dorefa: the sinusoid's zeros would not be" \
  "$lowbit" train --quant dorefa --reg sinreq --weight-scale none --limit-train 64
expect "regularizer with a learned-step quantizer" "--reg waveq with --quant lsq: no sinusoid has the levels" \
  "$lowbit" train --quant lsq --reg waveq --limit-train 64
expect "msqe regularizer without its quantizer" "--reg msqe acts on the learned cell sizes of --quant msqe" \
  "$lowbit" train --quant lsq --reg msqe --data "mnist:$work/nowhere"
expect "prune override matching no layer" "--prune-overrides: 'nosuch' matches no quantized layer" \
  "$lowbit" train --quant msqe --prune-sparsity 0.5 --prune-overrides nosuch=0.3 --data "mnist:$work/nowhere"
expect "prune sparsity out of range" "--prune-sparsity 1.5 must be in \[0, 1)" \
  "$lowbit" train --quant msqe --prune-sparsity 1.5 --data "mnist:$work/nowhere"
expect "act-quantizer-lr without msqe" "--act-quantizer-lr applies to --quant msqe" \
  "$lowbit" train --quant lsq --act-quantizer-lr 1e-6 --data "mnist:$work/nowhere"
expect "override matching no layer" "--wbits-overrides 'nosuch=3': 'nosuch' matches no weight layer (there are: conv1, conv2, fc1, fc2)" \
  "$lowbit" train --quant dorefa --wbits-overrides nosuch=3 --data "mnist:$work/nowhere"  # before the data is read
expect "bits out of range" "--wbits 64: bits must be in 1..16, or 32" "$lowbit" train --quant dorefa --wbits 64 --limit-train 64
expect "bits out of the method's range" "--wbits 4: binary takes 1 bits" "$lowbit" train --quant binary --wbits 4 --limit-train 64
expect "override bits out of range" "--wbits-overrides 'conv2=1': wrpn takes 2..16 bits" \
  "$lowbit" train --quant wrpn --wbits-overrides conv2=1 --limit-train 64 --epochs 1
expect "bad follow policy" "--bits-follow-beta 'sometimes'" "$lowbit" train --quant dorefa --reg waveq --bits-follow-beta sometimes --data "mnist:$work/nowhere"
expect "missing data dir" "$work/nowhere" "$lowbit" train --data "mnist:$work/nowhere"
expect "corrupt data file" "$work/mnist/.*-idx" "$lowbit" train --data "mnist:$work/mnist"
expect "corrupt checkpoint" "bad.ckpt" "$lowbit" eval --checkpoint "$work/bad.ckpt"
# eval --ptq (post-training quantization sweep): the settings and options are checked before the checkpoint is read
expect "ptq setting not W/A bits" "--ptq '4/x': expected W/A bits" "$lowbit" eval --checkpoint "$work/bad.ckpt" --ptq 8/8,4/x
expect "ptq bits out of range" "--ptq '8/20': bits must be 2..16 (32: float" "$lowbit" eval --checkpoint "$work/bad.ckpt" --ptq 8/20
expect "ptq 1 bit" "--ptq '1/8': bits must be 2..16" "$lowbit" eval --checkpoint "$work/bad.ckpt" --ptq 1/8
expect "ptq option without --ptq" "--ptq-per-channel goes with --ptq" "$lowbit" eval --checkpoint "$work/bad.ckpt" --ptq-per-channel
expect "ptq with --quant" "--ptq quantizes the float model by itself; it does not combine with --quant" \
  "$lowbit" eval --checkpoint "$work/bad.ckpt" --ptq 4/4 --quant wrpn
expect "ptq calibration batches" "--ptq-calib-batches must be >= 1, got 0" "$lowbit" eval --checkpoint "$work/bad.ckpt" \
  --ptq 4/4 --ptq-calib-batches 0
expect "ptq first/last bits" "--ptq-first-last 1: bits must be 2..16" "$lowbit" eval --checkpoint "$work/bad.ckpt" \
  --ptq 4/4 --ptq-first-last 1
"$lowbit" train --model lenet5 --width 0.25 --quant dorefa --limit-train 64 --limit-test 64 --epochs 1 --quiet \
  --out "$work/qat" > /dev/null 2>&1
expect "ptq of a quantization-aware run" "--ptq: $work/qat/checkpoint.ckpt was trained with --quant dorefa" \
  "$lowbit" eval --checkpoint "$work/qat/checkpoint.ckpt" --ptq 4/4
expect "bad schedule" "multistep" "$lowbit" train --schedule multistep:x --limit-train 64 --epochs 1
expect "unknown command" "unknown command" "$lowbit" frobnicate
expect "test file for a non-CIFAR set" "takes a CIFAR binary batch" "$lowbit" train --data fashion-mnist \
  --test-file "$work/bad.ckpt" --limit-train 64 --epochs 1
mkdir -p "$work/empty_run"
expect "resume without a checkpoint" "--resume: there is no checkpoint $work/empty_run/checkpoint.ckpt .*start the run without --resume" \
  "$lowbit" train --out "$work/empty_run" --resume
expect "bad checkpoint interval" "--checkpoint-every '5x'" "$lowbit" train --checkpoint-every 5x --limit-train 64
expect "bad non-finite policy" "--on-nonfinite 'ignore'" "$lowbit" train --on-nonfinite ignore --limit-train 64
expect "diverging run" "training stopped at epoch 1, batch [0-9]* (step [0-9]*): the .* not finite" \
  "$lowbit" train --model lenet5 --limit-train 1024 --limit-test 64 --epochs 1 --lr 1e9 --quiet --out "$work/diverge"
echo "$((cases - fails)) passed, $fails failed"
[ $fails -eq 0 ]
