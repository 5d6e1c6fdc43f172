#!/usr/bin/env bash
# Reproduction runs behind docs/results.md. Each run is one `lowbit train` command; its run folder
# (runs/repro/NAME) keeps config.txt, metrics.jsonl, checkpoint.ckpt and, for quantized runs,
# report.html. Usage: scripts/reproduce.sh BUILD_DIR RUN [RUN ...] | list
#   DATA: the shared data sets folder (default ../shared/data), holding mnist/ and cifar-10/.
#   RESUME=1: continue each run from its folder's checkpoint (after Ctrl-C or a stopped session);
#   the log is appended to.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: reproduce.sh BUILD_DIR RUN... | list}
shift
lowbit="$build/cli/lowbit"
data=${DATA:-../shared/data}
out=${OUT:-runs/repro}
threads=${THREADS:-2}

declare -A runs
# Issue "training stack": float baselines.
runs[lenet5-fashion]="--model lenet5 --data fashion-mnist --epochs 20 --batch 128 --lr 0.05 --schedule cosine --wd 5e-4"
runs[lenet5-mnist]="--model lenet5 --data mnist:$data/mnist --epochs 20 --batch 128 --lr 0.05 --schedule cosine --wd 5e-4"
runs[resnet20-cifar10]="--model resnet20 --data cifar10:$data/cifar-10 --epochs 160 --batch 128 --lr 0.1 --schedule multistep:80,120 --wd 1e-4"
# Issue "quantization", table (a): homogeneous weight bits k = 3, 4, 5 for one net.
#   qat_rows NAME "BASE ARGS" "ARGS OF EVERY QUANTIZED ROW" "EXTRA ARGS OF THE WRPN-GRID ROWS"
qat_rows() {
  local name=$1 base=$2 all=$3 wrpn=$4 dorefa_reg=$5 k
  for k in 3 4 5; do
    runs[$name-dorefa-w$k]="$base --quant dorefa --wbits $k $all"
    runs[$name-dorefa-sinreq-w$k]="$base --quant dorefa --wbits $k $all --reg sinreq --lambda-w 1 --reg-warmup 0.1 $dorefa_reg"
    runs[$name-wrpn-w$k]="$base --quant wrpn --wbits $k $all $wrpn"
    runs[$name-wrpn-sinreq-w$k]="$base --quant wrpn --wbits $k $all $wrpn --reg sinreq --lambda-w 1 --reg-warmup 0.1"
    runs[$name-waveq-fixed-w$k]="$base --quant wrpn --wbits $k $all $wrpn --reg waveq --fix-beta --lambda-w 1 --reg-warmup 0.1"
  done
}
# simplenet_cifar on CIFAR-10 from scratch, activations at 8 bits.
simple="--model simplenet_cifar --data cifar10:$data/cifar-10 --epochs 15 --batch 128 --lr 0.05 --schedule cosine --wd 5e-4"
runs[simplenet-fp32]="$simple"
# (These rows ran before the sinusoid's grid was derived from the quantizer and WRPN's defaulted to
# each layer's range: raw-w WRPN and DoReFa + SinReQ on raw w, the official code's choice, are kept
# with --weight-scale none [--allow-grid-mismatch].)
qat_rows simplenet "$simple" "--abits 8" "--weight-scale none" "--weight-scale none --allow-grid-mismatch"
# ResNet-20 on CIFAR-10: quantization-aware fine-tuning of the float run above (its checkpoint, or
# R20_INIT), 15 epochs, lr 0.01 cosine, weights quantized (first conv and the classifier FP32),
# float activations. WRPN's grid on [-1, 1] is used on w / max|w| per layer (--weight-scale max):
# on raw Kaiming-scale weights (|w| ~ 0.1) its 3-bit step of 1/3 rounds almost every weight to 0.
# DoReFa + SinReQ puts the sinusoid on DoReFa's own tanh(w) / max|tanh w| (--weight-scale tanh),
# where its zeros are DoReFa's levels.
r20="--model resnet20 --data cifar10:$data/cifar-10 --init ${R20_INIT:-$out/resnet20-cifar10/checkpoint.ckpt} --epochs 15 --batch 128 --lr 0.01 --schedule cosine --wd 1e-4"
qat_rows resnet20 "$r20" "--abits 32" "--weight-scale max" "--weight-scale tanh"
# The same DoReFa + SinReQ row with the sinusoid on raw w, as in the official code (its zeros miss
# DoReFa's levels unless max|w| is near 1; ResNet-20's layers have max|w| 0.29-0.99).
runs[resnet20-dorefa-sinreq-raw-w4]="$r20 --quant dorefa --wbits 4 --abits 32 --reg sinreq --lambda-w 1 --reg-warmup 0.1 --weight-scale none --allow-grid-mismatch"
runs[resnet20-waveq]="$r20 --reg waveq --wbits 8 --beta-init 8 --lambda-beta 0.05 --beta-lr 0.05 --weight-scale max"
# Learned heterogeneous bitwidths (WaveQ, float training, WRPN grid), beta from 8, on raw w (the
# grid on [-1, 1]; --weight-scale none now that float training defaults to w / max|w|).
runs[lenet5-mnist-waveq]="--model lenet5 --data mnist:$data/mnist --epochs 20 --batch 128 --lr 0.05 --schedule cosine --wd 5e-4 --reg waveq --wbits 8 --beta-init 8 --lambda-beta 0.05 --beta-lr 0.05 --weight-scale none"
runs[simplenet-waveq]="$simple --reg waveq --wbits 8 --beta-init 8 --lambda-beta 0.05 --beta-lr 0.05 --weight-scale none"
# The same with the per-layer weight scale (sinusoid and WRPN grid on w / max|w|, docs/quantization.md,
# "Weight scale"), same bitwidth penalty.
runs[lenet5-mnist-waveq-scaled]="--model lenet5 --data mnist:$data/mnist --epochs 20 --batch 128 --lr 0.05 --schedule cosine --wd 5e-4 --reg waveq --wbits 8 --beta-init 8 --lambda-beta 0.05 --beta-lr 0.05 --weight-scale max"
runs[simplenet-waveq-scaled]="$simple --reg waveq --wbits 8 --beta-init 8 --lambda-beta 0.05 --beta-lr 0.05 --weight-scale max"
# The issue's defaults check: the learned-bit commands with today's defaults only (scale auto =
# w / max|w| in float training, beta from --wbits - 1).
runs[simplenet-waveq-defaults]="$simple --reg waveq --wbits 8 --lambda-beta 0.05 --beta-lr 0.05"
runs[lenet5-mnist-waveq-defaults]="--model lenet5 --data mnist:$data/mnist --epochs 20 --batch 128 --lr 0.05 --schedule cosine --wd 5e-4 --reg waveq --wbits 8 --lambda-beta 0.05 --beta-lr 0.05"
# The same with beta snapped to ceil(beta) for phase 3 (--snap-beta): the weights settle on the grid
# they are rounded to at the end.
runs[simplenet-waveq-snap]="${runs[simplenet-waveq-scaled]} --snap-beta"
runs[resnet20-waveq-snap]="${runs[resnet20-waveq]} --snap-beta"

# Issue 16 (Uhlich et al.): the float ResNet-20 (A), 60 cosine epochs, then 15-epoch fine-tunes of it
# per cell (docs/results.md, "Mixed precision by parametrization"). u16-b8a8c-ft continues
# u16-b8a8c-l1's best_within_budget.ckpt for 5 epochs with the bits frozen.
r20a="--model resnet20 --variant A --data cifar10:$data/cifar-10 --batch 128 --optimizer sgd --momentum 0.9 --wd 2e-4 --schedule cosine --augment auto --checkpoint-every 5m"
runs[u16-fp32]="$r20a --epochs 60 --lr 0.1"
u16="$r20a --init $out/u16-fp32/checkpoint.ckpt --epochs 15"
u16b="--weight-budget-kb 70 --act-budget-kb 8 --act-budget max"
runs[u16-u3-w]="$u16 --quant u3 --wbits 4 --abits 32 --quantize-first-last --lr 0.03"
runs[u16-u3-wa]="$u16 --quant u3 --wbits 4 --abits 4 --quantize-first-last --lr 0.03"
runs[u16-p3-w]="$u16 --quant p3 --wbits 4 --abits 32 --quantize-first-last --lr 0.03"
runs[u16-p3-wa]="$u16 --quant p3 --wbits 4 --abits 4 --quantize-first-last --lr 0.03"
runs[u16-b8a]="$u16 --quant u3 --wbits 4 --abits 32 --quantize-first-last --weight-budget-kb 70 --lr 0.03"
# (u16-fixed2's lr: 0.03 as the other cells; the flags recorded for the 2026-12-03 run do not say.)
runs[u16-fixed2]="$u16 --quant u3 --wbits 2 --abits 32 --quantize-first-last --quantizer-lr 0 --lr 0.03"
runs[u16-b8a8c]="$u16 --quant u3 --wbits 4 --abits 4 --quantize-first-last $u16b --lr 0.03"
runs[u16-b8a8c-l1]="${runs[u16-b8a8c]} --budget-lambda 1"
runs[u16-b8a8c-ft]="$r20a --init $out/u16-b8a8c-l1/best_within_budget.ckpt --epochs 5 --lr 0.003 --quantizer-lr 0 --quant u3 --wbits 4 --abits 4 --quantize-first-last $u16b --budget-lambda 1"
# Issue 17 (Alizadeh et al.): 15-epoch continuations of u16-fp32 without and with the penalty, and the
# STE-QAT 4/4 comparison; evaluated with lowbit eval --ptq 8/8,6/6,4/4.
g17="$r20a --init $out/u16-fp32/checkpoint.ckpt --epochs 15 --lr 0.01"
runs[g17-ft]="$g17"
runs[g17-l1-1e-3]="$g17 --reg grad-l1 --lambda 1e-3"
# The same penalty with its gradient by finite differences of the gradient (about 2x a plain step).
runs[g17-l1-fd-1e-3]="$g17 --reg grad-l1 --lambda 1e-3 --grad-l1-mode fd"
runs[g17-qat4]="$g17 --quant dorefa --wbits 4 --abits 4 --quantize-first-last"
# The range-scaled penalty (docs/quantization.md), as on VGG-11 (g17-vgg5-l1r-fd-5e-4).
runs[g17-l1r-fd-5e-4]="$g17 --reg grad-l1 --lambda 5e-4 --grad-l1-scale range --grad-l1-mode fd"
# The same with the two terms balanced: at lambda 5e-4 the activation terms were ~15x the weight terms
# (1,718 against 116 at epoch 1) and 4/32 PTQ still lost 7.9 points while 32/4 lost none.
runs[g17-l1r-fd-w5e-3-a2.5e-4]="$g17 --reg grad-l1 --lambda 5e-3 --lambda-a 2.5e-4 --grad-l1-scale range --grad-l1-mode fd"
# the same with lambda_a set on the first regularized batch (--grad-l1-balance) instead of by hand
runs[g17-l1r-fd-w5e-3-bal]="$g17 --reg grad-l1 --lambda 5e-3 --grad-l1-balance --grad-l1-scale range --grad-l1-mode fd"
# Issue 15's mixed-bit model (docs/format.md): DoReFa 4/4 with WaveQ on every layer, bits learned 3-4.
runs[r20-waveq44]="$g17 --quant dorefa --wbits 4 --abits 4 --quantize-first-last --reg waveq --lambda-w 100 --lambda-beta 5 --beta-lr 0.01"
# Issue 18 (Choi et al.): MSQE + partial-L2 pruning fine-tunes of u16-fp32, every layer quantized,
# 8-bit activations (their cell sizes at lr 1e-6); then lowbit export --entropy-code.
u18="$r20a --init $out/u16-fp32/checkpoint.ckpt --epochs 15 --lr 0.01 --quant msqe --reg msqe --msqe-lambda 0.01 --act-quantizer-lr 1e-6 --abits 8 --quantize-first-last --prune-overrides conv1=0.3,fc=0.5 --prune-at 0.3"
runs[u18-r20-msqe-w3-p7]="$u18 --wbits 3 --prune-sparsity 0.7"
runs[u18-r20-msqe-w3-p5]="$u18 --wbits 3 --prune-sparsity 0.5"
runs[u18-r20-msqe-w4-p5]="$u18 --wbits 4 --prune-sparsity 0.5"
# MobileNet-v1 (cifar variant) on CIFAR-10 for issue 18, the stand-in for the paper's ImageNet
# MobileNet: the float net, then MSQE + pruning fine-tunes as above; the depthwise layers (model.N.0,
# 3x3 per channel, 1 % of the weights) pruned less.
mb="--model mobilenet_v1 --variant cifar --data cifar10:$data/cifar-10 --batch 128 --optimizer sgd --momentum 0.9 --wd 5e-4 --schedule cosine --augment auto --checkpoint-every 5m"
runs[mbv1-fp32]="$mb --epochs 30 --lr 0.05"
u18mb="$mb --init $out/mbv1-fp32/checkpoint.ckpt --epochs 15 --lr 0.01 --quant msqe --reg msqe --msqe-lambda 0.01 --act-quantizer-lr 1e-6 --abits 8 --quantize-first-last --prune-overrides model.*.0=0.2,fc=0.5 --prune-at 0.3"
runs[u18-mbv1-msqe-w4-p5]="$u18mb --wbits 4 --prune-sparsity 0.5"
runs[u18-mbv1-msqe-w4-p7]="$u18mb --wbits 4 --prune-sparsity 0.7"
# VGG-11 (BN) on CIFAR-10 for issues 17 and 19: the float net (30 cosine epochs, ~2 min an epoch on
# 2 cores), then 15-epoch continuations as for ResNet-20 (issue 17), and the plain QAT side of
# issue 19's DCQ pairs (the DCQ side: lowbit dcq --teacher $out/vgg-fp32/checkpoint.ckpt, the same
# epochs, lr and QUANT; docs/results.md).
vgg="--model vgg11_bn --data cifar10:$data/cifar-10 --batch 128 --optimizer sgd --momentum 0.9 --wd 5e-4 --schedule cosine --augment auto --checkpoint-every 5m"
runs[vgg-fp32]="$vgg --epochs 30 --lr 0.05"
vggc="$vgg --init $out/vgg-fp32/checkpoint.ckpt --epochs 15 --lr 0.01"
runs[g17-vgg-ft]="$vggc"
runs[g17-vgg-l1-1e-3]="$vggc --reg grad-l1 --lambda 1e-3"
# The same in the fd mode (about 2x a plain step against 3x; its dP/dtheta on the trained VGG-11 has
# cosine 0.99988 with the exact one), and at a third of lambda: VGG-11's penalty gradient is ~40x
# its loss gradient at lambda 1e-3 (ResNet-20's ~14x).
runs[g17-vgg-l1-fd-1e-3]="$vggc --reg grad-l1 --lambda 1e-3 --grad-l1-mode fd"
runs[g17-vgg-l1-fd-3e-4]="$vggc --reg grad-l1 --lambda 3e-4 --grad-l1-mode fd"
runs[g17-vgg-qat4]="$vggc --quant dorefa --wbits 4 --abits 4 --quantize-first-last"
# The same continuations in 5 epochs (lr 0.01 cosine): what fits one 3-hour session after the
# float net (~75 min), since run folders do not survive from one session's machine to the next.
vggc5="$vgg --init $out/vgg-fp32/checkpoint.ckpt --epochs 5 --lr 0.01"
runs[g17-vgg5-ft]="$vggc5"
runs[g17-vgg5-l1-fd-1e-3]="$vggc5 --reg grad-l1 --lambda 1e-3 --grad-l1-mode fd"
runs[g17-vgg5-l1-fd-3e-4]="$vggc5 --reg grad-l1 --lambda 3e-4 --grad-l1-mode fd"
runs[g17-vgg5-qat4]="$vggc5 --quant dorefa --wbits 4 --abits 4 --quantize-first-last"
# The penalty range-scaled (each term times max|W_l| or max|a_l|, invariant to the weight and
# activation scales batch norm leaves free; docs/quantization.md): lambda 5e-4 starts at P ~ 0.47 on
# the float net (unscaled 3e-4: ~0.86).
runs[g17-vgg5-l1r-fd-5e-4]="$vggc5 --reg grad-l1 --lambda 5e-4 --grad-l1-scale range --grad-l1-mode fd"
# Its ablations: the gradient without the ranges' part (ranges held constant), and with that part
# alone (norms held constant: no second pass).
runs[g17-vgg5-l1rf-fd-5e-4]="$vggc5 --reg grad-l1 --lambda 5e-4 --grad-l1-scale range-fixed --grad-l1-mode fd"
runs[g17-vgg5-l1ro-fd-5e-4]="$vggc5 --reg grad-l1 --lambda 5e-4 --grad-l1-scale range-only --grad-l1-mode fd"
# Issue 19's VGG-11 pairs: 10 epochs each (DCQ's and QAT's alike), lr 0.01 cosine, first and last
# layers in float; then 3 epochs of end-to-end fine-tuning of the stitched DCQ nets. A run starting
# with "dcq " is a `lowbit dcq` command.
u19v="--batch 128 --optimizer sgd --momentum 0.9 --wd 5e-4 --schedule cosine --augment auto --checkpoint-every 5m --epochs 10 --lr 0.01"
u19bin="--quant dorefa --wbits 1 --abits 32"
u19ter="--quant ternary --abits 32"
runs[u19-vgg-qat-bin]="--model vgg11_bn --data cifar10:$data/cifar-10 --init $out/vgg-fp32/checkpoint.ckpt $u19v $u19bin"
runs[u19-vgg-qat-ter]="--model vgg11_bn --data cifar10:$data/cifar-10 --init $out/vgg-fp32/checkpoint.ckpt $u19v $u19ter"
runs[u19-vgg-dcq-bin]="dcq --teacher $out/vgg-fp32/checkpoint.ckpt $u19v $u19bin"
runs[u19-vgg-dcq-ter]="dcq --teacher $out/vgg-fp32/checkpoint.ckpt $u19v $u19ter"
runs[u19-vgg-dcq-bin-ft]="$vgg --init $out/u19-vgg-dcq-bin/checkpoint.ckpt --epochs 3 --lr 0.002 $u19bin"
runs[u19-vgg-dcq-ter-ft]="$vgg --init $out/u19-vgg-dcq-ter/checkpoint.ckpt --epochs 3 --lr 0.002 $u19ter"

if [ "${1:-}" = list ]; then
  for name in $(printf '%s\n' "${!runs[@]}" | sort); do
    case ${runs[$name]} in dcq\ *) echo "$name: lowbit ${runs[$name]}" ;; *) echo "$name: lowbit train ${runs[$name]}" ;; esac
  done
  exit 0
fi
# A run whose folder holds DONE is skipped; one with a checkpoint but no DONE continues from it
# (RESUME=1 is the same, kept for older notes); DONE is written when `lowbit train` succeeds, so a
# queue of runs can be restarted as a whole after a stopped session.
for name in "$@"; do
  [ -n "${runs[$name]:-}" ] || { echo "unknown run '$name' (scripts/reproduce.sh BUILD list)"; exit 2; }
  mkdir -p "$out"
  if [ -e "$out/$name/DONE" ]; then echo "== $name: done (remove $out/$name/DONE to run it again)"; continue; fi
  command=train args=${runs[$name]}
  case $args in dcq\ *) command=dcq args=${args#dcq } ;; esac
  echo "== $name: lowbit $command $args --threads $threads --out $out/$name"
  start=$(date +%s)
  if [ "${RESUME:-0}" = 1 ] || [ -e "$out/$name/checkpoint.ckpt" ]; then
    # shellcheck disable=SC2086
    "$lowbit" $command $args --threads "$threads" --seed 1 --quiet --out "$out/$name" --resume | tee -a "$out/$name.log"
  else
    # shellcheck disable=SC2086
    "$lowbit" $command $args --threads "$threads" --seed 1 --quiet --out "$out/$name" | tee "$out/$name.log"
  fi
  touch "$out/$name/DONE"
  echo "wall-clock: $(( $(date +%s) - start )) s" | tee -a "$out/$name.log"
done
