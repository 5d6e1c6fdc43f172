#!/usr/bin/env bash
# End-to-end test of `lowbit train` checkpoints: a run of 2 epochs straight must equal, bit for
# bit, (a) 1 epoch + --resume + 1 epoch, (b) a run stopped mid-epoch + --resume, (c) a run
# interrupted with Ctrl-C (SIGINT) + --resume. Also: a corrupt checkpoint is refused with a clear
# message and a non-zero exit; --init starts a new run from a checkpoint's weights. Small: 1,024 Fashion-MNIST images, LeNet-5 at half width.
# Usage: scripts/test_resume.sh BUILD_DIR       (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_resume.sh BUILD_DIR" "${1:-}"
common=(--model lenet5 --width 0.5 --data fashion-mnist --limit-train 1024 --limit-test 256 --batch 64
        --epochs 2 --lr 0.05 --schedule cosine --seed 7 --threads 2 --quiet
        --quant dorefa --wbits 4 --abits 4 --reg waveq --lambda-beta 0.1)

"$lowbit" train "${common[@]}" --out "$work/straight" > "$work/straight.log"

# (a) epoch boundary
"$lowbit" train "${common[@]}" --out "$work/a" --stop-after-batches 16 > /dev/null
"$lowbit" train --out "$work/a" --resume > "$work/a.log"
"$lowbit" compare "$work/straight/checkpoint.ckpt" "$work/a/checkpoint.ckpt"

# (b) mid-epoch (batch 7 of 16)
"$lowbit" train "${common[@]}" --out "$work/b" --stop-after-batches 7 > /dev/null
"$lowbit" train --out "$work/b" --resume > /dev/null
"$lowbit" compare "$work/straight/checkpoint.ckpt" "$work/b/checkpoint.ckpt"

# (c) Ctrl-C: SIGINT while training; exit code 130 and a checkpoint; resume completes the run.
# A longer single epoch (128 batches) so the signal lands mid-epoch.
long=("${common[@]}" --epochs 1 --limit-train 8192)
"$lowbit" train "${long[@]}" --out "$work/c_straight" > /dev/null
"$lowbit" train "${long[@]}" --out "$work/c" > "$work/c.log" &
pid=$!
for _ in $(seq 1 400); do grep -q "^model " "$work/c.log" 2>/dev/null && break; sleep 0.02; done
sleep 0.3
kill -INT "$pid" 2>/dev/null || true
set +e
wait "$pid"
rc=$?
set -e
if [ "$rc" -eq 130 ]; then
  grep -q "interrupted: checkpoint saved" "$work/c.log"
  "$lowbit" train --out "$work/c" --resume > /dev/null
else
  echo "FAIL: expected exit code 130 after SIGINT, got $rc"; cat "$work/c.log"; exit 1
fi
"$lowbit" compare "$work/c_straight/checkpoint.ckpt" "$work/c/checkpoint.ckpt"

# eval: a checkpoint's accuracy with float weights and at the final bits, as the run printed it
# (WaveQ on float training at 3 bits: the two figures differ, so a swapped one is caught).
"$lowbit" train --model lenet5 --width 0.5 --data fashion-mnist --limit-train 1024 --limit-test 256 --batch 64 \
  --epochs 1 --lr 0.05 --seed 7 --threads 2 --quiet --reg waveq --wbits 3 --fix-beta --out "$work/wq" > "$work/wq.log"
"$lowbit" eval --checkpoint "$work/wq/checkpoint.ckpt" --threads 2 > "$work/eval.log"
want=$(grep -o "^accuracy: FP32 (float shadow) weights [0-9.]*%, weights quantized at these bits [0-9.]*%" "$work/wq.log")
[ -n "$want" ] && grep -qF "$want" "$work/eval.log" || { echo "eval differs from the run's final report: '$want'"; cat "$work/eval.log"; exit 1; }
# The float figure's caveat: printed for a net trained through a quantizer, not for float training.
grep -q "^  (trained through the dorefa quantizer" "$work/straight.log" && ! grep -q "trained through" "$work/wq.log" ||
  { echo "the float-shadow caveat is missing after --quant dorefa or present without a quantizer"; exit 1; }
# The same for a run whose quantizer followed WaveQ's learned bits (DoReFa, the first run above):
# eval rounds at the learned bits it trained at and prints the run's figures.
"$lowbit" eval --checkpoint "$work/straight/checkpoint.ckpt" --threads 2 > "$work/eval_dorefa.log"
want_dorefa=$(grep -o "^accuracy: FP32 (float shadow) weights [0-9.]*%, weights quantized at these bits [0-9.]*%" "$work/straight.log")
[ -n "$want_dorefa" ] && grep -qF "$want_dorefa" "$work/eval_dorefa.log" &&
  [ "$(grep -A5 '^  layer  *trained  *rounded' "$work/straight.log")" = "$(grep -A5 '^  layer  *trained  *rounded' "$work/eval_dorefa.log")" ] ||
  { echo "eval of the DoReFa + WaveQ run differs from its report: '$want_dorefa'"; cat "$work/straight.log" "$work/eval_dorefa.log"; exit 1; }
# --predictions: one row per test image, in order; its accuracy is the printed one.
"$lowbit" eval --checkpoint "$work/wq/checkpoint.ckpt" --threads 2 --predictions "$work/pred.csv" > "$work/eval2.log"
rows=$(awk -F, 'NR > 1 { n++; c += ($2 == $3); if ($1 != n - 1) bad = 1 } END { if (!bad) printf "%d images, accuracy %.2f%%", n, 100 * c / n }' "$work/pred.csv")
grep -q "accuracy ${rows#*accuracy }.*(${rows%% images*} images)" "$work/eval2.log" && [ "${rows%% images*}" = 256 ] ||
  { echo "--predictions ($rows) disagrees with:"; cat "$work/eval2.log"; exit 1; }

# Post-training quantization: eval --quant/--wbits rounds a checkpoint's weights. Rounding the WaveQ
# run's weights on its own grid (WRPN, 3 bits, on w / max|w|: float training's default) must give
# the two figures its report printed, and the net evaluated (first line) is the rounded one.
"$lowbit" eval --checkpoint "$work/wq/checkpoint.ckpt" --threads 2 --quant wrpn --wbits 3 --weight-scale max > "$work/ptq.log"
fp32=$(echo "$want" | sed -E 's/.*float shadow\) weights ([0-9.]+%).*/\1/')
q=$(echo "$want" | sed -E 's/.*at these bits ([0-9.]+%)$/\1/')
grep -q "^accuracy: FP32 weights $fp32, rounded at these bits after training $q$" "$work/ptq.log" &&
  grep -q "accuracy $q (256 images)" "$work/ptq.log" && ! grep -q "trained through" "$work/ptq.log" ||
  { echo "post-training eval differs from the run's report ($fp32, $q):"; cat "$work/ptq.log"; exit 1; }

# WaveQ with learned beta (float training, wrpn grid): --learned-levels picks what the learned bits
# round to; eval re-measures a run either way, and with the run's own choice gives its figure.
"$lowbit" train --model lenet5 --width 0.5 --data fashion-mnist --limit-train 1024 --limit-test 256 --batch 64 \
  --epochs 1 --lr 0.05 --seed 7 --threads 2 --quiet --reg waveq --wbits 8 --weight-scale max --lambda-beta 0.5 \
  --beta-lr 1 --learned-levels period --out "$work/wl" > "$work/wl.log"
want=$(grep -o "^accuracy: FP32 (float shadow) weights [0-9.]*%, weights quantized at these bits [0-9.]*%" "$work/wl.log")
for lv in period integer auto; do
  "$lowbit" eval --checkpoint "$work/wl/checkpoint.ckpt" --threads 2 --learned-levels $lv > "$work/wl_$lv.log"
done
grep -qF "$want" "$work/wl_period.log" && [ "$(grep -c 'bits  beta .*  period$' "$work/wl_period.log")" = 2 ] &&
  [ "$(grep -c 'bits  beta .*  grid$' "$work/wl_integer.log")" = 2 ] &&
  [ "$(grep -cE 'bits  beta .*  (period|grid)$' "$work/wl_auto.log")" = 2 ] &&
  grep -q "levels (--learned-levels auto)" "$work/wl_auto.log" ||
  { echo "--learned-levels: eval does not follow it:"; cat "$work/wl.log" "$work/wl_"*.log; exit 1; }

# --init: a new run starts from a checkpoint's model weights (here float, no quantizer, lr 0: the
# weights must come through unchanged); a checkpoint of another shape is refused naming the file.
"$lowbit" train --model lenet5 --width 0.5 --data fashion-mnist --limit-train 256 --limit-test 64 --batch 64 \
  --epochs 1 --lr 0 --wd 0 --seed 3 --threads 2 --quiet --init "$work/straight/checkpoint.ckpt" \
  --out "$work/init" > "$work/init.log"
grep -q "model weights from $work/straight/checkpoint.ckpt: .* tensors; not in this model: conv2.beta, fc1.beta" "$work/init.log"
for t in conv1.weight conv1.bias conv2.weight conv2.bias fc1.weight fc1.bias fc2.weight fc2.bias; do
  "$lowbit" compare "$work/straight/checkpoint.ckpt" "$work/init/checkpoint.ckpt" "model.$t" > /dev/null
done
set +e
"$lowbit" train --model lenet5 --data fashion-mnist --limit-train 256 --epochs 1 --quiet \
  --init "$work/straight/checkpoint.ckpt" --out "$work/init_bad" > "$work/init_bad.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] || { echo "--init with a checkpoint of another width accepted"; exit 1; }
grep -q "init $work/straight/checkpoint.ckpt does not fit --model lenet5: .*shape mismatch" "$work/init_bad.log" ||
  { cat "$work/init_bad.log"; exit 1; }

# --init from a quantized run into a quantized run carries the quantization's learned parameters
# (U3's step sizes and ranges; before, they were re-initialised): at lr 0 every model tensor,
# quantizer parameters included, comes through unchanged.
"$lowbit" train --model lenet5 --data fashion-mnist --limit-train 256 --limit-test 64 --batch 64 --epochs 1 \
  --seed 3 --threads 2 --quiet --quant u3 --wbits 4 --abits 4 --out "$work/u3" > /dev/null
"$lowbit" train --model lenet5 --data fashion-mnist --limit-train 256 --limit-test 64 --batch 64 --epochs 1 \
  --lr 0 --wd 0 --quantizer-lr 0 --seed 3 --threads 2 --quiet --quant u3 --wbits 4 --abits 4 \
  --init "$work/u3/checkpoint.ckpt" --out "$work/u3_init" > "$work/u3_init.log"
grep -q "model weights from $work/u3/checkpoint.ckpt: 18 tensors (10 of them the quantization's parameters)" \
  "$work/u3_init.log" || { cat "$work/u3_init.log"; exit 1; }
"$lowbit" compare "$work/u3/checkpoint.ckpt" "$work/u3_init/checkpoint.ckpt" model. > /dev/null ||
  { echo "--init lost the quantizers' learned parameters"; exit 1; }

# A checkpoint that does not fit the resumed run's options (width 0.5 resumed at width 1): refused
# naming the file, nothing written.
cp "$work/a/checkpoint.ckpt" "$work/a_before.ckpt"
cp "$work/init/checkpoint.ckpt" "$work/init_before.ckpt"
set +e
"$lowbit" train --out "$work/a" --resume "$work/init/checkpoint.ckpt" --width 1 > "$work/other.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] || { echo "a checkpoint of another width accepted by --resume"; exit 1; }
grep -q "$work/init/checkpoint.ckpt: does not match this run's model, optimizer or quantization (.*shape" \
  "$work/other.log" || { cat "$work/other.log"; exit 1; }
cmp -s "$work/a/checkpoint.ckpt" "$work/a_before.ckpt" || { echo "a refused --resume changed a checkpoint"; exit 1; }
cmp -s "$work/init/checkpoint.ckpt" "$work/init_before.ckpt" || { echo "a refused --resume changed a checkpoint"; exit 1; }

# Corrupt checkpoint: clear error naming the file, non-zero exit, nothing overwritten.
cp "$work/a/checkpoint.ckpt" "$work/bad.ckpt"
printf 'garbage' | dd of="$work/bad.ckpt" bs=1 seek=100 conv=notrunc status=none
set +e
"$lowbit" train --out "$work/a" --resume "$work/bad.ckpt" > "$work/bad.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] || { echo "corrupt checkpoint accepted"; exit 1; }
grep -q "bad.ckpt: checksum mismatch" "$work/bad.log" || { cat "$work/bad.log"; exit 1; }
echo "resume: straight == epoch-boundary resume == mid-epoch resume == Ctrl-C resume (bit for bit); corrupt or unfitting checkpoint refused naming the file; eval reproduces the final report, also as post-training rounding; --init carries the weights and the quantizers' parameters, refuses another shape"
