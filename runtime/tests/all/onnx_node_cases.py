#!/usr/bin/env python3
"""Writes onnx's own backend node test cases for the ops Cascade's backends claim.

The `onnx` wheel ships the cases as Python (onnx/backend/test/case/node/*.py), each a model
with inputs and expected outputs computed by numpy; onnx's `backend-test-tools
generate-data` writes them out. This does the same for the cases whose graphs use only the
claimed ops, in the layout onnx uses:

    OUT/<case>/model.onnx
    OUT/<case>/test_data_set_0/input_<i>.pb, output_<i>.pb   (TensorProto)

Usage: onnx_node_cases.py OUT OP [OP ...]. Prints how many cases it wrote. Writes OUT/done
last, so an interrupted run is redone.
"""
import os
import shutil
import sys

import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases


def main():
    out, ops = sys.argv[1], set(sys.argv[2:])
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    written = 0
    for case in collect_testcases():
        graph = case.model.graph
        if not {n.op_type for n in graph.node} <= ops or not case.data_sets:
            continue
        tensors = all(v.type.HasField("tensor_type") for v in list(graph.input) + list(graph.output))
        if not tensors:
            continue
        case_dir = os.path.join(out, case.name)
        data_dir = os.path.join(case_dir, "test_data_set_0")
        os.makedirs(data_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
            for i, (value, info) in enumerate(zip(values, infos)):
                proto = value if isinstance(value, onnx.TensorProto) else numpy_helper.from_array(value, info.name)
                with open(os.path.join(data_dir, f"{kind}_{i}.pb"), "wb") as f:
                    f.write(proto.SerializeToString())
        written += 1
    with open(os.path.join(out, "done"), "w") as f:
        f.write(f"onnx {onnx.__version__}: {written} cases\n")
    print(written)


if __name__ == "__main__":
    main()
