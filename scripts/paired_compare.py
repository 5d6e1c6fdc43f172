#!/usr/bin/env python3
"""Compare two nets on the same test images (McNemar's test on the paired predictions).

Given two `lowbit eval --predictions` files for the same test file, prints each net's accuracy,
the difference B - A in points, the discordant counts (images only A gets right, only B gets
right) and McNemar's z = (n_B - n_A) / sqrt(n_A + n_B) (normal approximation; |z| > 1.96 is a
difference at the 5 % level). Pairing removes the variation that comes from which images happen
to be in the test set, so it resolves differences far smaller than each accuracy's own interval.

Usage: paired_compare.py A.csv B.csv
"""
import csv
import math
import sys


def rows(path):
    with open(path, newline="") as f:
        return [(int(r["index"]), int(r["label"]), int(r["predicted"])) for r in csv.DictReader(f)]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    a, b = rows(sys.argv[1]), rows(sys.argv[2])
    if len(a) != len(b) or not a:
        sys.exit(f"{sys.argv[1]} has {len(a)} rows, {sys.argv[2]} {len(b)}: not predictions on the same images")
    only_a = only_b = 0
    for (ia, la, pa), (ib, lb, pb) in zip(a, b):
        if ia != ib or la != lb:
            sys.exit(f"row {ia}: index/label ({ia}, {la}) vs ({ib}, {lb}): not the same images in the same order")
        only_a += pa == la and pb != lb
        only_b += pb == lb and pa != la
    n = len(a)
    acc_a = sum(p == l for _, l, p in a) / n
    acc_b = sum(p == l for _, l, p in b) / n
    z = (only_b - only_a) / math.sqrt(only_a + only_b) if only_a + only_b else 0.0
    print(f"{n} images: A {100 * acc_a:.2f} %, B {100 * acc_b:.2f} %, B - A {100 * (acc_b - acc_a):+.2f} points")
    print(f"only A right {only_a}, only B right {only_b}: McNemar z = {z:+.2f}")


if __name__ == "__main__":
    main()
