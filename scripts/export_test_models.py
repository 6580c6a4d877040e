#!/usr/bin/python3
"""Exports the ONNX test models that the engine's oracle tests compare against PyTorch.

Usage (Debian's python, which has torch 1.13, torchvision, onnx and numpy):
    /usr/bin/python3 scripts/export_test_models.py --out DIR [--only resnet18,gn_resnet]

For every model it writes DIR/<name>/model.onnx and input_b1.npy, output_b1.npy,
input_b3.npy, output_b3.npy (float32, C order): inputs are seeded N(0, 1), outputs come
from the PyTorch module in eval mode, in float32, on the same inputs. Models listed with a
second input shape are exported with dynamic H and W and also get input_hw2_b{1,3}.npy /
output_hw2_b{1,3}.npy at that shape. DIR/manifest.json lists {name, opset, input_shape
(batch 1), output_shape (batch 1), output_std, output_std_across_batch, op_types
[, second_input_shape]};
with --only, the entries of the other models already in the manifest are kept.

Everything is seeded from the model's name (CRC-32), so a model's files do not depend on
which other models were exported in the same run. Weights are random (no downloads) and
every normalization layer gets random affine parameters, and every BatchNorm random
running statistics, so the engine's BN folding and norm kernels see non-trivial values.

Models are exported with training=TrainingMode.PRESERVE (the module is in eval mode, so
this is an inference export): with the default TrainingMode.EVAL, torch 1.13 runs
_jit_pass_onnx_eval_peephole, which folds every Conv+BatchNormalization pair into the
Conv before writing the file, and the engine's own folding would never be exercised.
"""

import argparse
import json
import os
import sys
import time
import warnings
import zlib

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


# ---------------------------------------------------------------------------
# Small architectures that torchvision does not provide.


class GNBasicBlock(nn.Module):
    """ResNet basic block with GroupNorm; 1x1 conv + GN shortcut when the shape changes."""

    def __init__(self, cin, cout, stride, groups=8):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.gn2 = nn.GroupNorm(groups, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout))

    def forward(self, x):
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class GNResNet(nn.Module):
    """Stem 3->32 /2, blocks 32 (/1), 64 (/2), 128 (/2), GAP, Linear to 10. Input 64x64."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.GroupNorm(8, 32), nn.ReLU(inplace=True))
        self.layer1 = GNBasicBlock(32, 32, 1)
        self.layer2 = GNBasicBlock(32, 64, 2)
        self.layer3 = GNBasicBlock(64, 128, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def instnorm_net():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True), nn.ReLU(inplace=True),
        nn.Conv2d(16, 3, 3, padding=1))


def layernorm_net():
    # 32x32 -> 16x16 after the first conv, so LayerNorm normalizes over [C,H,W] = [16,16,16].
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.LayerNorm([16, 16, 16]), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 64), nn.LayerNorm(64), nn.ReLU(inplace=True),
        nn.Linear(64, 10))


def bn1d_head():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
        nn.Linear(64, 10), nn.Softmax(dim=1))


class ConcatNet(nn.Module):
    """Branches on a 32x32 map that must all land on 16x16 for the Concat:

    - MaxPool k5 s2 p1 ceil_mode=True: floor((32+2-5)/2)+1 = 15, ceil mode gives 16, so an
      engine that ignores ceil_mode fails on shape, not on a rounding error.
    - depthwise 3x3 conv, dilation 2, padding 2, stride 2, then x*sigmoid(x) as explicit
      Sigmoid and Mul nodes.
    - AvgPool k3 s2 p1 count_include_pad=False: border outputs divide by 4 or 6, not 9.
    The head flattens with x.view(x.shape[0], -1), which exports as a
    Shape->Gather->Unsqueeze->Concat->Reshape chain rather than a Flatten node.
    """

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True))
        self.maxpool = nn.MaxPool2d(5, stride=2, padding=1, ceil_mode=True)
        self.dw = nn.Sequential(
            nn.Conv2d(16, 16, 3, stride=2, padding=2, dilation=2, groups=16, bias=False),
            nn.BatchNorm2d(16))
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.mix = nn.Sequential(
            nn.Conv2d(48, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        d = self.dw(x)
        x = torch.cat([self.maxpool(x), d * torch.sigmoid(d), self.avgpool(x)], dim=1)
        x = self.gap(self.mix(x))
        return self.fc(x.view(x.shape[0], -1))


class Interpolate(nn.Module):
    """A conv (so the resize reads an engine-chosen layout) then one F.interpolate.

    size_from="input" resizes to the input's own H, W (a Shape->Gather->Concat chain in the
    export, folded once the input shape is known), after a stride-2 conv.
    """

    def __init__(self, size_from=None, stride=1, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride, 1)
        self.size_from = size_from
        self.kwargs = kwargs

    def forward(self, x):
        kwargs = dict(self.kwargs)
        if self.size_from == "input":
            kwargs["size"] = x.shape[-2:]
        return F.interpolate(self.conv(x), **kwargs)


def aspp_conv(cin, cout, dilation):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegHead(nn.Module):
    """DeepLabV3's op mix at toy size: stride-8 backbone, ASPP with dilated 3x3 convs and a
    global-pool branch resized (bilinear) to the feature size, 1x1 classifier, bilinear
    upsampling to the input size. Both resizes take their size from runtime shapes."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.backbone = nn.Sequential(
            aspp_conv(3, 16, 1), nn.MaxPool2d(2),
            aspp_conv(16, 32, 1), nn.MaxPool2d(2),
            aspp_conv(32, 32, 1), nn.MaxPool2d(2))
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)),
            aspp_conv(32, 16, 2), aspp_conv(32, 16, 3)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 16, 1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.project = aspp_conv(64, 16, 1)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        parts = [b(f) for b in self.branches]
        parts.append(F.interpolate(self.pool(f), size=f.shape[-2:], mode="bilinear", align_corners=False))
        y = self.classifier(self.project(torch.cat(parts, dim=1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


# name -> (constructor, opset, input shape without the batch dimension[, second input
# shape]). A model with a second shape is exported with dynamic H and W, and its inputs and
# outputs at that shape are written as input_hw2_b{1,3}.npy / output_hw2_b{1,3}.npy.
def gelu_mlp(approximate="none"):
    # PyTorch 1.13 writes GELU as Div/Erf/Add/Mul/Mul (tanh: 9 Mul/Add/Tanh nodes), which the
    # engine fuses into one eltwise_gelu_* post-op of the Gemm before it.
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(approximate=approximate), nn.Linear(32, 10))


class ConvNeXtLike(nn.Module):
    """torchvision's ConvNeXt stages in miniature, input 32x32: patchify stem (4x4 /4) +
    LayerNorm2d, two CNBlocks (depthwise 7x7, permute, LayerNorm over C, Linear 4x, GELU,
    Linear, layer scale, permute back, stochastic depth = identity in eval, residual),
    downsampling (LayerNorm2d + 2x2 /2 conv), one CNBlock, head (GAP, LayerNorm, Linear).
    Layer scales are drawn in [0.5, 1.5] instead of torchvision's 1e-6, so each block's
    branch (where the GELU is) visibly changes the output."""

    def __init__(self, num_classes=10):
        super().__init__()
        from torchvision.models.convnext import CNBlock, LayerNorm2d
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 4, 4), LayerNorm2d(32, eps=1e-6),
            CNBlock(32, 1e-6, 0.1), CNBlock(32, 1e-6, 0.1),
            LayerNorm2d(32, eps=1e-6), nn.Conv2d(32, 64, 2, 2),
            CNBlock(64, 1e-6, 0.1))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), LayerNorm2d(64, eps=1e-6), nn.Flatten(1), nn.Linear(64, num_classes))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, CNBlock):
                    m.layer_scale.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.head(self.features(x))


class MinMaxReduceNet(nn.Module):
    """Max/Min with broadcasting (a reduced tensor, a scalar constant), Neg, Reciprocal,
    ReduceMax over H,W, ReduceSum over C (axes as an input at opset 13), ReduceL2 over C."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        a = torch.maximum(x, x.mean(dim=1, keepdim=True))
        b = torch.minimum(a, torch.tensor(0.7))
        c = -b + torch.reciprocal(x.abs() + 1.0)
        return (c + c.amax(dim=(2, 3), keepdim=True) + c.sum(dim=1, keepdim=True)
                + torch.norm(c, p=2, dim=1, keepdim=True))
class PadNet(nn.Module):
    """Every Pad form the exporter writes: reflect, edge (replicate) and constant with a
    non-zero value on H/W; a zero pad in front of a conv and avg_pool2d with
    count_include_pad=True (both exported as Pad + op, folded into the op's padding);
    a constant pad on the channel axis and a crop (negative pad)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.conv3 = nn.Conv2d(12, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.conv1(F.pad(x, (1, 2, 2, 1), mode="reflect"))
        x = self.conv2(F.pad(x, (1, 1, 1, 1)))
        x = self.pool(F.pad(x, (2, 0, 1, 3), mode="replicate"))
        x = F.pad(x, (1, 1, 0, 2), value=0.5)
        x = F.pad(x, (-1, 0, 0, -1, 2, 2))  # crop W and H, 2 zero channels before and after
        x = self.conv3(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ShuffleBlock(nn.Module):
    """ShuffleNetV2's stride-1 unit: channel split (chunk), branch, concat, channel shuffle."""

    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(
            nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, hh, ww = x.shape
        return x.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)


class SliceNet(nn.Module):
    """Split (two- and three-way, unequal) and Slice on runtime tensors: strided,
    negative-start and reversed (flip: step -1) slices on H/W, a channel slice, and Expand
    of a pooled map."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 20, 3, padding=1, bias=False), nn.BatchNorm2d(20), nn.ReLU())
        self.block = ShuffleBlock(20)
        self.head = nn.Conv2d(20, 16, 1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.block(self.stem(x))
        p, q, r = torch.split(x, [4, 10, 6], dim=1)
        x = torch.cat((r, p * torch.sigmoid(q[:, 2:6]), q), dim=1)
        x = torch.flip(x[:, :, 1::2, -13:], [3])  # every other row from 1; last 13 columns, reversed
        g = F.adaptive_avg_pool2d(x, 1)
        x = x + g.expand(-1, -1, 16, 13)
        x = self.head(x[:, :, :, ::3])
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# name -> (constructor, opset, input shape without the batch dimension)
MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=1000),
                 13, (3, 224, 224)),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None, num_classes=1000),
                 17, (3, 224, 224)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=1000),
                     15, (3, 224, 224)),
    "gn_resnet": (GNResNet, 13, (3, 64, 64)),
    "instnorm_net": (instnorm_net, 13, (3, 32, 32)),
    "layernorm_net": (layernorm_net, 17, (3, 32, 32)),
    "layernorm_net_op13": (layernorm_net, 13, (3, 32, 32)),
    "bn1d_head": (bn1d_head, 14, (3, 32, 32)),
    "concat_net": (ConcatNet, 13, (3, 32, 32)),
    # Resize/Upsample (two sizes each: one where oneDNN's resampling applies, one where the
    # scale does not divide the size and the custom kernel runs, for the scale forms).
    "resize_nearest_up": (lambda: Interpolate(scale_factor=2, mode="nearest"), 13, (3, 8, 10), (3, 7, 5)),
    "resize_nearest_size": (lambda: Interpolate(size=(13, 6), mode="nearest"), 17, (3, 8, 10), (3, 9, 4)),
    "resize_bilinear_up": (lambda: Interpolate(scale_factor=2, mode="bilinear", align_corners=False),
                           17, (3, 8, 10), (3, 7, 5)),
    "resize_bilinear_down": (lambda: Interpolate(scale_factor=0.5, mode="bilinear", align_corners=False),
                             13, (3, 16, 20), (3, 15, 9)),
    "resize_bilinear_corners": (lambda: Interpolate(size=(11, 17), mode="bilinear", align_corners=True),
                                11, (3, 8, 10), (3, 20, 30)),
    "resize_bilinear_to_input": (lambda: Interpolate(size_from="input", stride=2, mode="bilinear",
                                                     align_corners=False), 13, (3, 16, 16), (3, 15, 22)),
    "resize_bilinear_corners_up": (lambda: Interpolate(scale_factor=3, mode="bilinear", align_corners=True),
                                   17, (3, 5, 6), (3, 4, 9)),
    "upsample_nearest_op9": (lambda: Interpolate(scale_factor=2, mode="nearest"), 9, (3, 8, 10), (3, 5, 7)),
    "seg_head": (SegHead, 17, (3, 64, 64), (3, 48, 80)),
    "gelu_mlp": (gelu_mlp, 17, (16,)),
    "gelu_mlp_op13": (gelu_mlp, 13, (16,)),
    "gelu_tanh_mlp": (lambda: gelu_mlp("tanh"), 13, (16,)),
    "convnext_block": (ConvNeXtLike, 17, (3, 32, 32)),
    "convnext_block_op13": (ConvNeXtLike, 13, (3, 32, 32)),
    "minmax_reduce_net": (MinMaxReduceNet, 13, (3, 16, 16)),
    "pad_net": (PadNet, 13, (3, 32, 32)),
    "pad_net_op10": (PadNet, 10, (3, 32, 32)),
    "slice_net": (SliceNet, 13, (3, 32, 32)),
    "slice_net_op11": (SliceNet, 11, (3, 32, 32)),
    # torchvision models that need Pad (DenseNet's transitions: avg_pool2d with
    # count_include_pad) and Split/Slice (ShuffleNetV2's channel split); small inputs.
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), 17, (3, 96, 96)),
    "shufflenet_v2": (lambda: torchvision.models.shufflenet_v2_x1_0(weights=None), 13, (3, 96, 96)),
}


# Models whose exported constant subgraphs are folded here (fold_constant_chains) before
# the engine sees them. torch 1.13 leaves, in front of every opset-11+ Pad, a chain of
# ConstantOfShape/Concat/Reshape/Slice(step -1)/Transpose/Cast on constants, and in front
# of every Expand an Equal/Where on the target shape; evaluating those is the engine's
# constant folding (issue 8 item 1), tested elsewhere. These entries test the operators
# themselves; drop a name from this set once the engine folds its chains.
PREFOLD_CONSTANTS = {"pad_net", "slice_net", "slice_net_op11"}


def fold_constant_chains(proto):
    """Replaces every node whose inputs are all constants (by numpy, for the few ops those
    chains use) with an initializer; returns the number of nodes folded."""
    from onnx import numpy_helper
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}

    def attr(n, key, default=None):
        for a in n.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def slice_(x, starts, ends, axes=None, steps=None):
        axes = range(len(starts)) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[a] = slice(int(s), int(e), int(st))
        return x[tuple(index)]

    evaluators = {
        "ConstantOfShape": lambda n, x: np.full(
            x.astype(np.int64), numpy_helper.to_array(attr(n, "value")).reshape(-1)[0]
            if attr(n, "value") is not None else np.float32(0)),
        "Concat": lambda n, *xs: np.concatenate(xs, axis=attr(n, "axis")),
        "Reshape": lambda n, x, s: x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(s)]),
        "Slice": lambda n, x, *r: slice_(x, *r),
        "Transpose": lambda n, x: np.transpose(x, attr(n, "perm")),
        "Cast": lambda n, x: x.astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[attr(n, "to")]),
        "Equal": lambda n, a, b: np.equal(a, b),
        "Where": lambda n, c, a, b: np.where(c, a, b),
        "Mul": lambda n, a, b: a * b,
    }
    kept, folded = [], 0
    for n in proto.graph.node:
        if n.op_type == "Constant" and attr(n, "value") is not None:
            consts[n.output[0]] = numpy_helper.to_array(attr(n, "value"))
            folded += 1
            continue
        inputs = [i for i in n.input if i]
        if n.op_type in evaluators and all(i in consts for i in inputs):
            consts[n.output[0]] = np.asarray(evaluators[n.op_type](n, *[consts[i] for i in inputs]))
            folded += 1
            continue
        kept.append(n)
    used = {i for n in kept for i in n.input} | {o.name for o in proto.graph.output}
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(initializers)
    return folded


def model_seed(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


@torch.no_grad()
def randomize_norms(model):
    """Random affine params for every norm layer, random running stats for every BatchNorm.

    Uses the global torch generator, which the caller has seeded.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
        elif isinstance(m, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)):
            weight = getattr(m, "weight", None)
            if weight is not None:
                weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)


@torch.no_grad()
def normalize_weight_scales(model, calib):
    """Rescales each Conv2d / Linear (weight and bias) by a power of two so that its output
    has a standard deviation in [0.71, 1.41] on the calibration batch (an LSUV-style
    data-dependent init, Mishkin & Matas 2016, done in one forward pass: layers run in
    order and each hook rescales its output, so later layers see the corrected input).

    Without it the random BN running stats and the inputs do not match: torchvision's
    kaiming fan_out init counts a depthwise 3x3 conv's fan_out as C*9 instead of 9, so
    every non-residual MobileNetV2 block shrinks the input-dependent signal ~10x and the
    output is set by the BN biases alone (outputs for different inputs agreed to 1e-8);
    resnet50's residual sums grow to output std ~27. Powers of two keep the random weights
    exact and make the scales insensitive to last-bit differences in the std.
    """
    def hook(module, _inputs, output):
        std = float(output.double().std())
        if not np.isfinite(std) or std == 0.0:
            return None
        scale = 2.0 ** -round(np.log2(std))
        module.weight.mul_(scale)
        if module.bias is not None:
            module.bias.mul_(scale)
        return output * scale

    handles = [m.register_forward_hook(hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model(calib)
    finally:
        for h in handles:
            h.remove()


def build(name):
    ctor, opset, chw = MODELS[name][:3]
    seed = model_seed(name.split("_op")[0])  # exports of one module at several opsets share weights
    torch.manual_seed(seed)
    model = ctor()
    randomize_norms(model)
    model.eval()
    rng = np.random.default_rng(seed)
    normalize_weight_scales(model, torch.from_numpy(rng.standard_normal((2,) + chw, dtype=np.float32)))
    inputs = {b: rng.standard_normal((b,) + chw, dtype=np.float32) for b in (1, 3)}
    if len(MODELS[name]) > 3:
        chw2 = MODELS[name][3]
        inputs.update({f"hw2_b{b}": rng.standard_normal((b,) + chw2, dtype=np.float32) for b in (1, 3)})
    return model, opset, chw, inputs


def export_one(name, out_dir):
    t0 = time.perf_counter()
    model, opset, chw, inputs = build(name)
    model_dir = os.path.join(out_dir, name)
    os.makedirs(model_dir, exist_ok=True)

    outputs = {}
    with torch.no_grad():
        for b, x in inputs.items():
            y = model(torch.from_numpy(x)).numpy().astype(np.float32)
            if not np.all(np.isfinite(y)):
                raise RuntimeError(f"{name}: non-finite PyTorch output at batch {b}")
            outputs[b] = y
            suffix = b if isinstance(b, str) else f"b{b}"
            np.save(os.path.join(model_dir, f"input_{suffix}.npy"), np.ascontiguousarray(x))
            np.save(os.path.join(model_dir, f"output_{suffix}.npy"), np.ascontiguousarray(y))

    dynamic_hw = len(MODELS[name]) > 3
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    out_axes = {0: "batch", 2: "out_height", 3: "out_width"} if dynamic_hw else {0: "batch"}
    path = os.path.join(model_dir, "model.onnx")
    with warnings.catch_warnings():
        # PRESERVE + constant folding warns about training-mode exports; the module is in
        # eval mode, so BN running stats are plain initializers and folding cannot touch them.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, torch.from_numpy(inputs[1]), path,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": axes, "output": out_axes},
            do_constant_folding=True, opset_version=opset,
            training=torch.onnx.TrainingMode.PRESERVE)

    proto = onnx.load(path)
    if name in PREFOLD_CONSTANTS:
        fold_constant_chains(proto)
        onnx.save(proto, path)
    onnx.checker.check_model(proto, full_check=True)
    op_types = sorted({n.op_type for n in proto.graph.node})
    out_std = float(outputs[3].std())
    entry = {
        "name": name,
        "opset": opset,
        "input_shape": [1] + list(chw),
        "output_shape": list(outputs[1].shape),
        "output_std": out_std,
        # Std over the batch of 3 (averaged over output elements): how much the output
        # depends on the input. Global pooling of i.i.d. noise makes it small, so a test
        # whose tolerance is far above it cannot tell a batch-mixing bug from a pass.
        "output_std_across_batch": float(outputs[3].std(axis=0).mean()),
        "op_types": op_types,
    }
    if dynamic_hw:
        entry["second_input_shape"] = [1] + list(MODELS[name][3])
    size_mb = os.path.getsize(path) / 1e6
    print(f"{name:20s} opset {opset:2d} in {entry['input_shape']} out {entry['output_shape']} "
          f"std {out_std:.4g} (across batch {entry['output_std_across_batch']:.3g}) |max| {float(np.abs(outputs[3]).max()):.4g} "
          f"{len(proto.graph.node)} nodes {size_mb:.1f} MB {time.perf_counter() - t0:.1f}s "
          f"ops {','.join(op_types)}", flush=True)
    return entry


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)

    names = [n for n in args.only.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    entries = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            entries = {e["name"]: e for e in json.load(f)}

    t0 = time.perf_counter()
    for name in names:
        entries[name] = export_one(name, args.out)

    ordered = [entries[n] for n in MODELS if n in entries]
    with open(manifest_path, "w") as f:
        json.dump(ordered, f, indent=2)
        f.write("\n")
    print(f"exported {len(names)} model(s) to {args.out} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
