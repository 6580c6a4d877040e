#!/usr/bin/python3
"""Exports the small random-weight models of normserve's default model repository.

Usage: /usr/bin/python3 scripts/make_default_repository.py [--repo models/repository]

Writes <repo>/tiny_bn/1/model.onnx (conv+BN+ReLU+GAP+Linear on [N,3,8,8], small enough
that a request measures RPC overhead, not compute) and <repo>/gn_small/1/model.onnx (two
conv+GroupNorm+ReLU stages, GAP, Linear on [N,3,32,32]), each with <repo>/<model>/config.json.
Weights are seeded random; BN running stats and norm affine params are randomised as in
export_test_models.py. fashion_bn_cnn, the trained model, comes from train_fashion_mnist.py.
"""

import argparse
import json
import os
import sys
import warnings
import zlib

import numpy as np
import onnx
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_test_models import normalize_weight_scales, randomize_norms  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REPOSITORY = os.path.join(REPO_ROOT, "models", "repository")
MAX_FILE_BYTES = 2 * 1024 * 1024  # committed files stay small


def export_to_repository(model, chw, repository, name, opset=13, version=1,
                         max_batch_size=64, labels=None):
    """Writes <repository>/<name>/<version>/model.onnx and <repository>/<name>/config.json.

    The model must be in eval mode. Exported with training=PRESERVE so that BatchNorm stays
    a BatchNormalization node (the default EVAL mode folds Conv+BN inside torch.onnx, and
    the server's own folding would have nothing to do). Returns the ONNX path.
    """
    assert not model.training, f"{name}: export needs eval mode"
    version_dir = os.path.join(repository, name, str(version))
    os.makedirs(version_dir, exist_ok=True)
    path = os.path.join(version_dir, "model.onnx")
    example = torch.zeros((1,) + tuple(chw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PRESERVE + constant folding warning; eval mode
        torch.onnx.export(
            model, example, path,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            do_constant_folding=True, opset_version=opset,
            training=torch.onnx.TrainingMode.PRESERVE)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise RuntimeError(f"{path}: {size} bytes, limit {MAX_FILE_BYTES}")

    config = {"name": name, "platform": "onnx", "max_batch_size": max_batch_size}
    if labels is not None:
        config["labels"] = list(labels)
    with open(os.path.join(repository, name, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return path


def tiny_bn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def gn_small():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.GroupNorm(4, 16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.GroupNorm(8, 32), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


# name -> (constructor, input shape without batch)
MODELS = {"tiny_bn": (tiny_bn, (3, 8, 8)), "gn_small": (gn_small, (3, 32, 32))}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=DEFAULT_REPOSITORY, help="repository root")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for name, (ctor, chw) in MODELS.items():
        seed = zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF
        torch.manual_seed(seed)
        model = ctor()
        randomize_norms(model)
        model.eval()
        calib = np.random.default_rng(seed).standard_normal((2,) + chw, dtype=np.float32)
        normalize_weight_scales(model, torch.from_numpy(calib))
        path = export_to_repository(model, chw, args.repo, name)
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        print(f"{name}: {path} ({os.path.getsize(path)} bytes) ops {','.join(ops)}")


if __name__ == "__main__":
    main(sys.argv[1:])
