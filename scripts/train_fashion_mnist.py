#!/usr/bin/python3
"""Trains fashion_bn_cnn, the default repository's real model, on Fashion-MNIST.

Usage: /usr/bin/python3 scripts/train_fashion_mnist.py [--data DIR] [--models models]

Data: the idx files of Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist),
read with numpy; nothing is downloaded.

Preprocessing (what a client must send): float32 tensor [N,1,28,28], C order, pixel / 255,
so values lie in [0, 1] with 0 = black background. There is deliberately no mean/std
normalization: a brightness or contrast shift applied to the pixels reaches the first conv
unchanged, and the BN statistics it disturbs are the network's own.

Network: 6 BatchNorm layers, the last a BatchNorm1d on the [N,64] output of a Linear.
    conv(1->16)+BN+ReLU, conv(16->16)+BN+ReLU, maxpool 2,
    conv(16->32)+BN+ReLU, conv(32->32)+BN+ReLU, maxpool 2,
    conv(32->64)+BN+ReLU, global avg pool, flatten,
    Linear(64,64)+BatchNorm1d(64)+ReLU, Linear(64,10) -> logits (no softmax).
All convs are 3x3, padding 1, no bias (BN follows). Adam lr 1e-3, batch 64, 2 epochs,
seed 0, 2 threads.

Writes <models>/repository/fashion_bn_cnn/1/model.onnx (opset 13, dynamic batch, BN kept
as BatchNormalization nodes), <models>/repository/fashion_bn_cnn/config.json and the
PyTorch state_dict <models>/fashion_bn_cnn.pt (for float64 oracles).
"""

import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_default_repository import REPO_ROOT, export_to_repository  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path):
    """Reads an idx file (gzipped or not): big-endian magic 0x0000TTNN, NN int32 dims."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # type byte 0x08: unsigned byte
        raise ValueError(f"{path}: magic {magic:#010x}, expected 0x000008NN (uint8 idx)")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {array.size} values for dims {dims}")
    return array.reshape(dims)


def find_idx(data_dir, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{stem}[.gz] not in {data_dir} (apt install dataset-fashion-mnist)")


def load_split(data_dir, prefix):
    """Returns (images float32 [N,1,28,28] = pixel/255, labels int64 [N])."""
    images = read_idx(find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def fashion_bn_cnn():
    return nn.Sequential(
        *conv_bn(1, 16), *conv_bn(16, 16), nn.MaxPool2d(2),
        *conv_bn(16, 32), *conv_bn(32, 32), nn.MaxPool2d(2),
        *conv_bn(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
        nn.Linear(64, 10))


@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA_DIR, help="directory with the idx files")
    parser.add_argument("--models", default=os.path.join(REPO_ROOT, "models"),
                        help="models/ directory to write into")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "t10k")
    print(f"data: train {tuple(x_train.shape)}, test {tuple(x_test.shape)} "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)

    model = fashion_bn_cnn()
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert n_bn == 6, n_bn
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    shuffle = torch.Generator().manual_seed(args.seed)
    batch = 64
    t_train = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        total_loss = 0.0
        # drop_last: a final batch of 1 would make BatchNorm1d's batch variance undefined.
        n_batches = len(order) // batch
        for i in range(n_batches):
            idx = order[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        print(f"epoch {epoch + 1}: loss {total_loss / n_batches:.4f}, "
              f"test accuracy {accuracy(model, x_test, y_test):.4f} "
              f"({time.perf_counter() - t_train:.1f}s)", flush=True)
    train_seconds = time.perf_counter() - t_train

    model.eval()
    test_acc = accuracy(model, x_test, y_test)
    os.makedirs(args.models, exist_ok=True)
    pt_path = os.path.join(args.models, "fashion_bn_cnn.pt")
    torch.save(model.state_dict(), pt_path)
    onnx_path = export_to_repository(model, (1, 28, 28), os.path.join(args.models, "repository"),
                                     "fashion_bn_cnn", opset=13, max_batch_size=64, labels=LABELS)
    print(f"test accuracy (eval mode, running BN stats) {test_acc:.4f}; training {train_seconds:.1f}s,"
          f" total {time.perf_counter() - t0:.1f}s")
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes), {pt_path} "
          f"({os.path.getsize(pt_path)} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
