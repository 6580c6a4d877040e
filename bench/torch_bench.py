#!/usr/bin/python3
"""PyTorch peer of normserve_engine_bench: TorchScript, frozen and optimized for inference.

Runs the PyTorch definition of the model that scripts/export_test_models.py exported to
ONNX (falling back to torchvision definitions when that script is absent), batch 1, with
the same thread budget, and prints one JSON line in the shape format_table.py reads.
Run with Debian's /usr/bin/python3 (torch 1.13 + torchvision).

  /usr/bin/python3 bench/torch_bench.py --name resnet18 [--onnx DIR/model.onnx]
      [--threads 2] [--seconds 10] [--warmup 10] [--min_iters 20] [--max_iters 100000]
"""

import argparse
import importlib
import json
import os
import sys
import time

import torch
import torch.nn as nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INPUT_SHAPE = [1, 3, 224, 224]


def _randomize_bn_statistics(model, generator):
    # Random weights alone leave BN at mean 0 / var 1; the exported test models carry
    # non-trivial statistics, so the fallback does too (irrelevant for speed, kept for parity).
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)


def _fallback_model(name):
    import torchvision

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "resnet18":
        model = torchvision.models.resnet18(weights=None)
    elif name == "resnet50":
        model = torchvision.models.resnet50(weights=None)
    elif name == "mobilenet_v2":
        model = torchvision.models.mobilenet_v2(weights=None)
    elif name == "gn_resnet":
        # Stand-in only (ResNet-18 with GroupNorm(32)); the real gn_resnet is the small
        # 64x64 GNResNet of scripts/export_test_models.py, which run_bench.sh requires.
        model = torchvision.models.resnet18(
            weights=None, norm_layer=lambda c: nn.GroupNorm(min(32, c), c))
    else:
        raise ValueError(f"unknown model {name!r} (fallback knows resnet18, resnet50, "
                         "mobilenet_v2, gn_resnet)")
    _randomize_bn_statistics(model, generator)
    return model


def _first_module(obj):
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, (tuple, list)):
        for item in obj:
            if isinstance(item, nn.Module):
                return item
    if isinstance(obj, dict):
        for key in ("model", "module"):
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return None


def _model_from_export_script(name):
    """The definition scripts/export_test_models.py exported, or None if unavailable."""
    scripts_dir = os.path.join(REPO_ROOT, "scripts")
    if not os.path.exists(os.path.join(scripts_dir, "export_test_models.py")):
        return None, "export_test_models.py not found"
    if scripts_dir not in sys.path:
        sys.path.insert(0, scripts_dir)
    try:
        mod = importlib.import_module("export_test_models")
    except Exception as e:  # a half-written script must not break the benchmark
        return None, f"import export_test_models failed: {e!r}"
    # build(name) -> (module, opset, chw, inputs) seeds and randomises the norms exactly as
    # the export did, so PyTorch runs the very weights in the ONNX file. The other shapes
    # are tolerated in case the script's interface changes.
    candidates = []
    for fn_name in ("build", "build_model", "make_model", "get_model", "create_model"):
        if callable(getattr(mod, fn_name, None)):
            candidates.append(lambda f=getattr(mod, fn_name): f(name))
    for dict_name in ("MODELS", "MODEL_BUILDERS", "BUILDERS", "REGISTRY"):
        registry = getattr(mod, dict_name, None)
        if isinstance(registry, dict) and name in registry:
            entry = registry[name]
            if isinstance(entry, (tuple, list)) and entry and callable(entry[0]):
                entry = entry[0]  # (constructor, opset, chw)
            candidates.append(entry if callable(entry) and not isinstance(entry, nn.Module)
                              else (lambda e=entry: e))
    for fn_name in (f"build_{name}", f"make_{name}", name):
        if callable(getattr(mod, fn_name, None)):
            candidates.append(getattr(mod, fn_name))
    errors = []
    for build in candidates:
        try:
            model = _first_module(build())
        except Exception as e:
            errors.append(repr(e))
            continue
        if model is not None:
            return model, "scripts/export_test_models.py"
    return None, ("export_test_models has no usable builder for "
                  f"{name!r}: {'; '.join(errors) or 'none found'}")


def _input_shape_from_onnx(path):
    """Batch-1 shape of the ONNX model's (single) graph input."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one graph input, got {len(inputs)}")
    dims = []
    for axis, d in enumerate(inputs[0].type.tensor_type.shape.dim):
        if axis == 0:
            dims.append(1)  # the batch, static or symbolic
        elif d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        else:
            raise ValueError(f"{path}: input {inputs[0].name!r} has dynamic dim {axis}")
    return dims


def _quantile(sorted_values, q):
    # Linear interpolation between closest ranks (numpy's default), as in the other runners.
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="model name, e.g. resnet18")
    parser.add_argument("--onnx", help="the ONNX file benchmarked by the other runners; "
                        "its input shape is used (default [1,3,224,224])")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min_iters", type=int, default=20)
    parser.add_argument("--max_iters", type=int, default=100000)
    parser.add_argument("--require_export_script", action="store_true",
                        help="fail instead of falling back to torchvision definitions")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    model, source = _model_from_export_script(args.name)
    if model is None:
        if args.require_export_script:
            raise SystemExit(f"torch_bench: {source}")
        print(f"torch_bench: {source}; using the built-in definition of {args.name}",
              file=sys.stderr)
        model = _fallback_model(args.name)
        source = "torch_bench fallback"
    model = model.float().eval()

    shape = _input_shape_from_onnx(args.onnx) if args.onnx else DEFAULT_INPUT_SHAPE
    generator = torch.Generator().manual_seed(1234)
    x = torch.rand(shape, generator=generator) * 2 - 1

    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        frozen = torch.jit.freeze(traced)
        scripted = torch.jit.optimize_for_inference(frozen)

        # The profiling executor specialises on the first runs: warm up well past that.
        for _ in range(max(args.warmup, 3)):
            scripted(x)

        times = []
        start = time.perf_counter()
        while len(times) < args.max_iters:
            t0 = time.perf_counter()
            scripted(x)
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1e3)
            if len(times) >= args.min_iters and t1 - start >= args.seconds:
                break

    s = sorted(times)
    print(json.dumps({
        "runner": "pytorch_torchscript",
        "model": args.name,
        "median_ms": _quantile(s, 0.5),
        "p90_ms": _quantile(s, 0.9),
        "mean_ms": sum(times) / len(times),
        "min_ms": s[0],
        "iters": len(times),
        "threads": args.threads,
        "version": torch.__version__,
        "model_source": source,
    }), flush=True)


if __name__ == "__main__":
    main()
