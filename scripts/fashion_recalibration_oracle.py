#!/usr/bin/python3
"""Float64 PyTorch oracle for the Fashion-MNIST recalibration experiment (issue 4, item 10).

Usage: /usr/bin/python3 scripts/fashion_recalibration_oracle.py [--ks 8,64,256]
           [--json docs/experiment.json] [--svg docs/accuracy_vs_k.svg]

Loads fashion_bn_cnn (models/fashion_bn_cnn.pt, the state_dict of
train_fashion_mnist.fashion_bn_cnn(); identical to the ONNX in the default repository),
builds four test sets from the Fashion-MNIST test split and, per test set and K,
recalibrates the six BN layers from K calibration samples of the same shifted
distribution (test-time adaptation), in float64:

  frozen      the training running statistics, untouched;
  one-pass    every BN layer gets the statistics of its input under the frozen model,
              all layers swapped at once;
  layer-wise  BN layer L gets the statistics of its input when every upstream BN layer
              already uses its new statistics (normserve's definition).

A layer's statistics are the mean and the unbiased variance (PyTorch's running_var
convention) of all values of the channel over all K samples (N*H*W values per sample):
the total variance a Chan et al. merge of per-request (count, mean, M2) gives, not an
average of per-request variances. The network is evaluated in eval mode, so running
the K samples as one batch gives exactly the per-sample activations of K batch-1 runs.

Shifts (pixel = uint8 / 255 in [0, 1]; computed in float64, clipped to [0, 1], then rounded
to float32, the tensor a client sends; the oracle computes on float64 of those float32s):
  clean       x
  contrast    0.5 + 0.3 * (x - 0.5)           (contrast x0.3 around mid-grey)
  noise       x + 0.3 * z, z ~ N(0, 1)        (numpy default_rng, seed 1 for the test
                                               set, seed 2 for the calibration samples)
  brightness  x + 0.4

Calibration samples: the first K images of a fixed permutation (numpy default_rng(0)) of the
60000-image TRAINING split, shifted the same way; K=8 samples are a prefix of K=64's, etc.
Test: all 10000 images of the test split.

Writes a JSON with, per test set: frozen accuracy, and per K: one-pass and layer-wise
accuracy, the per-layer max relative SEM (std of the per-request channel means / sqrt(K)
/ sqrt(var), the server's quality-gate quantity) and, for --stats_ks, the layer-wise
per-channel means and variances keyed by the ONNX initializer prefix ("1", "4", ...).
Optionally draws the accuracy-vs-K plot as a hand-written SVG (no matplotlib needed).
The tests import this module (shifted_test_set, calibration_samples, layerwise_stats,
accuracy) so that the inputs sent over gRPC are the oracle's own.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_fashion_mnist  # noqa: E402
from make_default_repository import REPO_ROOT  # noqa: E402

SHIFTS = ("clean", "contrast", "noise", "brightness")
SHIFT_LABELS = {"clean": "clean", "contrast": "contrast x0.3",
                "noise": "gaussian noise 0.3", "brightness": "brightness +0.4"}
TEST_NOISE_SEED = 1
CALIBRATION_NOISE_SEED = 2
PERMUTATION_SEED = 0
MAX_K = 512
DEFAULT_KS = (2, 4, 8, 16, 32, 64, 128, 256, 512)
# The issue's table (2-epoch model of its author, same architecture), for comparison.
ISSUE_REFERENCE = {
    "clean": {"frozen": 0.858, "one_pass_256": 0.767, "layerwise_256": 0.907,
              "layerwise_8": 0.862, "layerwise_64": 0.905},
    "contrast": {"frozen": 0.113, "one_pass_256": 0.100, "layerwise_256": 0.840,
                 "layerwise_8": 0.820, "layerwise_64": 0.827},
    "noise": {"frozen": 0.258, "one_pass_256": 0.196, "layerwise_256": 0.700},
    "brightness": {"frozen": 0.213, "one_pass_256": 0.100, "layerwise_256": 0.868},
}


def apply_shift(pixels_u8, shift, noise_seed):
    """uint8 [N,28,28] -> float32 [N,1,28,28] as a client sends it (see the module doc)."""
    x = pixels_u8.astype(np.float64)[:, None, :, :] / 255.0
    if shift == "clean":
        pass
    elif shift == "contrast":
        x = 0.5 + 0.3 * (x - 0.5)
    elif shift == "noise":
        x = x + 0.3 * np.random.default_rng(noise_seed).standard_normal(x.shape)
    elif shift == "brightness":
        x = x + 0.4
    else:
        raise ValueError(f"unknown shift {shift!r}, expected one of {SHIFTS}")
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _raw_split(data_dir, prefix):
    images = train_fashion_mnist.read_idx(
        train_fashion_mnist.find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = train_fashion_mnist.read_idx(
        train_fashion_mnist.find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
    return images, labels.astype(np.int64)


def shifted_test_set(shift, data_dir=train_fashion_mnist.DATA_DIR):
    """(float32 [10000,1,28,28], int64 labels [10000])."""
    images, labels = _raw_split(data_dir, "t10k")
    return apply_shift(images, shift, TEST_NOISE_SEED), labels


def calibration_samples(shift, k, data_dir=train_fashion_mnist.DATA_DIR):
    """float32 [k,1,28,28]: the first k of MAX_K fixed training images, shifted."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k}, expected 1..{MAX_K}")
    images, _ = _raw_split(data_dir, "train")
    order = np.random.default_rng(PERMUTATION_SEED).permutation(len(images))[:MAX_K]
    return apply_shift(images[order], shift, CALIBRATION_NOISE_SEED)[:k]


def load_model(path=os.path.join(REPO_ROOT, "models", "fashion_bn_cnn.pt")):
    """The trained model in float64, eval mode."""
    model = train_fashion_mnist.fashion_bn_cnn()
    model.load_state_dict(torch.load(path))
    return model.double().eval()


def bn_layers(model):
    """[(name, module)] in module order, a topological order of the BN layers. The name is
    the prefix of the layer's ONNX initializers (name + ".running_mean")."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _channel_stats(values):
    """values [K, C, ...] of one BN input -> dict of float64 numpy [C] arrays."""
    k, c = values.shape[0], values.shape[1]
    per_request = values.reshape(k, c, -1)
    flat = per_request.transpose(0, 1).reshape(c, -1)
    mean = flat.mean(dim=1)
    var = flat.var(dim=1, unbiased=True)
    # Quality-gate quantity: SEM from the spread of the per-request channel means.
    request_means = per_request.mean(dim=2)
    sem = (request_means.std(dim=0, unbiased=True) / np.sqrt(k)) if k > 1 else \
        torch.full((c,), float("inf"), dtype=values.dtype)
    return {"mean": mean.numpy(), "var": var.numpy(),
            "relative_sem": (sem / var.sqrt()).numpy()}


@torch.no_grad()
def _capture(model, modules, x):
    """Inputs of `modules` for one forward of x (eval mode: same as batch-1 runs)."""
    captured = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, inp, key=id(m): captured.__setitem__(key, inp[0])) for m in modules]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [captured[id(m)] for m in modules]


def _set_stats(bn, stats):
    bn.running_mean.copy_(torch.from_numpy(stats["mean"]))
    bn.running_var.copy_(torch.from_numpy(stats["var"]))


@torch.no_grad()
def layerwise_stats(model, samples):
    """Recalibrates `model` in place layer by layer; returns {name: stats}."""
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32).astype(np.float64))
    out = {}
    for name, bn in bn_layers(model):
        (values,) = _capture(model, [bn], x)
        out[name] = _channel_stats(values)
        _set_stats(bn, out[name])
    return out


@torch.no_grad()
def one_pass_stats(model, samples):
    """Recalibrates `model` in place, every layer from the frozen upstream; {name: stats}."""
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32).astype(np.float64))
    layers = bn_layers(model)
    values = _capture(model, [bn for _, bn in layers], x)
    out = {name: _channel_stats(v) for (name, _), v in zip(layers, values)}
    for name, bn in layers:
        _set_stats(bn, out[name])
    return out


EVAL_DTYPE = torch.float64


@torch.no_grad()
def predictions(model, x, batch=500):
    """argmax class per image; forward in EVAL_DTYPE (--eval_dtype; float32 is the served
    precision and several times faster; statistics are always computed in float64)."""
    model = model.to(EVAL_DTYPE)
    preds = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch]).to(EVAL_DTYPE)
        preds.append(model(xb).argmax(1).numpy())
    return np.concatenate(preds)


def accuracy(model, x, labels):
    return float((predictions(model, x) == labels).mean())


def run(ks, stats_ks, shifts, model_path, data_dir, log=print):
    result = {"model": os.path.relpath(model_path, REPO_ROOT),
              "definition": {
                  "statistics": "mean and unbiased variance of all N*H*W values of all K "
                                "samples per channel, float64",
                  "calibration": f"first K of a default_rng({PERMUTATION_SEED}) permutation "
                                 "of the training split, shifted like the test set",
                  "test": "10000 images of the test split",
                  "shifts": {"clean": "x", "contrast": "0.5 + 0.3*(x - 0.5)",
                             "noise": f"x + 0.3*N(0,1), seed {TEST_NOISE_SEED} (test), "
                                      f"{CALIBRATION_NOISE_SEED} (calibration)",
                             "brightness": "x + 0.4",
                             "all": "x = pixel/255; clipped to [0,1]; float32"}},
              "issue_reference": ISSUE_REFERENCE, "sets": {}}
    for shift in shifts:
        t0 = time.perf_counter()
        x_test, y_test = shifted_test_set(shift, data_dir)
        calib = calibration_samples(shift, max(ks), data_dir)
        entry = {"label": SHIFT_LABELS[shift],
                 "frozen": accuracy(load_model(model_path), x_test, y_test), "k": {}}
        for k in ks:
            one = load_model(model_path)
            one_pass_stats(one, calib[:k])
            lw = load_model(model_path)
            stats = layerwise_stats(lw, calib[:k])
            e = {"one_pass": accuracy(one, x_test, y_test),
                 "layerwise": accuracy(lw, x_test, y_test),
                 "layerwise_max_relative_sem": {n: float(np.max(s["relative_sem"]))
                                                for n, s in stats.items()}}
            if k in stats_ks:
                e["layerwise_stats"] = {n: {"mean": s["mean"].tolist(), "var": s["var"].tolist()}
                                        for n, s in stats.items()}
            entry["k"][str(k)] = e
            log(f"{shift:10s} K={k:4d}: frozen {entry['frozen']:.4f} one-pass {e['one_pass']:.4f}"
                f" layer-wise {e['layerwise']:.4f}")
        log(f"{shift}: {time.perf_counter() - t0:.0f}s")
        result["sets"][shift] = entry
    return result


# -- the plot: a hand-written SVG (Debian's python3 here has no matplotlib) -------------

COLORS = {"clean": "#1f77b4", "contrast": "#d62728", "noise": "#2ca02c",
          "brightness": "#9467bd"}


def write_svg(result, path):
    w, h = 760, 470
    left, right, top, bottom = 70, 190, 40, 60
    pw, ph = w - left - right, h - top - bottom
    sets = result["sets"]
    ks = sorted({int(k) for s in sets.values() for k in s["k"]})
    lo, hi = np.log2(ks[0]), np.log2(ks[-1])

    def px(k):
        return left + (np.log2(k) - lo) / (hi - lo) * pw

    def py(a):
        return top + (1.0 - a) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="14">'
           'fashion_bn_cnn: test accuracy after BN recalibration from K samples</text>']
    for a in np.arange(0.0, 1.01, 0.1):
        y = py(a)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{a:.1f}</text>')
    for k in ks:
        x = px(k)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{k}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
               'stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 18}" text-anchor="middle">'
               'K calibration samples (batch-1 requests), log scale</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">accuracy</text>')
    styles = {"layerwise": "", "one_pass": ' stroke-dasharray="6 4"'}
    for shift, s in sets.items():
        c = COLORS[shift]
        y = py(s["frozen"])
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="{c}" '
                   'stroke-dasharray="1 3" stroke-width="1.5"/>')
        for method, dash in styles.items():
            pts = " ".join(f"{px(int(k)):.1f},{py(e[method]):.1f}"
                           for k, e in sorted(s["k"].items(), key=lambda kv: int(kv[0])))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" '
                       f'stroke-width="2"{dash}/>')
            for p in pts.split():
                cx, cy = p.split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{c}"/>')
    lx, ly = left + pw + 15, top + 10
    for i, shift in enumerate(sets):
        y = ly + 18 * i
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" stroke="{COLORS[shift]}" '
                   'stroke-width="3"/>')
        out.append(f'<text x="{lx + 30}" y="{y + 4}">{SHIFT_LABELS[shift]}</text>')
    y = ly + 18 * len(sets) + 14
    for i, (label, dash) in enumerate((("layer by layer", ""),
                                       ("one pass", ' stroke-dasharray="6 4"'),
                                       ("frozen", ' stroke-dasharray="1 3"'))):
        yy = y + 18 * i
        out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 24}" y2="{yy}" stroke="black" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 30}" y="{yy + 4}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)),
                   help=f"comma-separated K values (1..{MAX_K})")
    p.add_argument("--stats_ks", default="8,64,256",
                   help="K values whose layer-wise per-channel statistics go in the JSON")
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--model", default=os.path.join(REPO_ROOT, "models", "fashion_bn_cnn.pt"))
    p.add_argument("--data", default=train_fashion_mnist.DATA_DIR)
    p.add_argument("--json", default="-", help="output JSON file ('-': stdout)")
    p.add_argument("--svg", help="also write the accuracy-vs-K plot here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval_dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the accuracy forward passes")
    args = p.parse_args(argv)
    global EVAL_DTYPE
    EVAL_DTYPE = getattr(torch, args.eval_dtype)
    torch.set_num_threads(args.threads)
    ks = sorted({int(k) for k in args.ks.split(",")})
    stats_ks = {int(k) for k in args.stats_ks.split(",") if k}
    shifts = [s for s in args.shifts.split(",") if s]
    t0 = time.perf_counter()
    result = run(ks, stats_ks, shifts, args.model, args.data,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["eval_dtype"] = args.eval_dtype
    text = json.dumps(result, indent=1)
    if args.json == "-":
        print(text)
    else:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if args.svg:
        write_svg(result, args.svg)


if __name__ == "__main__":
    main(sys.argv[1:])
