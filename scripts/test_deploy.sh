#!/usr/bin/env bash
# End-to-end test of the integer deployment path: `lowbit train` (DoReFa 4/4 + WaveQ, small), then
# `lowbit export` (per-layer bits, file size vs FP32) and `lowbit infer` (integer engine), whose
# predictions must agree with `lowbit eval --predictions` (the simulated quantized model) on >= 99.7 %
# of the test images, `infer --reference` (the _ref kernels) must give the same predictions, and
# a corrupt, truncated or missing model file and a non-exportable run must fail naming the file / the reason;
# U3 and MobileNet v2 (signed codes) runs agree with `lowbit eval --double`; `export --entropy-code`
# (Huffman-coded weights, format version 4) prints its account and ratios, and `infer` on that file
# predicts exactly what it predicts on the packed one; a pruned run's fc1 is stored with zero runs
# (huffman-rle) and predicts what its packed export predicts; a small ResNet-20's Winograd layers (infer
# --profile) predict what --int8-winograd off and the _ref kernels predict.
# Usage: scripts/test_deploy.sh BUILD_DIR       (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_deploy.sh BUILD_DIR" "${1:-}"
# How many images two prediction CSVs (image,label,predicted) predict alike.
agreement() { paste -d, "$1" "$2" | awk -F, 'NR > 1 { n++; if ($3 == $6) a++ } END { print a + 0 }'; }
# Run NAME ($work/NAME, exported to $work/NAME.lbq): its integer predictions on the first N test images
# against eval --double's (NAME_int.csv, NAME_eval.csv); prints the agreeing count.
double_agreement() {
  "$lowbit" eval --checkpoint "$work/$1/checkpoint.ckpt" --double --predictions "$work/$1_eval.csv" > /dev/null &&
    "$lowbit" infer --model-file "$work/$1.lbq" --data fashion-mnist --limit-test "$2" \
      --predictions "$work/$1_int.csv" > /dev/null &&
    agreement "$work/$1_eval.csv" "$work/$1_int.csv"
}
common=(--model lenet5 --width 0.5 --data fashion-mnist --limit-train 2048 --limit-test 1000 --batch 64
        --epochs 1 --lr 0.05 --seed 7 --threads 2 --quiet)
"$lowbit" train "${common[@]}" --quant dorefa --wbits 4 --abits 4 --reg waveq --lambda-beta 0.1 \
  --out "$work/q" > "$work/train.log"

"$lowbit" export --checkpoint "$work/q/checkpoint.ckpt" --out "$work/m.lbq" | tee "$work/export.log"
grep -q "^conv2 .* exact codes" "$work/export.log"
grep -q "^conv1 .*fp32 .*16 bits per output channel, the remainder at 8 bits (lossy" "$work/export.log"
grep -q "^fc2 .*fp32 .*rounded to 16 bits per output channel (lossy" "$work/export.log"
grep -q "m.lbq: [0-9]* bytes; FP32 parameters" "$work/export.log"

"$lowbit" eval --checkpoint "$work/q/checkpoint.ckpt" --predictions "$work/eval.csv" > "$work/eval.log"
"$lowbit" infer --model-file "$work/m.lbq" --data fashion-mnist --limit-test 1000 --predictions "$work/int.csv" \
  | tee "$work/infer.log"
"$lowbit" infer --model-file "$work/m.lbq" --data fashion-mnist --limit-test 200 --reference \
  --predictions "$work/ref.csv" > /dev/null
[ "$(wc -l < "$work/int.csv")" -eq 1001 ]
# the FP32 twin timed beside it, and the per-op profile
"$lowbit" infer --model-file "$work/m.lbq" --data fashion-mnist --limit-test 256 --fp32-checkpoint \
  "$work/q/checkpoint.ckpt" --profile > "$work/speed.log"
grep -q "^FP32 (the run's float model, lowbit, batch 128, [0-9]* threads): [0-9.]* img/s; integer: [0-9.]*x FP32" "$work/speed.log"
grep -q "conv *conv2 .* ms/batch" "$work/speed.log"
agree=$(agreement "$work/eval.csv" "$work/int.csv")
echo "predictions agree on $agree / 1000 images"
[ "$agree" -ge 997 ]
# the simulation in double precision (eval --double) predicts what the integer engine predicts
"$lowbit" eval --checkpoint "$work/q/checkpoint.ckpt" --double --predictions "$work/eval64.csv" > "$work/eval64.log"
agree64=$(agreement "$work/eval64.csv" "$work/int.csv")
echo "eval --double: predictions agree on $agree64 / 1000 images"
[ "$agree64" -ge 999 ]
# the _ref kernels give the fast path's predictions (bit for bit)
cmp "$work/ref.csv" <(head -201 "$work/int.csv")

# Bad files: a clear error naming the file, exit 1.
expect_error() {  # FILE PATTERN
  if "$lowbit" infer --model-file "$1" --data fashion-mnist --limit-test 10 > "$work/out" 2> "$work/err"; then
    echo "FAIL: infer accepted $1"; exit 1
  fi
  grep -q -- "$1" "$work/err" && grep -q -- "$2" "$work/err" || { echo "FAIL: $1: $(cat "$work/err")"; exit 1; }
}
head -c 100 "$work/m.lbq" > "$work/trunc.lbq"
expect_error "$work/trunc.lbq" "truncated"
cp "$work/m.lbq" "$work/flip.lbq"
printf '\x55' | dd of="$work/flip.lbq" bs=1 seek=5000 conv=notrunc status=none
expect_error "$work/flip.lbq" "checksum mismatch"
expect_error "$work/q/checkpoint.ckpt" "bad magic"
expect_error "$work/none.lbq" "cannot open"

# Entropy coding (spec methods.md §3.4): version 4, smaller, the same predictions; the account.
"$lowbit" export --checkpoint "$work/q/checkpoint.ckpt" --out "$work/mc.lbq" --entropy-code \
  | tee "$work/export_coded.log"
grep -q "^conv2 .* huffman$" "$work/export_coded.log"
grep -q "^file: [0-9]* bytes coded, [0-9]* bytes packed" "$work/export_coded.log"
grep -q "^compression ratio (file bytes): FP32 parameters [0-9]* bytes / file [0-9]* bytes = [0-9.]*x$" \
  "$work/export_coded.log"
grep -q "^compression ratio (spec formula): 32 N / sum_l (coded bits + table bits + 32) = 32 \* [0-9]* / [0-9]* = [0-9.]*x (each layer in the storage chosen" \
  "$work/export_coded.log"
[ "$(od -An -tu4 -j8 -N4 "$work/mc.lbq" | tr -d ' ')" = 4 ]
[ "$(od -An -tu4 -j8 -N4 "$work/m.lbq" | tr -d ' ')" = 2 ]
[ "$(stat -c %s "$work/mc.lbq")" -lt "$(stat -c %s "$work/m.lbq")" ]
"$lowbit" infer --model-file "$work/mc.lbq" --data fashion-mnist --limit-test 1000 \
  --predictions "$work/int_coded.csv" > "$work/infer_coded.log"
cmp "$work/int.csv" "$work/int_coded.csv"
head -c "$(($(stat -c %s "$work/mc.lbq") - 10))" "$work/mc.lbq" > "$work/mc_trunc.lbq"
expect_error "$work/mc_trunc.lbq" "truncated"

# U3 (learned step, range and bits) through the CLI: export, then integer inference agreeing with
# the double-precision simulation.
"$lowbit" train "${common[@]}" --limit-train 256 --limit-test 64 --quant u3 --wbits 4 --abits 4 \
  --out "$work/u3" > /dev/null
"$lowbit" export --checkpoint "$work/u3/checkpoint.ckpt" --out "$work/u3.lbq" > "$work/u3_export.log"
grep -q "^conv2 .* exact codes" "$work/u3_export.log"
agree_u3=$(double_agreement u3 64)
echo "u3: predictions agree on $agree_u3 / 64 images"
[ "$agree_u3" -ge 63 ]

# MobileNet v2 (its residual stream quantized by signed quantizers, exported as signed codes: format
# version 3) through the CLI: train (a few batches), export, then integer inference agreeing with the
# double-precision simulation on a set where it predicts several classes.
"$lowbit" train --model mobilenet_v2 --variant cifar --width 0.25 --data fashion-mnist --limit-train 1024 \
  --limit-test 200 --batch 32 --epochs 1 --lr 0.05 --seed 7 --threads 2 --quiet --quant dorefa --wbits 4 --abits 4 \
  --out "$work/v2" > /dev/null
"$lowbit" export --checkpoint "$work/v2/checkpoint.ckpt" --out "$work/v2.lbq" > "$work/v2_export.log"
grep -q "^features.2.conv.2 .* exact codes, output activations 4 bits" "$work/v2_export.log"
[ "$(head -c 12 "$work/v2.lbq" | tail -c 4 | od -An -tu4 | tr -d ' ')" -eq 3 ]  # format version 3
agree_v2=$(double_agreement v2 200)
classes_v2=$(tail -n +2 "$work/v2_int.csv" | cut -d, -f3 | sort -u | wc -l)
echo "mobilenet_v2: predictions agree on $agree_v2 / 200 images ($classes_v2 classes predicted)"
[ "$agree_v2" -ge 199 ]
[ "$classes_v2" -ge 3 ]
# lowbit bench --integer exports the freshly built model: one batch sets the stream's clip first.
"$lowbit" bench --model mobilenet_v2 --variant cifar --width 0.25 --quant dorefa --wbits 4 --abits 4 --integer \
  --mode none --batch 2 --steps 1 --warmup 0 --threads 2 | tail -1 | grep -q '"integer_infer_images_per_sec": [1-9]'

# Choi et al.'s pipeline (issue 18): MSQE quantizers + partial-L2 pruning (70 %, at half the run), then
# an entropy-coded export whose layers show the pruned zeros, run integer-only: agreeing with eval --double.
# fc1 (~89 % zeros) is stored with zero runs (storage 2, below 1 bit a weight); infer on that file
# predicts exactly what it predicts on the packed export.
"$lowbit" train "${common[@]}" --limit-test 500 --quant msqe --wbits 4 --abits 4 --quantize-first-last \
  --prune-sparsity 0.7 --prune-at 0.5 --out "$work/mq" > /dev/null
"$lowbit" export --checkpoint "$work/mq/checkpoint.ckpt" --out "$work/mq.lbq" --entropy-code > "$work/mq_export.log"
cat "$work/mq_export.log"
awk '$1 == "conv2" && NF == 10 && $4 >= 0.7 { found = 1 } END { exit !found }' "$work/mq_export.log"
awk '$1 == "fc1" && $NF == "huffman-rle" && $(NF - 1) < 1 { found = 1 } END { exit !found }' "$work/mq_export.log"
grep -q "^compression ratio (file bytes)" "$work/mq_export.log"
agree_mq=$(double_agreement mq 500)
echo "msqe + pruning, entropy-coded: predictions agree on $agree_mq / 500 images"
[ "$agree_mq" -ge 499 ]
"$lowbit" export --checkpoint "$work/mq/checkpoint.ckpt" --out "$work/mq_packed.lbq" > /dev/null
"$lowbit" infer --model-file "$work/mq_packed.lbq" --data fashion-mnist --limit-test 500 \
  --predictions "$work/mq_packed_int.csv" > /dev/null
cmp "$work/mq_int.csv" "$work/mq_packed_int.csv"
[ "$(stat -c %s "$work/mq.lbq")" -lt "$(stat -c %s "$work/mq_packed.lbq")" ]

# The exact integer Winograd through the CLI: a small ResNet-20 (DoReFa 4/4, every layer), whose 3x3
# stride-1 convolutions on 4-bit inputs take it (`infer --profile` marks them); `--int8-winograd off`
# (direct kernels only) predicts the same, and so do the _ref kernels.
"$lowbit" train --model resnet20 --width 0.5 --data fashion-mnist --limit-train 512 --limit-test 256 --batch 64 \
  --epochs 1 --lr 0.05 --seed 7 --threads 2 --quiet --quant dorefa --wbits 4 --abits 4 --quantize-first-last \
  --out "$work/r20" > /dev/null
"$lowbit" export --checkpoint "$work/r20/checkpoint.ckpt" --out "$work/r20.lbq" > /dev/null
"$lowbit" infer --model-file "$work/r20.lbq" --data fashion-mnist --limit-test 256 --profile \
  --predictions "$work/r20_on.csv" > "$work/r20_on.log"
[ "$(grep -c "  winograd$" "$work/r20_on.log")" -ge 12 ] || { cat "$work/r20_on.log"; echo "FAIL: no Winograd layers"; exit 1; }
"$lowbit" infer --model-file "$work/r20.lbq" --data fashion-mnist --limit-test 256 --int8-winograd off \
  --predictions "$work/r20_off.csv" > /dev/null
"$lowbit" infer --model-file "$work/r20.lbq" --data fashion-mnist --limit-test 256 --reference \
  --predictions "$work/r20_ref.csv" > /dev/null
cmp "$work/r20_on.csv" "$work/r20_off.csv"
cmp "$work/r20_on.csv" "$work/r20_ref.csv"

# A method the integer format does not carry: refused, naming it.
"$lowbit" train "${common[@]}" --limit-train 256 --limit-test 64 --quant p3 --wbits 4 --abits 4 \
  --out "$work/p3" > /dev/null
if "$lowbit" export --checkpoint "$work/p3/checkpoint.ckpt" --out "$work/p3.lbq" 2> "$work/err"; then
  echo "FAIL: exported a p3 run"; exit 1
fi
grep -q "'p3' is not exportable" "$work/err"
echo "deploy: ok"
