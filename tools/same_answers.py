"""Checks that two nodes give the same answers to the same digits (tools/cross.sh).

    same_answers.py URL_A URL_B N [MODELS_DIR]

Sends the first N test images of MODELS_DIR/data (default: models/data beside this file)
to route `digits` of both nodes (KServe v2, JSON), one at a time, and compares the
`probabilities` each answers: the same digit (argmax) every time, and every probability
within 1e-5 of the other node's. Two builds of one model on different CPUs may round
differently in the last bits (fused multiply-add, vector widths); they may not disagree.

Prints one JSON object (images, same_digit, max_abs_diff) and exits 1 if the answers
differ, 2 if a node does not answer. Standard library only.
"""

import json
import pathlib
import struct
import sys
import urllib.request

TOLERANCE = 1e-5


def images(models_dir, n):
    data = (pathlib.Path(models_dir) / "data" / "test-images.idx3-ubyte").read_bytes()
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051 or (rows, cols) != (28, 28):
        sys.exit(f"{models_dir}/data/test-images.idx3-ubyte is not a 28x28 idx3 file")
    size = rows * cols
    return [list(data[16 + i * size : 16 + (i + 1) * size]) for i in range(min(n, count))]


def probabilities(url, i, pixels):
    body = {"id": f"img-{i}", "inputs": [{"name": "image", "shape": [28, 28], "datatype": "UINT8", "data": pixels}]}
    request = urllib.request.Request(
        f"{url}/v2/models/digits/infer",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    except Exception as e:  # noqa: BLE001 - any failure to answer ends the check
        print(f"{url} did not answer image {i}: {e}", file=sys.stderr)
        sys.exit(2)
    outputs = {o["name"]: o for o in answer["outputs"]}
    return outputs["probabilities"]["data"]


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    url_a, url_b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    models_dir = sys.argv[4] if len(sys.argv) == 5 else pathlib.Path(__file__).parent.parent / "models"
    same_digit, max_diff = 0, 0.0
    batch = images(models_dir, n)
    for i, pixels in enumerate(batch):
        a, b = probabilities(url_a, i, pixels), probabilities(url_b, i, pixels)
        if len(a) != len(b):
            print(f"image {i}: {len(a)} probabilities from {url_a}, {len(b)} from {url_b}", file=sys.stderr)
            sys.exit(1)
        same_digit += a.index(max(a)) == b.index(max(b))
        max_diff = max([max_diff] + [abs(x - y) for x, y in zip(a, b)])
    print(json.dumps({"images": len(batch), "same_digit": same_digit, "max_abs_diff": max_diff}))
    if same_digit != len(batch) or max_diff > TOLERANCE:
        print(f"the nodes disagree (tolerance {TOLERANCE})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
