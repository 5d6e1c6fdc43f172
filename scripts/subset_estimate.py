#!/usr/bin/env python3
"""Estimate a net's accuracy on the whole exact CIFAR-10 test set from its bit-exact first records.

The shared data has the first n test records bit-exact and all N records lossy (JPEG-recovered).
Given `lowbit eval --predictions` files for (1) the n exact records, (2) the same n records from
the lossy file and (3) all N lossy records, this prints

  * the exact-subset accuracy with its 95 % interval (finite-population corrected), and
  * the regression estimate with the lossy correctness as auxiliary variable x and the exact
    correctness as y:  y_hat = mean_y(subset) + b * (mean_x(all) - mean_x(subset)),
    b = cov(x, y) / var(x) on the subset, with its 95 % interval (Cochran, Sampling Techniques,
    ch. 7: residual variance / n, times the finite-population factor 1 - n/N).

Usage: subset_estimate.py EXACT_SUBSET.csv LOSSY_SUBSET.csv LOSSY_ALL.csv
"""
import csv
import math
import sys


def correct(path):
    with open(path, newline="") as f:
        return [(int(r["label"]), int(r["label"]) == int(r["predicted"])) for r in csv.DictReader(f)]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    exact, lossy_sub, lossy_all = (correct(p) for p in sys.argv[1:])
    n, N = len(exact), len(lossy_all)
    if len(lossy_sub) != n or n < 3 or n > N:
        sys.exit(f"{sys.argv[2]}: {len(lossy_sub)} rows, expected {n} (the exact subset's count, <= {N})")
    for i, ((le, _), (ll, _), (la, _)) in enumerate(zip(exact, lossy_sub, lossy_all)):
        if not le == ll == la:
            sys.exit(f"record {i}: labels differ between the files ({le}, {ll}, {la}): not the same images")
    y = [float(c) for _, c in exact]
    x = [float(c) for _, c in lossy_sub]
    fpc = 1 - n / N
    my, mx = sum(y) / n, sum(x) / n
    mx_all = sum(c for _, c in lossy_all) / N
    se_plain = math.sqrt(my * (1 - my) / n * fpc)
    sxx = sum((a - mx) ** 2 for a in x)
    b = sum((a - mx) * (c - my) for a, c in zip(x, y)) / sxx if sxx > 0 else 0.0
    est = my + b * (mx_all - mx)
    resid = [(c - my) - b * (a - mx) for a, c in zip(x, y)]
    se_reg = math.sqrt(sum(r * r for r in resid) / (n - 2) / n * fpc)
    both = sum(1 for a, c in zip(x, y) if a and c)
    print(f"exact subset: {100 * my:.2f} % of {n} (95 %: +-{196 * se_plain:.2f} points)")
    print(f"lossy: subset {100 * mx:.2f} %, all {N} {100 * mx_all:.2f} %")
    print(f"image by image: {both} right in both, {int(sum(y)) - both} only exact, "
          f"{int(sum(x)) - both} only lossy, {n - int(sum(x)) - int(sum(y)) + both} in neither")
    print(f"regression estimate of the exact accuracy on all {N}: {100 * est:.2f} % "
          f"(slope {b:.3f}; 95 %: {100 * (est - 1.96 * se_reg):.1f}-{100 * (est + 1.96 * se_reg):.1f} %)")


if __name__ == "__main__":
    main()
