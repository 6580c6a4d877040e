#!/usr/bin/python3
"""Writes the Fashion-MNIST experiment's inputs as .npy files for engine-level tests.

Usage: /usr/bin/python3 scripts/export_fashion_test_sets.py --out DIR [--k 256]

For each shift of scripts/fashion_recalibration_oracle.py (clean, contrast, noise,
brightness): test_<shift>.npy (float32 [10000,1,28,28], the 10000 test images as a client
sends them), calib_<shift>.npy (float32 [k,1,28,28], the oracle's calibration samples), and
labels.npy (the test labels as float32, the one dtype the engine's .npy reader takes).
The tensors are the oracle's own (same functions, same seeds), so an engine test measures
accuracy on exactly the inputs the recalibration experiment sends over gRPC.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_recalibration_oracle as oracle  # noqa: E402


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--k", type=int, default=256)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    labels = None
    for shift in oracle.SHIFTS:
        x, y = oracle.shifted_test_set(shift)
        np.save(os.path.join(args.out, f"test_{shift}.npy"), np.ascontiguousarray(x))
        labels = y
        calib = oracle.calibration_samples(shift, args.k)
        np.save(os.path.join(args.out, f"calib_{shift}.npy"), np.ascontiguousarray(calib))
    np.save(os.path.join(args.out, "labels.npy"), labels.astype(np.float32))
    print(f"wrote {len(oracle.SHIFTS)} test sets and {args.k} calibration samples each to "
          f"{args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
