#!/usr/bin/python3
"""lowbit's convolution and GEMM kernels against PyTorch on the same shapes, same thread count.

Run with Debian's PyTorch:  /usr/bin/python3 bench/compare_pytorch.py [--threads 2] [--batch 128]
Needs a lowbit build with benches (bench_conv, bench_gemm): env LOWBIT_BUILD_DIR, default build/.
Never a build or test dependency.

Shapes: `bench_conv --list_layers` (ResNet-20, VGG-11, MobileNet pointwise by default; --models).
For every shape and pass (fwd, bwd_data, bwd_weight) PyTorch runs in NCHW and in channels_last
(aten::convolution_backward with one output_mask entry set, i.e. what autograd calls for a conv
whose input or weight alone requires grad). lowbit runs through `bench_conv --serve`, a persistent
process; the contenders are interleaved round by round so machine drift hits all of them.
The time of a (shape, pass) is the median over all rounds. GFLOP/s = 2 x the direct convolution's
MACs / time for every algorithm, so a Winograd layer (algo wino4x4 / wino2x2) can show more than 100 % of the
peak: it does fewer multiplications than that count.

PyTorch's layout is chosen per shape (one memory format for the layer's fwd+bwd, the one with the
smaller sum); the per-pass best is printed as well. The last line is exactly
  total time ratio lowbit/PyTorch: X.XX
= sum over ResNet-20 layers x multiplicity of lowbit's fwd+bwd_data+bwd_weight time / the same for
PyTorch's best layout per shape.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

try:
    import torch
except ImportError:
    sys.exit("compare_pytorch.py needs PyTorch: run it with /usr/bin/python3 (Debian's python3-torch)")

PASSES = ("fwd", "bwd_data", "bwd_weight")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_dir():
    d = os.environ.get("LOWBIT_BUILD_DIR", "build")
    return d if os.path.isabs(d) else os.path.join(REPO, d)


def bench_binary(name):
    path = os.path.join(build_dir(), "bench", name)
    if not os.access(path, os.X_OK):
        sys.exit(f"{path} not found: build it with "
                 f"cmake -S . -B build -DLOWBIT_BUILD_BENCH=ON && cmake --build build --target {name}")
    return path


def list_layers(batch):
    out = subprocess.run([bench_binary("bench_conv"), "--list_layers", "--batch", str(batch)],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class LowbitServer:
    """bench_conv --serve: one request line, one answer line of per-call times in ms."""

    def __init__(self, threads, batch):
        self.proc = subprocess.Popen([bench_binary("bench_conv"), "--serve", "--threads", str(threads),
                                      "--batch", str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def times(self, layer, pass_name, reps):
        self.proc.stdin.write(f"{layer['model']}/{layer['name']} {pass_name} {reps}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer or answer.startswith("error"):
            sys.exit(f"bench_conv --serve failed on {layer['name']} {pass_name}: {answer!r}")
        return [float(v) for v in answer.split()]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class TorchLayer:
    """Tensors and the three passes of one conv shape in one memory format."""

    def __init__(self, layer, channels_last):
        L = layer
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(L["N"], L["C"], L["H"], L["W"], generator=g) * 2 - 1
        self.w = torch.rand(L["K"], L["C"] // L["groups"], L["R"], L["S"], generator=g) * 2 - 1
        self.b = torch.rand(L["K"], generator=g) * 2 - 1
        self.stride = [L["stride_h"], L["stride_w"]]
        self.pad = [L["pad_h"], L["pad_w"]]
        self.dil = [L["dil_h"], L["dil_w"]]
        self.groups = L["groups"]
        y = torch.nn.functional.conv2d(self.x, self.w, self.b, self.stride, self.pad, self.dil, self.groups)
        self.dy = torch.rand(y.shape, generator=g) * 2 - 1
        if channels_last:
            fmt = torch.channels_last
            self.x = self.x.contiguous(memory_format=fmt)
            self.w = self.w.contiguous(memory_format=fmt)
            self.dy = self.dy.contiguous(memory_format=fmt)

    def run(self, pass_name):
        if pass_name == "fwd":
            return torch.nn.functional.conv2d(self.x, self.w, self.b, self.stride, self.pad, self.dil, self.groups)
        mask = [True, False, False] if pass_name == "bwd_data" else [False, True, False]
        return torch.ops.aten.convolution_backward(self.dy, self.x, self.w, None, self.stride, self.pad, self.dil,
                                                   False, [0, 0], self.groups, mask)

    def times(self, pass_name, reps):
        with torch.no_grad():
            self.run(pass_name)  # warm-up
            out = []
            for _ in range(reps):
                t0 = time.perf_counter()
                self.run(pass_name)
                out.append((time.perf_counter() - t0) * 1e3)
        return out


def gflops(layer, ms):
    macs = layer["N"] * layer["P"] * layer["Q"] * layer["K"] * layer["R"] * layer["S"] * (layer["C"] // layer["groups"])
    return 2.0 * macs / (ms * 1e-3) * 1e-9


def out_size(n, k, stride, pad, dil):
    return (n + 2 * pad - dil * (k - 1) - 1) // stride + 1


def compare_convs(args, layers):
    server = LowbitServer(args.threads, args.batch)
    results = []  # (layer, pass, lowbit ms, {layout: ms})
    for layer in layers:
        layer["P"] = out_size(layer["H"], layer["R"], layer["stride_h"], layer["pad_h"], layer["dil_h"])
        layer["Q"] = out_size(layer["W"], layer["S"], layer["stride_w"], layer["pad_w"], layer["dil_w"])
        torch_layers = {"nchw": TorchLayer(layer, False), "cl": TorchLayer(layer, True)}
        # Calls per round: about 50 ms of work for each contender.
        probe = statistics.median(server.times(layer, "fwd", 2))
        reps = max(1, min(20, int(50.0 / max(probe, 1e-3))))
        for pass_name in PASSES:
            samples = {"lowbit": [], "nchw": [], "cl": []}
            for _ in range(args.rounds):
                samples["lowbit"] += server.times(layer, pass_name, reps)
                for fmt, tl in torch_layers.items():
                    samples[fmt] += tl.times(pass_name, reps)
            med = {k: statistics.median(v) for k, v in samples.items()}
            results.append((layer, pass_name, med["lowbit"], {"nchw": med["nchw"], "cl": med["cl"]}))
            print(f"  measured {layer['model']}/{layer['name']} {pass_name}: lowbit {med['lowbit']:.3f} ms, "
                  f"torch nchw {med['nchw']:.3f} ms, channels_last {med['cl']:.3f} ms", file=sys.stderr, flush=True)
        del torch_layers
    server.close()
    return results


def markdown_table(results, best_layout, peak):
    lines = ["| model | layer | lowbit algorithm | pass | lowbit ms | GFLOP/s | % peak | PyTorch ms | layout | lowbit/PyTorch |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|"]
    for layer, pass_name, lb, tm in results:
        fmt = best_layout[(layer["model"], layer["name"])]
        gf = gflops(layer, lb)
        pct = f"{100.0 * gf / peak:.0f}%" if peak else "-"
        lines.append(f"| {layer['model']} | {layer['name']} x{layer['multiplicity']} | {layer.get('algorithm', '?')} | "
                     f"{pass_name} | {lb:.3f} | {gf:.0f} | "
                     f"{pct} | {tm[fmt]:.3f} | {'channels_last' if fmt == 'cl' else 'NCHW'} | {lb / tm[fmt]:.2f} |")
    return "\n".join(lines) + "\n"


def print_conv_table(results, peak, markdown_path=None):
    # Best layout per shape: the one with the smaller fwd+bwd sum.
    layout_sum = {}
    for layer, _, _, tm in results:
        key = (layer["model"], layer["name"])
        s = layout_sum.setdefault(key, {"nchw": 0.0, "cl": 0.0})
        for fmt in s:
            s[fmt] += tm[fmt]
    best_layout = {k: min(v, key=v.get) for k, v in layout_sum.items()}
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(markdown_table(results, best_layout, peak))

    hdr = (f"{'model':<10} {'layer':<22} {'algo':<7} {'pass':<10} {'lowbit ms':>10} {'GFLOP/s':>8} {'%peak':>6} "
           f"{'torch ms':>9} {'layout':>6} {'ratio':>6} {'torch best-pass':>16}")
    print(hdr)
    print("-" * len(hdr))
    totals = {}  # model -> [lowbit, torch per-shape layout, torch per-pass best]
    for layer, pass_name, lb, tm in results:
        key = (layer["model"], layer["name"])
        fmt = best_layout[key]
        t = tm[fmt]
        bp = min(tm, key=tm.get)
        gf = gflops(layer, lb)
        pct = f"{100.0 * gf / peak:5.0f}%" if peak else "    -"
        print(f"{layer['model']:<10} {layer['name']:<22} {layer.get('algorithm', '?')[:7]:<7} {pass_name:<10} {lb:10.3f} {gf:8.0f} {pct:>6} "
              f"{t:9.3f} {fmt:>6} {lb / t:6.2f} {tm[bp]:9.3f} {bp:>6}")
        m = layer["multiplicity"]
        acc = totals.setdefault(layer["model"], [0.0, 0.0, 0.0])
        acc[0] += m * lb
        acc[1] += m * t
        acc[2] += m * tm[bp]
    print()
    for model, (lb, t, tb) in totals.items():
        print(f"{model:<10} fwd+bwd x multiplicity: lowbit {lb:8.2f} ms, PyTorch best layout per shape {t:8.2f} ms "
              f"(ratio {lb / t:.2f}); PyTorch best layout per pass {tb:8.2f} ms (ratio {lb / tb:.2f})")
    return totals


def lowbit_gemm_ms(n, threads):
    out = subprocess.run([bench_binary("bench_gemm"), "--threads", str(threads), "--time_gemm", str(n), "--reps", "5"],
                         check=True, capture_output=True, text=True).stdout
    return [float(v) for v in out.split()]


def compare_gemm(args):
    n = args.gemm_size
    g = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=g)
    b = torch.rand(n, n, generator=g)
    torch.mm(a, b)
    lb, tt = [], []
    for _ in range(args.rounds):
        lb += lowbit_gemm_ms(n, args.threads)
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, b)
            tt.append((time.perf_counter() - t0) * 1e3)
    flops = 2.0 * n ** 3
    lbm, ttm = statistics.median(lb), statistics.median(tt)
    print(f"sgemm {n}x{n}x{n}: lowbit {lbm:.2f} ms ({flops / lbm * 1e-6:.0f} GFLOP/s), "
          f"torch.mm {ttm:.2f} ms ({flops / ttm * 1e-6:.0f} GFLOP/s), ratio {lbm / ttm:.2f}")


def measured_peak(threads):
    try:
        out = subprocess.run([bench_binary("bench_gemm"), "--threads", str(threads), "--peak"],
                             check=True, capture_output=True, text=True).stdout
        peak, ghz, fma = (float(v) for v in out.split()[:3])
        return peak, ghz, fma
    except (subprocess.CalledProcessError, ValueError, IndexError, SystemExit):
        return 0.0, 0.0, 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LOWBIT_NUM_THREADS", "2")))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per (shape, pass)")
    ap.add_argument("--models", default="resnet20,vgg11,mobilenet")
    ap.add_argument("--layers", default="", help="regex on layer names: time only these (partial total)")
    ap.add_argument("--markdown", default="", help="also write the per-layer table as Markdown to this file")
    ap.add_argument("--wait_load", type=float, default=0.0,
                    help="first wait (up to 30 min) until the 1-minute load average is below this")
    ap.add_argument("--gemm_size", type=int, default=2048)
    ap.add_argument("--no_gemm", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.wait_load > 0:
        deadline = time.time() + 1800
        while os.getloadavg()[0] >= args.wait_load and time.time() < deadline:
            time.sleep(10)
    models = args.models.split(",")
    if "resnet20" not in models:
        models.insert(0, "resnet20")
    layers = [l for l in list_layers(args.batch) if l["model"] in models and re.search(args.layers, l["name"])]
    peak, ghz, fma = measured_peak(args.threads)
    load = os.getloadavg()[0]
    print(f"threads {args.threads}, batch {args.batch}, torch {torch.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average at start {load:.2f}")
    print(f"measured fp32 peak {peak:.0f} GFLOP/s on {args.threads} threads (clock under FMA load {ghz:.2f} GHz, "
          f"{fma:.2f} 512-bit FMAs/cycle/core)")
    results = compare_convs(args, layers)
    totals = print_conv_table(results, peak, args.markdown or None)
    if not args.no_gemm:
        compare_gemm(args)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if "resnet20" not in totals:
        sys.exit("no ResNet-20 layer matched --layers: no total ratio")
    lb, t, _ = totals["resnet20"]
    print(f"total time ratio lowbit/PyTorch: {lb / t:.2f}")


if __name__ == "__main__":
    main()
