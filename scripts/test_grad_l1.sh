#!/usr/bin/env bash
# `lowbit train --reg grad-l1` as a user runs it (Alizadeh et al., spec §7): a small float LeNet-5
# (Fashion-MNIST, max pooling and ReLU: kinks for the fd mode) fine-tuned with the penalty.
# Checks: the penalty changes training (epoch 1 differs from a run without it) and is reported each
# epoch in the log and metrics.jsonl; --grad-l1-mode fd (forward difference with the kinks replayed,
# autograd/kink_tape.h) follows the exact mode (double backward) within 1 % in train loss and penalty
# for 3 epochs; --reg-last-epochs 1 leaves epochs 1-2 bit-identical to the plain run and regularizes
# epoch 3 only; --grad-l1-scale range (each term times its tensor's max|x|) likewise in both modes,
# fd within 1 % of exact, and its two ablations train; a bad mode or scale is a clear error;
# --grad-l1-balance sets lambda_a on the first regularized batch (logged) and refuses --lambda-a.
# Usage: scripts/test_grad_l1.sh BUILD_DIR       (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_grad_l1.sh BUILD_DIR" "${1:-}"

common=(--model lenet5 --width 0.5 --data fashion-mnist --limit-train 1024 --limit-test 200 --batch 64 --lr 0.05
  --seed 7 --threads 2 --quiet)
"$lowbit" train "${common[@]}" --epochs 1 --out "$work/f" > /dev/null
tune=("${common[@]}" --init "$work/f/checkpoint.ckpt" --epochs 3)
"$lowbit" train "${tune[@]}" --out "$work/none" > /dev/null
for mode in exact fd; do
  "$lowbit" train "${tune[@]}" --reg grad-l1 --lambda 1e-3 --grad-l1-mode "$mode" --out "$work/$mode" \
    > "$work/$mode.log"
  "$lowbit" train "${tune[@]}" --reg grad-l1 --lambda 1e-3 --grad-l1-scale range --grad-l1-mode "$mode" \
    --out "$work/range-$mode" > "$work/range-$mode.log"
done
"$lowbit" train "${tune[@]}" --reg grad-l1 --lambda 1e-3 --grad-l1-mode fd --reg-last-epochs 1 \
  --out "$work/last" > /dev/null

# field RUN EPOCH NAME: a value of metrics.jsonl ("" when the epoch has none)
field() { sed -n "$2p" "$work/$1/metrics.jsonl" | sed -n "s/.*\"$3\": \([-0-9.e+]*\).*/\1/p"; }
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 0.01 * b) }'; }

grep -q "^quantization: none + grad-l1 (lambda 0.001, finite differences, step 1e-06)$" "$work/fd.log" ||
  fail "fd header: $(grep '^quantization' "$work/fd.log")"
for e in 1 2 3; do
  grep -q "^epoch $e/3 .* grad-l1 [0-9.e-]* " "$work/exact.log" || fail "exact log: no penalty in epoch $e"
  for f in train_loss grad_l1 grad_l1_weights grad_l1_acts; do
    close "$(field fd $e $f)" "$(field exact $e $f)" ||
      fail "epoch $e $f: fd $(field fd $e $f) vs exact $(field exact $e $f)"
  done
done
[ "$(field exact 1 train_loss)" != "$(field none 1 train_loss)" ] || fail "the penalty changed nothing"
# range scaling: its own header, fd following exact, a different penalty from the unscaled one
grep -q "^quantization: none + grad-l1 (lambda 0.001, range-scaled, finite differences, step 1e-06)$" \
  "$work/range-fd.log" || fail "range fd header: $(grep '^quantization' "$work/range-fd.log")"
for e in 1 2 3; do
  for f in train_loss grad_l1 grad_l1_weights grad_l1_acts; do
    close "$(field range-fd $e $f)" "$(field range-exact $e $f)" ||
      fail "range epoch $e $f: fd $(field range-fd $e $f) vs exact $(field range-exact $e $f)"
  done
done
close "$(field range-exact 1 grad_l1_acts)" "$(field exact 1 grad_l1_acts)" &&
  fail "range scaling changed no activation term: $(field range-exact 1 grad_l1_acts)"
# --reg-last-epochs 1: plain for two epochs, regularized in the third
for e in 1 2; do
  [ "$(field last $e train_loss)" = "$(field none $e train_loss)" ] || fail "last-epochs: epoch $e regularized"
  [ -z "$(field last $e grad_l1)" ] || fail "last-epochs: epoch $e reports a penalty"
done
[ -n "$(field last 3 grad_l1)" ] || fail "last-epochs: epoch 3 reports no penalty"
[ "$(field last 3 train_loss)" != "$(field none 3 train_loss)" ] || fail "last-epochs: epoch 3 not regularized"

if "$lowbit" train "${tune[@]}" --reg grad-l1 --grad-l1-mode bogus --out "$work/bad" > "$work/bad.log" 2>&1; then
  fail "--grad-l1-mode bogus accepted"
fi
grep -q "grad-l1-mode 'bogus' is not exact or fd" "$work/bad.log" || fail "bad mode: $(cat "$work/bad.log")"
if "$lowbit" train "${tune[@]}" --reg grad-l1 --grad-l1-scale max --out "$work/bad" > "$work/bad.log" 2>&1; then
  fail "--grad-l1-scale max accepted"
fi
grep -q "grad-l1-scale 'max' is not none, range, range-fixed or range-only" "$work/bad.log" ||
  fail "bad scale: $(cat "$work/bad.log")"
# range's ablations (the gradient without the ranges' part, or with it alone) train and say which
for scale in range-fixed range-only; do
  "$lowbit" train "${tune[@]}" --epochs 1 --reg grad-l1 --lambda 1e-3 --grad-l1-scale "$scale" --grad-l1-mode fd \
    --out "$work/$scale" > "$work/$scale.log"
  [ -n "$(field "$scale" 1 grad_l1)" ] || fail "$scale: no penalty reported"
done
grep -q "range-scaled, ranges held constant, finite" "$work/range-fixed.log" || fail "range-fixed header"
grep -q "range-scaled, norms held constant, finite" "$work/range-only.log" || fail "range-only header"
# --grad-l1-balance: lambda_a set on the first regularized batch (said in the log, in metrics.jsonl), and
# refused beside --lambda-a
"$lowbit" train "${tune[@]}" --epochs 1 --reg grad-l1 --lambda 1e-3 --grad-l1-scale range --grad-l1-mode fd \
  --grad-l1-balance --out "$work/balance" 2>&1 | grep -v "^epoch" > "$work/balance.log"
grep -q "^quantization: none + grad-l1 (lambda 0.001, activations balanced at the first step, range-scaled" \
  "$work/balance.log" || fail "balance header: $(grep '^quantization' "$work/balance.log")"
la=$(sed -n 's/^gradient-l1: lambda_a = \([0-9.e-]*\) .*/\1/p' "$work/balance.log")
[ -n "$la" ] || fail "balance: no lambda_a line in $(cat "$work/balance.log")"
close "$(field balance 1 grad_l1_lambda_a)" "$la" || fail "balance: metrics $(field balance 1 grad_l1_lambda_a) vs log $la"
# its checkpoint evaluates as it is, post-training quantized and rounded (the regularizer dropped)
"$lowbit" eval --checkpoint "$work/balance/checkpoint.ckpt" > "$work/balance-eval.log" ||
  fail "balance: eval: $(cat "$work/balance-eval.log")"
"$lowbit" eval --checkpoint "$work/balance/checkpoint.ckpt" --ptq 8/8 > "$work/balance-ptq.log" ||
  fail "balance: eval --ptq: $(cat "$work/balance-ptq.log")"
"$lowbit" eval --checkpoint "$work/balance/checkpoint.ckpt" --quant dorefa --wbits 4 > "$work/balance-round.log" ||
  fail "balance: eval --quant: $(cat "$work/balance-round.log")"
if "$lowbit" train "${tune[@]}" --reg grad-l1 --lambda-a 1e-3 --grad-l1-balance --out "$work/bad" > "$work/bad.log" 2>&1
then
  fail "--grad-l1-balance with --lambda-a accepted"
fi
grep -q "sets the activation lambda itself: drop --lambda-a" "$work/bad.log" || fail "balance misuse: $(cat "$work/bad.log")"
echo "ok: grad-l1 through lowbit train (penalty epoch 3: exact $(field exact 3 grad_l1), fd $(field fd 3 grad_l1);" \
  "range-scaled: exact $(field range-exact 3 grad_l1), fd $(field range-fd 3 grad_l1))"
