#!/usr/bin/python3
"""Exports the torchvision model zoo to ONNX, every export option, with PyTorch references.

Usage (Debian's python: torch 1.13, torchvision 0.14, numpy; no downloads):
    /usr/bin/python3 tests/zoo/export_zoo.py --out DIR [--select resnet18,densenet121/op13_...]

Layout: DIR/<model>/<variant>/model.onnx and cases.txt, one line per comparison
"<label> <input.npy> <output.npy>" (paths relative to the variant's directory); an export
that PyTorch itself refuses leaves export_error.txt instead of model.onnx. Reference
outputs live once per model and input shape in DIR/<model>/ref/ (PyTorch eval mode,
float32, the same inputs for every variant).

Weights are random (weights=None, seeded from the model's name with CRC-32) and every
BatchNorm gets random running statistics (mean ~ N(0, 0.1), var ~ U(0.5, 2)) and random
affine parameters, so a BN the engine folds or evaluates wrongly changes the output.

Each variant directory carries a STAMP with a hash of this script, the model and the
variant; a directory whose stamp matches is not exported again (refused exports too), so
a re-run only exports what changed. Directories are written under a temporary name and
renamed, so an interrupted run never leaves a half-written variant that looks done.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
import zlib

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models import segmentation

SCRIPT_BYTES = open(os.path.abspath(__file__), "rb").read()

# name -> (constructor, kind, base (H, W), second (H, W) for dynamic H/W exports).
# AlexNet and VGG pool adaptively to 6x6 / 7x7: below 224 the exporter refuses the
# non-integer pooling ratio, so they run at 224.
CLS_SIZE, CLS_SIZE2 = (160, 160), (128, 128)
SEG_SIZE, SEG_SIZE2 = (160, 160), (192, 224)
tv = torchvision.models
MODELS = {
    "alexnet": (lambda: tv.alexnet(weights=None), "cls", (224, 224), (160, 160)),
    "vgg11_bn": (lambda: tv.vgg11_bn(weights=None), "cls", (224, 224), (160, 160)),
    "resnet18": (lambda: tv.resnet18(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "resnet34": (lambda: tv.resnet34(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "resnet50": (lambda: tv.resnet50(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "resnext50_32x4d": (lambda: tv.resnext50_32x4d(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "wide_resnet50_2": (lambda: tv.wide_resnet50_2(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "squeezenet1_1": (lambda: tv.squeezenet1_1(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "densenet121": (lambda: tv.densenet121(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "inception_v3": (lambda: tv.inception_v3(weights=None, aux_logits=False, init_weights=True),
                     "cls", CLS_SIZE, CLS_SIZE2),
    "googlenet": (lambda: tv.googlenet(weights=None, aux_logits=False, init_weights=True),
                  "cls", CLS_SIZE, CLS_SIZE2),
    "shufflenet_v2_x1_0": (lambda: tv.shufflenet_v2_x1_0(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "mobilenet_v2": (lambda: tv.mobilenet_v2(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "mobilenet_v3_large": (lambda: tv.mobilenet_v3_large(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "mnasnet0_5": (lambda: tv.mnasnet0_5(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "efficientnet_b0": (lambda: tv.efficientnet_b0(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "regnet_y_400mf": (lambda: tv.regnet_y_400mf(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "convnext_tiny": (lambda: tv.convnext_tiny(weights=None), "cls", CLS_SIZE, CLS_SIZE2),
    "fcn_resnet50": (lambda: segmentation.fcn_resnet50(weights=None, weights_backbone=None),
                     "seg", SEG_SIZE, SEG_SIZE2),
    "deeplabv3_mobilenet_v3_large": (
        lambda: segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None),
        "seg", SEG_SIZE, SEG_SIZE2),
    "lraspp_mobilenet_v3_large": (
        lambda: segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None),
        "seg", SEG_SIZE, SEG_SIZE2),
}

# The base variant, and one variant per export option changed from it: the options are
# independent in the exporter, so one axis at a time finds which option breaks a model
# without the 16-fold cost of the full product.
BASE = {"opset": 17, "training": "PRESERVE", "fold": True, "dynamic": "batch"}
VARIANTS = {
    "op17_preserve_fold_dynbatch": BASE,
    "op13_preserve_fold_dynbatch": dict(BASE, opset=13),
    "op17_eval_fold_dynbatch": dict(BASE, training="EVAL"),
    "op17_preserve_nofold_dynbatch": dict(BASE, fold=False),
    "op17_preserve_fold_static": dict(BASE, dynamic="none"),
    "op17_preserve_fold_dynhw": dict(BASE, dynamic="hw"),
}

class OutTensor(nn.Module):
    """torchvision's segmentation models return {'out': ..., 'aux': ...}: export 'out'."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def seed_of(*parts):
    return zlib.crc32("/".join(parts).encode())


def build(name):
    ctor, kind, _, _ = MODELS[name]
    torch.manual_seed(seed_of(name))
    model = ctor()
    gen = torch.Generator().manual_seed(seed_of(name, "bn"))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    if kind == "seg":
        model = OutTensor(model)
    return model.eval()


def shapes_of(name, variant):
    """[(label, batch, (H, W))] compared for this variant."""
    _, _, size, size2 = MODELS[name]
    dyn = VARIANTS[variant]["dynamic"]
    if dyn == "none":
        return [("b1", 1, size)]
    cases = [("b1", 1, size), ("b3", 3, size)]
    if dyn == "hw":
        tag = "%dx%d" % size2
        cases += [("b1_" + tag, 1, size2), ("b3_" + tag, 3, size2)]
    return cases


def ref_paths(model_dir, batch, hw):
    stem = "ref/%dx%d_b%d" % (hw[0], hw[1], batch)
    return os.path.join(model_dir, stem + "_in.npy"), os.path.join(model_dir, stem + "_out.npy")


def ensure_reference(model_fn, name, model_dir, batch, hw):
    """PyTorch eval-mode output on a seeded input; cached by content of this script."""
    inp, out = ref_paths(model_dir, batch, hw)
    stamp = out + ".stamp"
    key = hashlib.sha256(SCRIPT_BYTES + repr((name, batch, hw)).encode()).hexdigest()[:16]
    if os.path.exists(stamp) and open(stamp).read() == key:
        return
    os.makedirs(os.path.dirname(inp), exist_ok=True)
    gen = torch.Generator().manual_seed(seed_of(name, "input", str(batch), str(hw)))
    x = torch.randn(batch, 3, hw[0], hw[1], generator=gen)
    with torch.no_grad():
        y = model_fn()(x)
    np.save(inp, x.numpy().astype(np.float32))
    np.save(out, y.numpy().astype(np.float32))
    with open(stamp, "w") as f:
        f.write(key)


def export_variant(model, name, variant, vdir):
    spec = VARIANTS[variant]
    _, _, size, _ = MODELS[name]
    dynamic_axes = None
    if spec["dynamic"] == "batch":
        dynamic_axes = {"input": {0: "batch"}, "output": {0: "batch"}}
    elif spec["dynamic"] == "hw":
        dynamic_axes = {"input": {0: "batch", 2: "height", 3: "width"},
                        "output": {0: "batch"}}
        if MODELS[name][1] == "seg":
            dynamic_axes["output"].update({2: "height", 3: "width"})
    training = getattr(torch.onnx.TrainingMode, spec["training"])
    x = torch.randn(1, 3, size[0], size[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, os.path.join(vdir, "model.onnx"), opset_version=spec["opset"],
                          training=training, do_constant_folding=spec["fold"],
                          input_names=["input"], output_names=["output"],
                          dynamic_axes=dynamic_axes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--select", default="",
                        help="comma-separated MODEL or MODEL/VARIANT (default: every pair)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    todo = []
    for item in filter(None, args.select.split(",")) if args.select else list(MODELS):
        name, _, variant = item.partition("/")
        if name not in MODELS or (variant and variant not in VARIANTS):
            sys.exit("unknown model or variant: %s" % item[:80])
        todo += [(name, v) for v in ([variant] if variant else VARIANTS) if (name, v) not in todo]
    timings = {}
    t_all = time.time()
    for name in dict.fromkeys(m for m, _ in todo):
        model_dir = os.path.join(args.out, name)
        cache = {}

        def model_fn():
            if "m" not in cache:
                cache["m"] = build(name)
            return cache["m"]

        for m, variant in todo:
            if m != name:
                continue
            vdir = os.path.join(model_dir, variant)
            key = hashlib.sha256(
                SCRIPT_BYTES + json.dumps([name, VARIANTS[variant]], sort_keys=True).encode()
            ).hexdigest()[:16]
            stamp = os.path.join(vdir, "STAMP")
            if os.path.exists(stamp) and open(stamp).read() == key:
                continue
            t0 = time.time()
            lines = []
            for label, batch, hw in shapes_of(name, variant):
                ensure_reference(model_fn, name, model_dir, batch, hw)
                inp, out = ref_paths(model_dir, batch, hw)
                lines.append("%s %s %s" % (label, os.path.relpath(inp, vdir),
                                           os.path.relpath(out, vdir)))
            tmp = vdir + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            try:
                export_variant(model_fn(), name, variant, tmp)
            except Exception as e:  # the exporter's refusal is a result, not a crash
                with open(os.path.join(tmp, "export_error.txt"), "w") as f:
                    f.write(("%s: %s" % (type(e).__name__, e)).replace("\n", " ")[:300])
            with open(os.path.join(tmp, "cases.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
            with open(os.path.join(tmp, "STAMP"), "w") as f:
                f.write(key)
            shutil.rmtree(vdir, ignore_errors=True)
            os.rename(tmp, vdir)
            timings["%s/%s" % (name, variant)] = round(time.time() - t0, 2)
            print("exported %s/%s in %.1f s" % (name, variant, time.time() - t0), flush=True)
    print("export: %d of %d variants (re)built in %.1f s" % (len(timings), len(todo), time.time() - t_all))


if __name__ == "__main__":
    main()
