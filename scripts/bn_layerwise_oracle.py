#!/usr/bin/python3
"""Float64 PyTorch oracle for normserve's exact layer-wise BN recalibration.

Usage: /usr/bin/python3 scripts/bn_layerwise_oracle.py --name bn1d_head --samples 16 --out DIR

Builds the seeded test model of scripts/export_test_models.py, draws `samples` seeded
N(0,1) inputs of batch 1, and recalibrates every BatchNorm layer in module order (a
topological order of the BN layers): layer L's statistics are the mean and unbiased
variance of its input over all values of all samples, computed in float64, while every
BN layer before it already uses its new statistics. Writes DIR/samples.npy ([K, ...]
float32, the inputs) and, per layer, DIR/<module>.mean.npy and DIR/<module>.var.npy,
where <module> is the prefix of the layer's ONNX running_mean initializer.

By default all layers are recalibrated in one float64 forward pass over the K samples
stacked as one batch: a forward pre-hook sets each BN layer's statistics from its input
before the layer runs, so every layer's input already went through the new statistics of
all layers upstream of it, the definition above. Eval-mode layers act on each sample
alone, so the stacked batch gives the batch-1 values. --per-layer-passes runs the
definition literally instead (K batch-1 passes per layer; hours of CPU for DenseNet-121),
to cross-check the one-pass result.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_test_models  # noqa: E402


def moments(inp):
    """Per-channel mean and unbiased variance over every value of every sample."""
    values = inp.transpose(0, 1).reshape(inp.shape[1], -1)
    return values.mean(dim=1), values.var(dim=1, unbiased=True)


def commit(bn, mean, var):
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)


def recalibrate_in_one_pass(model, bns, x):
    stats = {}

    def make_hook(name):
        def hook(bn, inp):
            # A module called twice would see its second input after its own update.
            if name in stats:
                raise RuntimeError(f"BN layer {name} runs more than once per forward pass")
            stats[name] = moments(inp[0])
            commit(bn, *stats[name])
        return hook

    handles = [bn.register_forward_pre_hook(make_hook(name)) for name, bn in bns]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [name for name, _ in bns if name not in stats]
    if missing:
        raise RuntimeError(f"BN layers not run by the forward pass: {missing[:3]}")
    return stats


def recalibrate_per_layer_passes(model, bns, x):
    stats = {}
    for name, bn in bns:
        captured = []
        handle = bn.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        for k in range(x.shape[0]):  # batch 1, as normserve's clients send them
            model(x[k:k + 1])
        handle.remove()
        stats[name] = moments(torch.cat(captured, dim=0))
        commit(bn, *stats[name])
    return stats


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", required=True)
    p.add_argument("--per-layer-passes", action="store_true",
                   help="one forward pass per BN layer (slow; cross-checks the one-pass default)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    model, _, chw, _ = export_test_models.build(args.name)
    model = model.double().eval()
    rng = np.random.default_rng(args.seed)
    samples = rng.standard_normal((args.samples,) + tuple(chw), dtype=np.float32)
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "samples.npy"), samples)
    x = torch.from_numpy(samples.astype(np.float64))

    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if args.per_layer_passes:
            stats = recalibrate_per_layer_passes(model, bns, x)
        else:
            stats = recalibrate_in_one_pass(model, bns, x)
    for name, (mean, var) in stats.items():
        np.save(os.path.join(args.out, name + ".mean.npy"), mean.numpy().astype(np.float32))
        np.save(os.path.join(args.out, name + ".var.npy"), var.numpy().astype(np.float32))
    how = "one pass per layer" if args.per_layer_passes else "one pass"
    print(f"{args.name}: {len(bns)} BN layers recalibrated layer by layer from {args.samples} samples ({how})")


if __name__ == "__main__":
    main(sys.argv[1:])
