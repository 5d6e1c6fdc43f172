#!/usr/bin/python3
"""Integer inference throughput: lowbit's integer-only engine vs lowbit FP32, PyTorch FP32 and PyTorch int8.

Run ONLY with Debian's interpreter (python3-torch 1.13; scripts/install-deps.sh --with-torch):

    LOWBIT_BUILD_DIR=build /usr/bin/python3 bench/compare_integer.py [--threads 2] [--rounds 7] \\
        [--batches 1,128] [--models resnet20,lenet5] [--json out.json] [--model-file F.lbq]

Per model and batch size, on random data at the same thread count (bench/compare_inference.py's method: every
run a fresh subprocess timing `--steps` calls after warm-up (batch 1: 10x as many) and reporting the median call;
rounds interleaved, so a burst of load from other processes hits every side alike):
  lowbit FP32   `lowbit bench --mode infer` (as compare_inference.py);
  lowbit int    `lowbit bench --mode none --integer --quant dorefa --wbits 4 --abits 4`: the model with DoReFa
                4-bit weights and activations (random weights, first and last layer float) exported in memory
                and run by the integer-only engine (deploy/engine.h) on uint8 NHWC images; with --model-file
                (one model) the trained integer model file instead (`--integer --model-file F`), e.g. WaveQ's
                mixed-bit ResNet-20;
  PyTorch FP32  compare_inference.py's worker: torch.jit.freeze(torch.jit.script(model)) of
                compare_training.py's mirror, NCHW and channels_last, libgomp's default and PASSIVE wait
                policies, the fastest of the four kept;
  PyTorch int8  FX graph mode static post-training quantization with the oneDNN backend (prepare_fx /
                convert_fx, get_default_qconfig_mapping("onednn"), calibrated on random batches), JIT-frozen
                when it scripts (else the converted module), channels_last, the faster wait policy kept.
Reported per (model, batch): each side's median images/s over the rounds, the medians of the per-round ratios
lowbit-int / lowbit-FP32, lowbit-int / PyTorch-FP32 and lowbit-int / PyTorch-int8 against their targets (3x, 3x,
1.2x), and lowbit-int's GOP/s (2 x MACs per image x images/s) as a share of the VNNI int8 peak that `lowbit bench`
measures on the same threads (core/kernels/peak.h, as `bench_int8 --peak`). A side that fails (an export the
engine does not support yet, a model FX cannot quantize) is reported with its error and left out. The last line is
exactly
  min ratios over MODELS batches: int/lowbit-fp32 X.XX int/torch-fp32 X.XX int/torch-int8 X.XX
(MODELS: resnet20 when measured, else all; "nan" for a side that failed). The exit status is 1 when a side failed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from compare_inference import INPUT, LOWBIT_ARGS, steps_for, warm_up
from compare_inference import torch_worker as fp32_worker

TARGETS = {  # lowbit-int / side: (label, target)
    "lowbit_fp32": ("lowbit-FP32", 3.0), "torch_fp32": ("PyTorch-FP32", 3.0), "torch_int8": ("PyTorch-int8", 1.2)}
SIDES = ("lowbit_fp32", "lowbit_int", "torch_fp32", "torch_int8")


def int8_worker(name, threads, batch, steps, warmup):
    """Runs in a fresh subprocess: FX static PTQ (oneDNN) of the mirror, times its forward, prints one JSON line."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from compare_training import build_torch_model

    torch.backends.quantized.engine = "onednn"
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    c, s = INPUT[name]
    cl = torch.channels_last
    model = build_torch_model(name).to(memory_format=cl).eval()
    x = torch.randn(batch, c, s, s).contiguous(memory_format=cl)
    with torch.no_grad():
        prepared = prepare_fx(model, get_default_qconfig_mapping("onednn"), (x,))
        for _ in range(4):  # calibration (HistogramObserver ranges) on random batches, like the timed input
            prepared(torch.randn(32, c, s, s).contiguous(memory_format=cl))
        q = convert_fx(prepared)
        try:
            q, how = torch.jit.freeze(torch.jit.script(q)), "jit-frozen"
        except Exception as e:  # noqa: BLE001  (the converted module still runs)
            how = "eager (script failed: %s)" % str(e).splitlines()[0]
        warm_up(lambda: q(x), max(warmup, 5))
        times, start = [], time.perf_counter()
        for i in range(steps):  # at most ~4 s once 5 calls are timed
            t0 = time.perf_counter()
            q(x)
            times.append(time.perf_counter() - t0)
            if i >= 4 and t0 - start > 4.0:
                break
    times.sort()
    print(json.dumps({"infer_images_per_sec": batch / times[len(times) // 2], "how": how}))


def run_json(cmd, env):
    """The JSON of cmd's last stdout line; raises RuntimeError with its stderr when it fails."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError((p.stderr.strip() or p.stdout.strip()).splitlines()[-1])
    return json.loads([line for line in p.stdout.splitlines() if line.strip()][-1])


def fmt(v, spec):
    """v formatted, or "n/a" (right-aligned to the spec's width) when it was not measured."""
    return spec % v if v is not None else "n/a".rjust(len(spec % 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20")
    ap.add_argument("--batches", default="1,128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (medians reported)")
    ap.add_argument("--steps", type=int, default=40, help="timed calls per run (batch 1: 10x)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--wbits", type=int, default=4, help="DoReFa weight bits of the exported random model")
    ap.add_argument("--abits", type=int, default=4, help="DoReFa activation bits of the exported random model")
    ap.add_argument("--model-file", default="", help="time this integer model file (.lbq) as lowbit int (one model)")
    ap.add_argument("--layouts", default="nchw,channels_last", help="PyTorch FP32 layouts to try")
    ap.add_argument("--wait-policies", default="default,passive", help="PyTorch OMP_WAIT_POLICY values to try")
    ap.add_argument("--json", default="", help="also write the results to this file")
    ap.add_argument("--int8-worker", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--fp32-worker", nargs=3, metavar=("MODEL", "LAYOUT", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.int8_worker:
        b = int(a.int8_worker[1])
        int8_worker(a.int8_worker[0], a.threads, b, steps_for(b, a.steps), a.warmup)
        return
    if a.fp32_worker:
        b = int(a.fp32_worker[2])
        fp32_worker(a.fp32_worker[0], a.fp32_worker[1], a.threads, b, steps_for(b, a.steps), a.warmup)
        return
    try:
        import torch  # noqa: F401  (checked here so the error names the interpreter)
    except ImportError:
        sys.exit("compare_integer.py needs PyTorch: run it with /usr/bin/python3 (Debian's python3-torch)")

    build = os.environ.get("LOWBIT_BUILD_DIR", "build")
    lowbit = os.path.abspath(os.path.join(build, "cli", "lowbit"))
    if not os.access(lowbit, os.X_OK):
        sys.exit("compare_integer.py: %s not found; build the lowbit_cli target or set LOWBIT_BUILD_DIR" % lowbit)
    models = [m for m in a.models.split(",") if m]
    batches = [int(b) for b in a.batches.split(",") if b]
    unknown = [m for m in models if m not in INPUT]
    if unknown:
        sys.exit("compare_integer.py: no PyTorch mirror of %s (known: %s)" % (",".join(unknown), ",".join(INPUT)))
    if a.model_file and len(models) != 1:
        sys.exit("compare_integer.py: --model-file takes one model (--models NAME, the file's architecture)")
    env = dict(os.environ)
    t = str(a.threads)
    env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, LOWBIT_NUM_THREADS=t)
    layouts = [x for x in a.layouts.split(",") if x]
    policies = [x for x in a.wait_policies.split(",") if x]
    me = os.path.abspath(__file__)
    print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)

    def torch_env(pol):
        e = dict(env)
        e.pop("OMP_WAIT_POLICY", None)
        if pol != "default":
            e["OMP_WAIT_POLICY"] = pol.upper()
        return e

    def lowbit_cmd(name, b, *extra):
        return [lowbit, "bench", "--model", name, "--batch", str(b), "--threads", t, "--steps",
                str(steps_for(b, a.steps)), "--warmup", str(a.warmup)] + LOWBIT_ARGS[name] + list(extra)

    int_args = ["--model-file", a.model_file] if a.model_file else \
        ["--quant", "dorefa", "--wbits", str(a.wbits), "--abits", str(a.abits)]
    keys = [(m, b) for m in models for b in batches]
    ips = {(k, side): [] for k in keys for side in SIDES}
    gops, peak, how = {k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in keys}
    errors = {}  # (model, side) -> the first error; the side is not run again for that model

    def measure(name, side, fn):
        if (name, side) in errors:
            return None
        try:
            return fn()
        except RuntimeError as e:
            errors[(name, side)] = str(e)
            print("%s %s failed: %s" % (name, side, e), flush=True)
            return None

    def best_of(runs):
        best = None
        for cmd, e, label in runs:
            r = run_json(cmd, e)
            if best is None or r["infer_images_per_sec"] > best[0]:
                best = (r["infer_images_per_sec"], label + ("" if "how" not in r else " " + r["how"]))
        return best

    for _ in range(a.rounds):  # a failed run leaves None in its round
        for name, b in keys:
            k = (name, b)
            r = measure(name, "lowbit_fp32", lambda: run_json(lowbit_cmd(name, b, "--mode", "infer"), env))
            ips[(k, "lowbit_fp32")].append(r and r["infer_images_per_sec"])
            r = measure(name, "lowbit_int", lambda: run_json(lowbit_cmd(name, b, "--mode", "none", "--integer",
                                                                        *int_args), env))
            ips[(k, "lowbit_int")].append(r and r["integer_infer_images_per_sec"])
            if r:
                gops[k].append(r["integer_gops"])
                peak[k].append(r["int8_peak_gops"])
            common = [sys.executable, me, "--threads", t, "--steps", str(a.steps), "--warmup", str(a.warmup)]
            r = measure(name, "torch_fp32", lambda: best_of(
                [(common + ["--fp32-worker", name, lay, str(b)], torch_env(pol), lay + "/" + pol)
                 for lay in layouts for pol in policies]))
            ips[(k, "torch_fp32")].append(r and r[0])
            r = measure(name, "torch_int8", lambda: best_of(
                [(common + ["--int8-worker", name, str(b)], torch_env(pol), pol) for pol in policies]))
            ips[(k, "torch_int8")].append(r and r[0])
            if r:
                how[k].append(r[1])

    def med(v):  # None: no round measured
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None

    results = []
    for name, b in keys:
        k = (name, b)
        lint = ips[(k, "lowbit_int")]
        r = {"model": name, "batch": b, "threads": a.threads, "integer": " ".join(int_args)}
        for side in SIDES:
            r[side + "_images_per_sec"] = med(ips[(k, side)])
            r[side + "_rounds"] = ips[(k, side)]
        for side, (_, target) in TARGETS.items():
            ratios = sorted(x / y for x, y in zip(lint, ips[(k, side)]) if x and y)
            r["int_over_" + side] = med(ratios)
            r["int_over_%s_range" % side] = [ratios[0], ratios[-1]] if ratios else None
            r["int_over_%s_target" % side] = target
        r["integer_gops"], r["int8_peak_gops"] = med(gops[k]), med(peak[k])
        r["pct_int8_peak"] = 100 * r["integer_gops"] / r["int8_peak_gops"] if r["int8_peak_gops"] else None
        r["torch_int8_how"] = how[k]
        results.append(r)
        print("%-9s batch %3d  lowbit FP32 %s  lowbit int %s  PyTorch FP32 %s  PyTorch int8 %s img/s" %
              (name, b, *(fmt(r[side + "_images_per_sec"], "%8.1f") for side in SIDES)))
        print("          %s   (medians of per-round ratios, %d rounds)" % ("  ".join(
            "int/%s %s (target >= %gx)" % (label, fmt(r["int_over_" + side], "%.2fx"), target)
            for side, (label, target) in TARGETS.items()), a.rounds))
        print("          lowbit int %s GOP/s = %s of the measured VNNI int8 peak %s GOP/s; PyTorch int8: %s" %
              (fmt(r["integer_gops"], "%.1f"), fmt(r["pct_int8_peak"], "%.1f%%"), fmt(r["int8_peak_gops"], "%.1f"),
               how[k][0] if how[k] else "failed"), flush=True)
    for (name, side), e in errors.items():
        print("failed: %s %s: %s" % (name, side, e))
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    over = ["resnet20"] if "resnet20" in models else models
    mins = []
    for side in TARGETS:
        v = [r["int_over_" + side] for r in results if r["model"] in over]
        mins.append(fmt(min(v), "%.2f") if v and None not in v else "nan")
    print("min ratios over %s batches: int/lowbit-fp32 %s int/torch-fp32 %s int/torch-int8 %s" %
          (",".join(over), *mins))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
