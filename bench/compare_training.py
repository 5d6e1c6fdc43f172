#!/usr/bin/python3
"""End-to-end training throughput and peak memory: lowbit vs PyTorch on the CPU.

Run ONLY with Debian's interpreter (python3-torch 1.13):

    /usr/bin/python3 bench/compare_training.py [--threads 2] [--rounds 3] [--steps 10] [--models resnet20,lenet5,...]
    /usr/bin/python3 bench/compare_training.py --quant dorefa --wbits 4 --abits 4 --models resnet20   # QAT overhead

For each model the same network is trained on random data in both frameworks at the same batch size and thread
count: forward + cross-entropy + backward + SGD(lr 0.01, momentum 0.9, weight decay 1e-4) step; a step's time is
the median over the timed steps after warm-up, as `lowbit bench` does. PyTorch runs in NCHW and in channels_last
and the faster layout is kept. A/B rounds are interleaved (lowbit, torch NCHW, torch channels_last, repeat) and
each side's best round is reported, so a burst of load from other processes hits both sides alike. Every run is
a fresh subprocess; its peak resident set size (ru_maxrss from wait4) is reported for ResNet-20.

With --quant dorefa the script measures quantization-aware training's cost instead: each round runs the FP32 step
and the DoReFa step in both frameworks (lowbit `bench --quant dorefa --wbits K --abits K`; PyTorch with DoReFa
written the way the research code writes it, see `dorefa_torch`) and reports each framework's QAT step time over
its own FP32 step time: the best-round ratio and the median of the per-round ratios.

The lowbit build is found through $LOWBIT_BUILD_DIR (default build/): $LOWBIT_BUILD_DIR/cli/lowbit.
"""

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = {
    # name: (batch, lowbit extra args)
    "resnet20": (128, ["--variant", "B"]),
    "lenet5": (256, []),
    "mobilenet_v1": (128, ["--variant", "cifar", "--size", "32"]),
}
INPUT = {"resnet20": (3, 32), "lenet5": (1, 28), "mobilenet_v1": (3, 32)}


# ---------------------------------------------------------------------------------------------------------------
# PyTorch models (mirror models/simple.cpp, models/resnet.cpp, models/mobilenet.cpp)
# ---------------------------------------------------------------------------------------------------------------
def build_torch_model(name):
    import torch.nn as nn

    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Linear(500, 10))

    if name == "resnet20":
        class BasicBlock(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(cout)
                self.relu1 = nn.ReLU(inplace=True)
                self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(cout)
                self.downsample = None
                if stride != 1 or cin != cout:  # option B: 1x1 conv + BN projection
                    self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                                                    nn.BatchNorm2d(cout))
                self.relu2 = nn.ReLU(inplace=True)

            def forward(self, x):
                y = self.relu1(self.bn1(self.conv1(x)))
                y = self.bn2(self.conv2(y))
                return self.relu2(y + (self.downsample(x) if self.downsample is not None else x))

        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(3):
                layers.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers)

    if name == "mobilenet_v1":  # Distiller MobileNet, CIFAR variant: stride-1 stem
        def conv_bn(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        def conv_dw(cin, cout, stride):
            return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
               (512, 1), (1024, 2), (1024, 1)]
        layers = conv_bn(3, 32, 1)
        cin = 32
        for cout, stride in cfg:
            layers += conv_dw(cin, cout, stride)
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 10)]
        return nn.Sequential(*layers)

    raise ValueError("unknown model " + name)


def dorefa_torch(model, wbits, abits):
    """DoReFa weights and activations (spec §8.2) as the PyTorch research code writes them (Distiller's
    DorefaQuantizer and ClippedLinearQuantization): straight-through rounding x + (round(x) - x).detach(), the
    weight normalisation tanh(w) / (2 max|tanh w|) + 1/2 in the graph. As lowbit's `--quant dorefa` attaches them:
    every Conv2d/Linear but the first and the last gets k-bit weights, every ReLU becomes clip(x, 0, 1) at k bits."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    nw, na = float(2 ** wbits - 1), float(2 ** abits - 1)

    def ste_round(x):
        return x + (torch.round(x) - x).detach()

    def quantize_weight(w):
        t = torch.tanh(w)
        t = t / (2 * t.abs().max()) + 0.5
        return 2 * ste_round(t * nw) / nw - 1

    class DorefaConv2d(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, quantize_weight(self.weight), self.bias, self.stride, self.padding, self.dilation,
                            self.groups)

    class DorefaLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, quantize_weight(self.weight), self.bias)

    class DorefaActivation(nn.Module):
        def forward(self, x):
            return ste_round(torch.clamp(x, 0, 1) * na) / na

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers[1:-1]:
        m.__class__ = DorefaConv2d if isinstance(m, nn.Conv2d) else DorefaLinear
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, DorefaActivation())
    return model


def torch_worker(name, layout, threads, steps, warmup, quant=None):
    """Runs in a fresh subprocess: times training steps, prints one JSON line. quant: (wbits, abits) for DoReFa."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    batch = MODELS[name][0]
    c, s = INPUT[name]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = build_torch_model(name)
    if quant:
        model = dorefa_torch(model, *quant)
    model = model.to(memory_format=fmt)
    model.train()
    x = torch.randn(batch, c, s, s).contiguous(memory_format=fmt)
    y = torch.arange(batch) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"train_images_per_sec": batch / times[len(times) // 2]}))


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------
def run_child(cmd, env):
    """Runs cmd in a fresh process; returns (JSON of its last stdout line, its peak RSS in MiB)."""
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r_fd)
        os.dup2(w_fd, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            os.execve(cmd[0], cmd, env)
        finally:
            os._exit(127)
    os.close(w_fd)
    chunks = []
    with os.fdopen(r_fd, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            chunks.append(chunk)
    _, status, usage = os.wait4(pid, 0)
    out = b"".join(chunks).decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("command failed (%s): %s\n%s" % (status, " ".join(cmd), out))
    last = [line for line in out.splitlines() if line.strip()][-1]
    return json.loads(last), usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def qat_overhead(a, lowbit, env, layouts):
    """Per model: each framework's DoReFa training step time over its own FP32 step time, interleaved rounds."""
    t = str(a.threads)
    qargs = ["--quant", a.quant, "--wbits", str(a.wbits), "--abits", str(a.abits)]
    results = []
    for name in [m for m in a.models.split(",") if m]:
        batch, extra = MODELS[name]
        lb_cmd = [lowbit, "bench", "--model", name, "--batch", str(batch), "--threads", t, "--steps", str(a.steps),
                  "--warmup", str(a.warmup)] + extra
        ips = {(side, q): [] for side in ("lowbit", "torch") for q in ("fp32", "qat")}
        for _ in range(a.rounds):
            for q in ("fp32", "qat"):
                j, _ = run_child(lb_cmd + (qargs if q == "qat" else []), env)
                ips[("lowbit", q)].append(j["train_images_per_sec"])
                best = 0.0  # PyTorch: the faster layout of this round
                for lay in layouts:
                    cmd = [sys.executable, os.path.abspath(__file__), "--threads", t, "--steps", str(a.steps),
                           "--warmup", str(a.warmup), "--wbits", str(a.wbits), "--abits", str(a.abits),
                           "--torch-worker", name, lay] + (["--quant", a.quant] if q == "qat" else [])
                    j, _ = run_child(cmd, env)
                    best = max(best, j["train_images_per_sec"])
                ips[("torch", q)].append(best)
        r = {"model": name, "batch": batch, "threads": a.threads, "quant": "%s w%d/a%d" % (a.quant, a.wbits, a.abits),
             "rounds_images_per_sec": {"%s_%s" % k: v for k, v in ips.items()}}
        for side in ("lowbit", "torch"):
            fp, qt = ips[(side, "fp32")], ips[(side, "qat")]
            per_round = sorted(f / q for f, q in zip(fp, qt))  # step-time ratio = fp32 img/s / qat img/s
            r[side] = {"fp32_images_per_sec": max(fp), "qat_images_per_sec": max(qt),
                       "qat_over_fp32_best": max(fp) / max(qt), "qat_over_fp32_median": per_round[len(per_round) // 2],
                       "qat_over_fp32_rounds": per_round}
            print("%-13s %-6s FP32 %7.1f img/s, DoReFa w%d/a%d %7.1f img/s: QAT step %.2fx its FP32 step "
                  "(best rounds; per-round median %.2fx, range %.2f-%.2f)" %
                  (name, side, max(fp), a.wbits, a.abits, max(qt), r[side]["qat_over_fp32_best"],
                   r[side]["qat_over_fp32_median"], per_round[0], per_round[-1]), flush=True)
        results.append(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,lenet5,mobilenet_v1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved A/B rounds per model (best kept)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layouts", default="nchw,channels_last", help="PyTorch layouts to try")
    ap.add_argument("--json", default="", help="also write the results to this file")
    ap.add_argument("--quant", default="", choices=["", "dorefa"], help="measure QAT overhead (see above)")
    ap.add_argument("--wbits", type=int, default=4)
    ap.add_argument("--abits", type=int, default=4)
    ap.add_argument("--torch-worker", nargs=2, metavar=("MODEL", "LAYOUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.torch_worker:
        torch_worker(a.torch_worker[0], a.torch_worker[1], a.threads, a.steps, a.warmup,
                     (a.wbits, a.abits) if a.quant else None)
        return
    if a.quant and not (2 <= a.wbits <= 8 and 1 <= a.abits <= 8):
        sys.exit("compare_training.py: --quant dorefa needs --wbits in [2, 8] and --abits in [1, 8]")

    build = os.environ.get("LOWBIT_BUILD_DIR", "build")
    lowbit = os.path.abspath(os.path.join(build, "cli", "lowbit"))
    if not os.access(lowbit, os.X_OK):
        sys.exit("compare_training.py: %s not found; build the lowbit_cli target or set LOWBIT_BUILD_DIR" % lowbit)
    env = dict(os.environ)
    t = str(a.threads)
    env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, LOWBIT_NUM_THREADS=t)
    layouts = [x for x in a.layouts.split(",") if x]
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    if a.quant:
        qat_overhead(a, lowbit, env, layouts)
        print("load average after: %.2f %.2f %.2f" % os.getloadavg())
        return
    results = []
    for name in [m for m in a.models.split(",") if m]:
        batch, extra = MODELS[name]
        lb_cmd = [lowbit, "bench", "--model", name, "--batch", str(batch), "--threads", t, "--steps", str(a.steps),
                  "--warmup", str(a.warmup)] + extra
        lb_ips, lb_rss = [], []
        pt = {lay: ([], []) for lay in layouts}
        for _ in range(a.rounds):
            j, rss = run_child(lb_cmd, env)
            lb_ips.append(j["train_images_per_sec"])
            lb_rss.append(rss)
            for lay in layouts:
                cmd = [sys.executable, os.path.abspath(__file__), "--threads", t, "--steps", str(a.steps),
                       "--warmup", str(a.warmup), "--torch-worker", name, lay]
                j, rss = run_child(cmd, env)
                pt[lay][0].append(j["train_images_per_sec"])
                pt[lay][1].append(rss)
        best_lay = max(layouts, key=lambda lay: max(pt[lay][0]))
        r = {
            "model": name, "batch": batch, "threads": a.threads,
            "lowbit_images_per_sec": max(lb_ips), "torch_images_per_sec": max(pt[best_lay][0]),
            "torch_layout": best_lay, "ratio": max(lb_ips) / max(pt[best_lay][0]),
            "lowbit_rounds": lb_ips, "torch_rounds": {lay: pt[lay][0] for lay in layouts},
            "lowbit_max_rss_mib": max(lb_rss), "torch_max_rss_mib": {lay: max(pt[lay][1]) for lay in layouts},
        }
        results.append(r)
        print("%-13s batch %3d  lowbit %8.1f img/s   PyTorch %8.1f img/s (%s)   ratio %.2fx" %
              (name, batch, r["lowbit_images_per_sec"], r["torch_images_per_sec"], best_lay, r["ratio"]), flush=True)
        if name == "resnet20":
            print("%-13s peak RSS: lowbit %.0f MiB, PyTorch %s" %
                  ("", r["lowbit_max_rss_mib"],
                   ", ".join("%.0f MiB (%s)" % (v, k) for k, v in r["torch_max_rss_mib"].items())), flush=True)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
