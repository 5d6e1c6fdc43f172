#!/usr/bin/env bash
# `lowbit eval --ptq` as a user runs it: a small float LeNet-5 trained with `lowbit train` on
# Fashion-MNIST, then the range-linear post-training quantization sweep (train/ptq.h, spec §8.7).
# Checks: one table, the float row first (its accuracy that of plain `lowbit eval`), one row per
# setting in order with accuracy and drop; 16/16 at the float accuracy, 2/2 below it; one
# predictions file per setting (P.wWaA.ext) with a line per test image, P itself the float model's
# (as plain eval writes it); the ranges CSV; --ptq-per-channel and --ptq-first-last in the header.
# Usage: scripts/test_ptq.sh BUILD_DIR       (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_ptq.sh BUILD_DIR" "${1:-}"

"$lowbit" train --model lenet5 --width 0.5 --data fashion-mnist --limit-train 2048 --limit-test 500 --batch 64 \
  --epochs 1 --lr 0.05 --seed 7 --threads 2 --quiet --out "$work/f" > "$work/train.log"
ckpt="$work/f/checkpoint.ckpt"

"$lowbit" eval --checkpoint "$ckpt" --predictions "$work/plain.csv" > "$work/plain.log"
plain_acc=$(sed -n 's/.*accuracy \([0-9.]*\)%.*/\1/p' "$work/plain.log")

"$lowbit" eval --checkpoint "$ckpt" --ptq 16/16,8/8,2/2 --ptq-calib-batches 4 --predictions "$work/p.csv" \
  --ptq-ranges "$work/ranges.csv" --verbose | tee "$work/ptq.log"
grep -q "^lenet5 on .* (500 images)$" "$work/ptq.log" || fail "no title line"
grep -q "^post-training quantization (range-linear, spec §8.7): weights symmetric per tensor, activations asymmetric per tensor from their min/max over 4 training batches (256 images, no augmentation); every layer at the setting's bits (first and last too)$" \
  "$work/ptq.log" || fail "header"
grep -q "^W/A  *accuracy  *drop  *loss$" "$work/ptq.log" || fail "column header"
# The rows, in order: float, 16/16, 8/8, 2/2.
rows=$(awk '/^W\/A /{on=1; next} on && /^(float|[0-9]+\/[0-9]+) / {print $1; next} {on=0}' "$work/ptq.log" | tr '\n' ' ')
[ "$rows" = "float 16/16 8/8 2/2 " ] || fail "rows '$rows'"
acc() { awk -v s="$1" '$1 == s && NF == 4 {sub("%", "", $2); print $2}' "$work/ptq.log"; }
drop() { awk -v s="$1" '$1 == s && NF == 4 {print $3}' "$work/ptq.log"; }
[ "$(acc float)" = "$plain_acc" ] || fail "float row $(acc float) vs plain eval $plain_acc"
[ "$(acc 16/16)" = "$(acc float)" ] || fail "16/16 $(acc 16/16) vs float $(acc float)"
[ "$(drop 16/16)" = "0.00" ] || fail "16/16 drop $(drop 16/16)"
awk -v f="$(acc float)" -v q="$(acc 2/2)" -v d="$(drop 2/2)" \
  'BEGIN { exit !(q < f && (f - q - d) < 0.011 && (f - q - d) > -0.011) }' || fail "2/2: $(acc 2/2), drop $(drop 2/2)"
awk -v d="$(drop 8/8)" 'BEGIN { exit !(d < 2 && d > -2) }' || fail "8/8 drop $(drop 8/8)"
# --verbose: the ranges, one line per activation and weight layer
[ "$(grep -c '^  activation ' "$work/ptq.log")" -eq 3 ] || fail "activation ranges"
[ "$(grep -c '^  weight ' "$work/ptq.log")" -eq 4 ] || fail "weight ranges"
[ "$(wc -l < "$work/ranges.csv")" -eq 8 ] || fail "ranges.csv"
head -2 "$work/ranges.csv" | grep -q "^activation,relu1,0," || fail "ranges.csv: $(head -2 "$work/ranges.csv")"

# One predictions file per setting, a line per test image; P itself is the float model's.
for f in p.csv p.w16a16.csv p.w8a8.csv p.w2a2.csv; do
  [ -f "$work/$f" ] || fail "$f missing"
  [ "$(wc -l < "$work/$f")" -eq 501 ] || fail "$f has $(wc -l < "$work/$f") lines"
  head -1 "$work/$f" | grep -q "^index,label,predicted$" || fail "$f header"
done
cmp "$work/p.csv" "$work/plain.csv" || fail "the float predictions differ from plain eval's"
agree16=$(paste -d, "$work/p.csv" "$work/p.w16a16.csv" | awk -F, 'NR > 1 && $3 == $6 { a++ } END { print a + 0 }')
[ "$agree16" -ge 499 ] || fail "16/16 agrees with float on $agree16 / 500"
differ2=$(paste -d, "$work/p.csv" "$work/p.w2a2.csv" | awk -F, 'NR > 1 && $3 != $6 { d++ } END { print d + 0 }')
[ "$differ2" -gt 0 ] || fail "2/2 predicts as float"

# Per-channel weights and the first and last layers at 8 bits: stated in the header.
"$lowbit" eval --checkpoint "$ckpt" --ptq 4/4 --ptq-per-channel --ptq-first-last 8 --ptq-calib-batches 2 \
  > "$work/pc.log"
grep -q "weights symmetric per output channel, .*over 2 training batches (128 images, no augmentation); first and last layers at 8 bits$" \
  "$work/pc.log" || fail "per-channel header: $(cat "$work/pc.log")"
rows=$(awk '/^W\/A /{on=1; next} on && /^(float|[0-9]+\/[0-9]+) / {print $1; next} {on=0}' "$work/pc.log" | tr '\n' ' ')
[ "$rows" = "float 4/4 " ] || fail "per-channel rows '$rows'"
echo "ok: lowbit eval --ptq (float $(acc float)%, 16/16 $(acc 16/16)%, 8/8 $(acc 8/8)%, 2/2 $(acc 2/2)%)"
