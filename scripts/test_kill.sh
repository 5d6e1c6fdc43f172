#!/usr/bin/env bash
# Crash safety of `lowbit train`: a run SIGKILLed at random moments — during steps and during the
# checkpoint writes (a checkpoint after every batch) — and resumed after each kill ends with
# weights, optimizer and quantization state bit-identical to an uninterrupted run, and the same
# metrics.jsonl (timings aside). For a plain and a DoReFa + WaveQ run.
# Usage: scripts/test_kill.sh BUILD_DIR [KILLS]     (exit 77 = skipped: no Fashion-MNIST)
set -uo pipefail
source "$(dirname "$0")/cli_test_lib.sh"
require_fashion_mnist
cli_test_init "test_kill.sh BUILD_DIR [KILLS]" "${1:-}"
kills_wanted=${2:-6}
RANDOM=12345
common=(--model lenet5 --width 0.5 --data fashion-mnist --limit-train 16384 --limit-test 256 --batch 32 --epochs 2
        --lr 0.05 --seed 5 --threads 2 --quiet --checkpoint-every 1)
strip_timing() { sed -E 's/, "seconds": [^,]*, "images_per_sec": [^,}]*//' "$1"; }

run_case() {  # run_case NAME ARGS...
  local name=$1
  shift
  local straight="$work/$name-straight" killed="$work/$name-killed"
  "$lowbit" train "${common[@]}" "$@" --out "$straight" > "$work/$name-straight.log" || { cat "$work/$name-straight.log"; return 1; }
  local kills=0 in_write=0 attempts=0 rc
  while :; do
    attempts=$((attempts + 1))
    [ $attempts -le 60 ] || { echo "FAIL $name: did not finish after 60 attempts"; return 1; }
    if [ -f "$killed/checkpoint.ckpt" ]; then
      "$lowbit" train --out "$killed" --resume >> "$work/$name-killed.log" 2>&1 &
    else
      "$lowbit" train "${common[@]}" "$@" --out "$killed" >> "$work/$name-killed.log" 2>&1 &
    fi
    local pid=$!
    if [ $kills -lt "$kills_wanted" ]; then
      # 0.4 to 2.0 s: through start-up (reading the data set), steps and checkpoint writes
      sleep "$(printf '0.%03d' $((RANDOM % 1000)))"
      sleep 0.4
      sleep "$(printf '0.%03d' $((RANDOM % 600)))"
      if kill -9 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null
        kills=$((kills + 1))
        # A temporary file left behind: the kill landed between its creation and the rename.
        [ -f "$killed/checkpoint.ckpt.tmp" ] && in_write=$((in_write + 1))
        continue
      fi
    fi
    wait "$pid"
    rc=$?
    [ $rc -eq 0 ] || { echo "FAIL $name: a resumed run exited with $rc"; tail -20 "$work/$name-killed.log"; return 1; }
    grep -q "^run folder" "$work/$name-killed.log" && break
  done
  "$lowbit" compare "$straight/checkpoint.ckpt" "$killed/checkpoint.ckpt" > "$work/$name-compare.log" ||
    { echo "FAIL $name: final checkpoints differ"; cat "$work/$name-compare.log"; return 1; }
  diff <(strip_timing "$straight/metrics.jsonl") <(strip_timing "$killed/metrics.jsonl") > /dev/null ||
    { echo "FAIL $name: metrics.jsonl differs"; diff <(strip_timing "$straight/metrics.jsonl") <(strip_timing "$killed/metrics.jsonl"); return 1; }
  [ $kills -ge 3 ] || { echo "FAIL $name: only $kills kills landed before the run finished (make it longer)"; return 1; }
  echo "$name: $kills kills ($in_write during a checkpoint write), $attempts starts; final state bit-identical, metrics identical"
}

run_case plain || exit 1
run_case waveq --quant dorefa --wbits 4 --abits 4 --reg waveq --lambda-beta 0.1 || exit 1
