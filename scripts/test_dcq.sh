#!/usr/bin/env bash
# `lowbit dcq` as a user runs it (train/dcq.h, spec §4): a small float LeNet-5 teacher trained with
# `lowbit train` on Fashion-MNIST, then DCQ with binary DoReFa weights. Checks: the sections
# printed; one sections.jsonl line per epoch; `lowbit eval` of the run's checkpoint gives the
# stitched network's accuracy the run printed; sections one after another (--dcq-sequential) give
# the same checkpoint as concurrent ones; a run stopped mid-epoch and resumed equals the straight
# run bit for bit; a net with batch norms gets them recalibrated on the stitched network's own
# features (--recalibrate-bn), and eval of its checkpoint agrees; `lowbit train --init` fine-tunes the stitched network end to end; bad input is a
# clear error and a non-zero exit.
# Usage: scripts/test_dcq.sh BUILD_DIR       (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_dcq.sh BUILD_DIR" "${1:-}"

data=(--limit-train 2048 --limit-test 500 --batch 64 --threads 2 --quiet)
"$lowbit" train --model lenet5 --width 0.5 --data fashion-mnist "${data[@]}" --epochs 1 --lr 0.05 --seed 7 \
  --out "$work/teacher" > "$work/teacher.log"
teacher="$work/teacher/checkpoint.ckpt"

# Model, width and data come from the teacher's run.
dcq=(--teacher "$teacher" "${data[@]}" --quant dorefa --wbits 1 --abits 32 --epochs 2 --lr 0.02 --seed 3)
"$lowbit" dcq "${dcq[@]}" --out "$work/d" | tee "$work/d.log"
grep -q "^  1: conv1 relu1 -> the teacher's feature map$" "$work/d.log" || fail "section 1 not as expected"
grep -q "^  3: pool2 flatten fc1 relu3 fc2 -> cross-entropy$" "$work/d.log" || fail "section 3 not as expected"
grep -q "^teacher test accuracy [0-9.]*% (float)$" "$work/d.log" || fail "no teacher accuracy"
[ "$(wc -l < "$work/d/sections.jsonl")" -eq 2 ] || fail "sections.jsonl should have a line per epoch"
grep -q '^{"epoch": 2, "train_loss": \[[0-9.e-]*, [0-9.e-]*, [0-9.e-]*\], "test_loss": \[' "$work/d/sections.jsonl" \
  || fail "sections.jsonl line: $(tail -1 "$work/d/sections.jsonl")"

stitched=$(sed -n 's/^stitched network test accuracy \([0-9.]*\)%.*/\1/p' "$work/d.log")
[ -n "$stitched" ] || fail "no stitched accuracy"
"$lowbit" eval --checkpoint "$work/d/checkpoint.ckpt" > "$work/eval.log"
grep -q "accuracy $stitched%" "$work/eval.log" || { cat "$work/eval.log"; fail "eval differs from the run's $stitched%"; }

# A net with batch norms: before each evaluation the stitched network's batch norms are recalibrated
# on its own features (--recalibrate-bn); the checkpoint holds those statistics.
"$lowbit" train --model resnet20 --width 0.25 --data fashion-mnist "${data[@]}" --limit-train 512 --epochs 1 \
  --lr 0.05 --seed 7 --out "$work/rt" > /dev/null
"$lowbit" dcq --teacher "$work/rt/checkpoint.ckpt" "${data[@]}" --limit-train 512 --quant dorefa --wbits 1 \
  --abits 32 --epochs 1 --lr 0.02 --recalibrate-bn 3 --out "$work/rd" > "$work/rd.log"
recal=$(sed -n 's/^stitched network test accuracy \([0-9.]*\)% (.*), [0-9.]*% before its batch norms were recalibrated (--recalibrate-bn 3)$/\1/p' "$work/rd.log")
[ -n "$recal" ] || { cat "$work/rd.log"; fail "no recalibrated stitched accuracy"; }
grep -q '"test_acc_unrecalibrated": [0-9.e-]*}$' "$work/rd/sections.jsonl" || fail "sections.jsonl: $(cat "$work/rd/sections.jsonl")"
"$lowbit" eval --checkpoint "$work/rd/checkpoint.ckpt" > "$work/rd-eval.log"
grep -q "accuracy $recal%" "$work/rd-eval.log" || { cat "$work/rd-eval.log"; fail "eval differs from the recalibrated $recal%"; }
"$lowbit" dcq --teacher "$teacher" --recalibrate-bn -1 --quant dorefa --out "$work/bad" > "$work/bad.log" 2>&1 \
  && fail "--recalibrate-bn -1 accepted"
grep -q "recalibrate-bn must be >= 0" "$work/bad.log" || fail "--recalibrate-bn -1: $(cat "$work/bad.log")"

# Concurrent sections = sections one after another.
"$lowbit" dcq "${dcq[@]}" --dcq-sequential --out "$work/s" > /dev/null
"$lowbit" compare "$work/d/checkpoint.ckpt" "$work/s/checkpoint.ckpt"

# Stopped mid-epoch (batch 5 of 32), resumed: the same run.
"$lowbit" dcq "${dcq[@]}" --out "$work/r" --stop-after-batches 5 > /dev/null
"$lowbit" dcq --out "$work/r" --resume > "$work/r.log"
grep -q "^resumed from .* at epoch 1, batch 5$" "$work/r.log" || fail "not resumed at batch 5"
"$lowbit" compare "$work/d/checkpoint.ckpt" "$work/r/checkpoint.ckpt"
[ "$(wc -l < "$work/r/sections.jsonl")" -eq 2 ] || fail "a resumed run's sections.jsonl repeats or misses an epoch"

# End-to-end fine-tune of the stitched network.
"$lowbit" train --init "$work/d/checkpoint.ckpt" --model lenet5 --width 0.5 --data fashion-mnist "${data[@]}" \
  --quant dorefa --wbits 1 --abits 32 --epochs 1 --lr 0.005 --out "$work/ft" > "$work/ft.log"
grep -q "^model weights from $work/d/checkpoint.ckpt: 8 tensors$" "$work/ft.log" || fail "fine-tune did not load the stitched weights"

# Bad input: a clear error naming what is wrong, a non-zero exit.
expect_error() {
  local want=$1; shift
  if "$lowbit" dcq "$@" > "$work/err.log" 2>&1; then fail "lowbit dcq $* succeeded"; fi
  grep -qF -- "$want" "$work/err.log" || { cat "$work/err.log"; fail "expected '$want'"; }
}
expect_error "--teacher CHECKPOINT (the trained float network) is required" --quant dorefa "${data[@]}"
expect_error "give --quant" --teacher "$teacher" "${data[@]}"
expect_error "'conv9' is not a unit of the model (units: conv1, relu1, pool1" --teacher "$teacher" --quant dorefa \
  --sections conv9 "${data[@]}"
expect_error "section 4 to train is not one of 1..3" --teacher "$teacher" --quant dorefa --train-sections 4 "${data[@]}"
expect_error "--clip-grad does not combine with lowbit dcq" --teacher "$teacher" --quant dorefa --clip-grad 1 "${data[@]}"
printf 'garbage' > "$work/bad.ckpt"
expect_error "$work/bad.ckpt" --teacher "$work/bad.ckpt" --quant dorefa "${data[@]}"
echo "cli_dcq: ok"
