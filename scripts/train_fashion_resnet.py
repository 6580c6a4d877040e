#!/usr/bin/python3
"""Trains fashion_bn_resnet, a small BN ResNet on Fashion-MNIST: the reduced-precision tests' second model.

Usage: /usr/bin/python3 scripts/train_fashion_resnet.py --models DIR [--data DIR] [--if_stale]

Not committed: the bf16 and int8 Fashion-MNIST accuracy tests (tests/kernels) generate it into
the source tree's .cache/ (CMake NORMSERVE_MODEL_CACHE) through a CTest fixture, and
--if_stale makes that a cache: nothing is done when DIR already holds a complete run that is
newer than this script and the helpers it imports.

Data and preprocessing are fashion_bn_cnn's (scripts/train_fashion_mnist.py): Debian's
dataset-fashion-mnist idx files, float32 [N,1,28,28] = pixel / 255, no mean/std, so the
recalibration experiment's shifted test sets (scripts/export_fashion_test_sets.py) apply as is.

Network (9 BatchNorm layers, residual sums, downsampling shortcuts):
    stem   conv3x3(1->16)+BN+ReLU                                28x28
    stage1 BasicBlock(16->16)                                    28x28
    stage2 BasicBlock(16->32, stride 2, shortcut conv1x1+BN)     14x14
    stage3 BasicBlock(32->64, stride 2, shortcut conv1x1+BN)      7x7
    global avg pool, flatten, Linear(64,10) -> logits
BasicBlock: conv3x3(stride)+BN+ReLU, conv3x3+BN, + shortcut, ReLU. Convs have no bias (BN
follows). Adam lr 2e-3 with cosine decay to 0, batch 128, 2 epochs, seed 0, 2 threads,
torch.use_deterministic_algorithms: the same host gives the same weights run after run.

Writes DIR/repository/fashion_bn_resnet/1/model.onnx (opset 13, dynamic batch, BN kept as
BatchNormalization nodes), DIR/repository/fashion_bn_resnet/config.json, the state_dict
DIR/fashion_bn_resnet.pt and, last, DIR/fashion_bn_resnet_accuracy.npy (float32 [1]: PyTorch's
eval-mode test accuracy, the oracle the C++ tests compare normserve's fp32 against; its
presence marks a complete run).
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_default_repository  # noqa: E402
import train_fashion_mnist  # noqa: E402

NAME = "fashion_bn_resnet"
ACCURACY_FILE = NAME + "_accuracy.npy"
# A change to any of these invalidates a cached run.
SOURCES = (os.path.abspath(__file__), os.path.abspath(train_fashion_mnist.__file__),
           os.path.abspath(make_default_repository.__file__))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def fashion_bn_resnet(widths=(16, 32, 64)):
    w1, w2, w3 = widths
    return nn.Sequential(
        nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),
        BasicBlock(w1, w1, 1), BasicBlock(w1, w2, 2), BasicBlock(w2, w3, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, 10))


def up_to_date(models):
    """True when models holds a complete run newer than every source it depends on."""
    stamp = os.path.join(models, ACCURACY_FILE)
    onnx_path = os.path.join(models, "repository", NAME, "1", "model.onnx")
    if not (os.path.exists(stamp) and os.path.exists(onnx_path)):
        return False
    return os.path.getmtime(stamp) >= max(os.path.getmtime(s) for s in SOURCES)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", required=True,
                        help="directory to write into (repository/, .pt, accuracy)")
    parser.add_argument("--data", default=train_fashion_mnist.DATA_DIR,
                        help="directory with the idx files")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--if_stale", action="store_true",
                        help="do nothing when --models holds a complete run newer than the sources")
    args = parser.parse_args(argv)
    if args.if_stale and up_to_date(args.models):
        print(f"{args.models}: {NAME} is up to date, not retraining")
        return
    stamp = os.path.join(args.models, ACCURACY_FILE)
    if os.path.exists(stamp):
        os.remove(stamp)  # a run killed below leaves no complete-looking output

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    x_train, y_train = train_fashion_mnist.load_split(args.data, "train")
    x_test, y_test = train_fashion_mnist.load_split(args.data, "t10k")
    print(f"data: train {tuple(x_train.shape)}, test {tuple(x_test.shape)} "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)

    model = fashion_bn_resnet()
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert n_bn == 9, n_bn
    batch = 128
    n_batches = len(x_train) // batch  # drop_last: equal batches, equal BN statistics noise
    steps = args.epochs * n_batches
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    shuffle = torch.Generator().manual_seed(args.seed)
    t_train = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        total_loss = 0.0
        for i in range(n_batches):
            idx = order[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
        print(f"epoch {epoch + 1}: loss {total_loss / n_batches:.4f}, test accuracy "
              f"{train_fashion_mnist.accuracy(model, x_test, y_test):.4f} "
              f"({time.perf_counter() - t_train:.1f}s)", flush=True)
    train_seconds = time.perf_counter() - t_train

    model.eval()
    test_acc = train_fashion_mnist.accuracy(model, x_test, y_test)
    os.makedirs(args.models, exist_ok=True)
    pt_path = os.path.join(args.models, NAME + ".pt")
    torch.save(model.state_dict(), pt_path)
    onnx_path = make_default_repository.export_to_repository(
        model, (1, 28, 28), os.path.join(args.models, "repository"), NAME, opset=13,
        max_batch_size=64, labels=train_fashion_mnist.LABELS)
    np.save(stamp, np.array([test_acc], dtype=np.float32))
    print(f"test accuracy (eval mode, running BN stats) {test_acc:.4f}; training "
          f"{train_seconds:.1f}s, total {time.perf_counter() - t0:.1f}s")
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes), {pt_path}, {stamp}")


if __name__ == "__main__":
    main(sys.argv[1:])
