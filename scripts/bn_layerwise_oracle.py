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
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_test_models  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", required=True)
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
        for name, bn in bns:
            captured = []
            handle = bn.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
            for k in range(args.samples):  # batch 1, as normserve's clients send them
                model(x[k:k + 1])
            handle.remove()
            values = torch.cat([c.transpose(0, 1).reshape(c.shape[1], -1) for c in captured], dim=1)
            mean = values.mean(dim=1)
            var = values.var(dim=1, unbiased=True)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            np.save(os.path.join(args.out, name + ".mean.npy"), mean.numpy().astype(np.float32))
            np.save(os.path.join(args.out, name + ".var.npy"), var.numpy().astype(np.float32))
    print(f"{args.name}: {len(bns)} BN layers recalibrated layer by layer from {args.samples} samples")


if __name__ == "__main__":
    main(sys.argv[1:])
