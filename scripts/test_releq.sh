#!/usr/bin/env bash
# `lowbit releq` as a user runs it (train/releq.h, spec §5): a small float LeNet-5 trained with
# `lowbit train` on Fashion-MNIST, then a short ReLeQ search over its weight bitwidths. Checks: the
# per-episode lines and the best bits printed; one episodes.jsonl line per episode and one cache
# entry per fine-tuned vector; a search stopped mid-batch and resumed gives the same episodes and
# result; `lowbit eval` of the final fine-tune's checkpoint gives the test accuracy the run printed;
# bad input is a clear error and a non-zero exit.
# WRPN on w / max|w|: this LeNet-5 has no BatchNorm, and DoReFa's [-1, 1] weights would blow it up.
# Usage: scripts/test_releq.sh BUILD_DIR       (exit 77 = skipped: no Fashion-MNIST)
set -euo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_releq.sh BUILD_DIR" "${1:-}"

data=(--model lenet5 --width 0.5 --data fashion-mnist --limit-train 1024 --limit-test 300 --threads 2 --quiet)
"$lowbit" train "${data[@]}" --batch 64 --epochs 2 --lr 0.05 --seed 7 --out "$work/float" > "$work/float.log"
init="$work/float/checkpoint.ckpt"

releq=(--init "$init" "${data[@]}" --episodes 8 --episodes-per-update 4 --oracle-batches 3 --val-size 256
       --final-epochs 1 --policy mlp --seed 3 --quant wrpn --weight-scale max)
"$lowbit" releq "${releq[@]}" --out "$work/a" | tee "$work/a.log"
grep -q "^oracle: fine-tune on 768 training images, validate on the last 256 (held out); test set untouched$" \
  "$work/a.log" || fail "no split line"
grep -q "^4 layers to assign (wrpn weights, activations float):$" "$work/a.log" || fail "layer count"
[ "$(grep -c '^episode [0-9]*/8: bits [2-8],[2-8],[2-8],[2-8]  avg ' "$work/a.log")" -eq 8 ] || fail "episode lines"
grep -q "^best bits (reward " "$work/a.log" || fail "no best bits"
grep -q "^average bits [0-9.]*; validation accuracy [0-9.]*% (float [0-9.]*%)$" "$work/a.log" || fail "no summary"
[ "$(wc -l < "$work/a/episodes.jsonl")" -eq 8 ] || fail "episodes.jsonl should have 8 lines"
grep -q "Best bits per layer" "$work/a/report.html" || fail "report.html has no best-bits plot"
paid=$(grep -c '"cache_hit": false' "$work/a/episodes.jsonl")
[ "$(wc -l < "$work/a/cache.jsonl")" -eq $((paid + 1)) ] || fail "cache.jsonl: header + one entry per fine-tune"
test_acc=$(sed -n 's/^final: validation accuracy [0-9.]*%; test accuracy \([0-9.]*\)% vs the float model.s [0-9.]*%.*/\1/p' \
  "$work/a.log")
[ -n "$test_acc" ] || fail "no final test accuracy"
"$lowbit" eval --checkpoint "$work/a/final/checkpoint.ckpt" > "$work/eval.log"
grep -q "accuracy $test_acc%" "$work/eval.log" || { cat "$work/eval.log"; fail "eval differs from the run's $test_acc%"; }

# Stopped after 3 episodes (mid-batch), resumed: the same search and result.
"$lowbit" releq "${releq[@]}" --out "$work/r" --stop-after-episodes 3 > "$work/r1.log"
grep -q "^stopped after episode 3 of 8; continue with lowbit releq --out $work/r --resume$" "$work/r1.log" \
  || fail "no stop line"
"$lowbit" releq --out "$work/r" --resume > "$work/r2.log"
cmp "$work/a/episodes.jsonl" "$work/r/episodes.jsonl" || fail "the resumed search's episodes differ"
cmp "$work/a/result.json" "$work/r/result.json" || fail "the resumed search's result differs"
grep -q "^episode 4/8: " "$work/r2.log" || fail "the resumed search did not redo episode 4"
"$lowbit" compare "$work/a/agent.ckpt" "$work/r/agent.ckpt" > /dev/null || fail "agent checkpoints differ"

# Bad input: a clear error naming what is wrong, a non-zero exit.
expect_error() {
  local want=$1; shift
  if "$lowbit" releq "$@" > "$work/err.log" 2>&1; then fail "lowbit releq $* succeeded"; fi
  grep -qF -- "$want" "$work/err.log" || { cat "$work/err.log"; fail "expected '$want'"; }
}
expect_error "--init CHECKPOINT (the trained float network) is required" "${data[@]}" --out "$work/e"
expect_error "ReLeQ quantizes weights with dorefa or wrpn" --init "$init" "${data[@]}" --quant lsq --out "$work/e"
expect_error "--first-last 'none' is not quantize or float" --init "$init" "${data[@]}" --first-last none --out "$work/e"
expect_error "--reward 'C' is not A or B" --init "$init" "${data[@]}" --reward C --out "$work/e"
expect_error "--val-size" --init "$init" "${data[@]}" --val-size 1024 --out "$work/e"
expect_error "--resume: there is no" --out "$work/nothing" --resume
echo "cli_releq: ok"
