#!/usr/bin/python3
"""FP32 inference throughput: lowbit vs PyTorch's JIT-frozen model, side by side, at small and large batches.

Run ONLY with Debian's interpreter (python3-torch 1.13; scripts/install-deps.sh --with-torch):

    LOWBIT_BUILD_DIR=build /usr/bin/python3 bench/compare_inference.py [--threads 2] [--rounds 7] \\
        [--batches 1,8,128] [--models resnet20,lenet5] [--json out.json]

Per model and batch size the same network (bench/compare_training.py's PyTorch mirrors of the zoo) runs the
forward pass on random data in eval mode, at the same thread count:
  lowbit   `lowbit bench --mode infer`: model.eval() under NoGradGuard, channels-last input;
  PyTorch  torch.jit.freeze(torch.jit.script(model.eval())) called under torch.no_grad(), in NCHW and in
           channels_last, each with libgomp's default wait policy and with OMP_WAIT_POLICY=PASSIVE (the fastest
           of these four runs of each round is kept: on a loaded machine the default, spinning policy can make
           PyTorch's 2-thread calls 10-100x slower, which would flatter lowbit).
Each run is a fresh subprocess that times `--steps` calls after warm-up (batch 1: 10x as many; PyTorch stops
after ~4 s) and reports the median call. Rounds are interleaved (lowbit, the PyTorch runs, next batch size, repeat), so
a burst of load from other processes hits both sides alike. Reported per (model, batch): each side's median
images/s over the rounds and the median of the per-round ratios lowbit / PyTorch (> 1: lowbit is faster), with
its range. The last line is exactly
  min ratio lowbit/PyTorch over resnet20 batches: X.XX
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

INPUT = {"resnet20": (3, 32), "lenet5": (1, 28), "mobilenet_v1": (3, 32)}
LOWBIT_ARGS = {"resnet20": ["--variant", "B"], "lenet5": [], "mobilenet_v1": ["--variant", "cifar", "--size", "32"]}


def steps_for(batch, steps):
    return steps * 10 if batch == 1 else steps


MIN_WARMUP_SECONDS = 0.3  # as `lowbit bench` (cli/main.cpp, median_seconds): every side warms up alike


def warm_up(call, calls):
    """At least `calls` untimed calls, and more until MIN_WARMUP_SECONDS have passed."""
    start = time.perf_counter()
    i = 0
    while i < calls or time.perf_counter() - start < MIN_WARMUP_SECONDS:
        call()
        i += 1


def torch_worker(name, layout, threads, batch, steps, warmup):
    """Runs in a fresh subprocess: times the JIT-frozen model's forward, prints one JSON line."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from compare_training import build_torch_model

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = build_torch_model(name).to(memory_format=fmt).eval()
    c, s = INPUT[name]
    x = torch.randn(batch, c, s, s).contiguous(memory_format=fmt)
    times = []
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.script(model.eval()))
        warm_up(lambda: frozen(x), max(warmup, 5))  # the profiling executor optimizes after the first calls
        start = time.perf_counter()
        for i in range(steps):  # at most ~4 s once 5 calls are timed (a starved run must not take minutes)
            t0 = time.perf_counter()
            frozen(x)
            times.append(time.perf_counter() - t0)
            if i >= 4 and t0 - start > 4.0:
                break
    times.sort()
    print(json.dumps({"infer_images_per_sec": batch / times[len(times) // 2]}))


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.strip()][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20")
    ap.add_argument("--batches", default="1,8,128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (medians reported)")
    ap.add_argument("--steps", type=int, default=40, help="timed calls per run (batch 1: 10x)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--layouts", default="nchw,channels_last", help="PyTorch layouts to try")
    ap.add_argument("--wait-policies", default="default,passive", help="PyTorch OMP_WAIT_POLICY values to try")
    ap.add_argument("--json", default="", help="also write the results to this file")
    ap.add_argument("--torch-worker", nargs=3, metavar=("MODEL", "LAYOUT", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.torch_worker:
        b = int(a.torch_worker[2])
        torch_worker(a.torch_worker[0], a.torch_worker[1], a.threads, b, steps_for(b, a.steps), a.warmup)
        return
    try:
        import torch  # noqa: F401  (checked here so the error names the interpreter)
    except ImportError:
        sys.exit("compare_inference.py needs PyTorch: run it with /usr/bin/python3 (Debian's python3-torch)")

    build = os.environ.get("LOWBIT_BUILD_DIR", "build")
    lowbit = os.path.abspath(os.path.join(build, "cli", "lowbit"))
    if not os.access(lowbit, os.X_OK):
        sys.exit("compare_inference.py: %s not found; build the lowbit_cli target or set LOWBIT_BUILD_DIR" % lowbit)
    env = dict(os.environ)
    t = str(a.threads)
    env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, LOWBIT_NUM_THREADS=t)
    layouts = [x for x in a.layouts.split(",") if x]
    policies = [x for x in a.wait_policies.split(",") if x]
    models = [m for m in a.models.split(",") if m]
    batches = [int(b) for b in a.batches.split(",") if b]
    print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)

    ips = {(m, b, side): [] for m in models for b in batches for side in ("lowbit", "torch")}
    torch_layout = {(m, b): [] for m in models for b in batches}
    for _ in range(a.rounds):
        for name in models:
            for b in batches:
                cmd = [lowbit, "bench", "--mode", "infer", "--model", name, "--batch", str(b), "--threads", t,
                       "--steps", str(steps_for(b, a.steps)), "--warmup", str(a.warmup)] + LOWBIT_ARGS[name]
                ips[(name, b, "lowbit")].append(run_json(cmd, env)["infer_images_per_sec"])
                best, best_lay = 0.0, ""
                for lay in layouts:
                    for pol in policies:
                        cmd = [sys.executable, os.path.abspath(__file__), "--threads", t, "--steps", str(a.steps),
                               "--warmup", str(a.warmup), "--torch-worker", name, lay, str(b)]
                        tenv = dict(env)
                        tenv.pop("OMP_WAIT_POLICY", None)
                        if pol != "default":
                            tenv["OMP_WAIT_POLICY"] = pol.upper()
                        v = run_json(cmd, tenv)["infer_images_per_sec"]
                        if v > best:
                            best, best_lay = v, lay + "/" + pol
                ips[(name, b, "torch")].append(best)
                torch_layout[(name, b)].append(best_lay)

    results = []
    for name in models:
        for b in batches:
            lb, pt = ips[(name, b, "lowbit")], ips[(name, b, "torch")]
            ratios = sorted(x / y for x, y in zip(lb, pt))
            r = {"model": name, "batch": b, "threads": a.threads, "lowbit_images_per_sec": statistics.median(lb),
                 "torch_images_per_sec": statistics.median(pt), "ratio_median": statistics.median(ratios),
                 "ratio_min": ratios[0], "ratio_max": ratios[-1], "lowbit_rounds": lb, "torch_rounds": pt,
                 "torch_layouts": torch_layout[(name, b)]}
            results.append(r)
            print("%-9s batch %3d  lowbit %8.1f img/s   PyTorch JIT-frozen %8.1f img/s   ratio %.2fx "
                  "(per-round median of %d, range %.2f-%.2f)" %
                  (name, b, r["lowbit_images_per_sec"], r["torch_images_per_sec"], r["ratio_median"], len(ratios),
                   r["ratio_min"], r["ratio_max"]), flush=True)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    r20 = [r["ratio_median"] for r in results if r["model"] == "resnet20"]
    if r20:
        print("min ratio lowbit/PyTorch over resnet20 batches: %.2f" % min(r20))


if __name__ == "__main__":
    main()
