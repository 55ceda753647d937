#!/usr/bin/env python3
"""onnxruntime peer for `edge-node bench backends`.

The bench starts this helper and drives it over stdin/stdout, so both runtimes see the same
models and the same input bytes and can be timed alternately in one run. onnxruntime runs
with one intra-op thread (and one inter-op thread), like tract.

Protocol: each request is one JSON line on stdin, optionally followed by raw bytes; each
reply is one JSON line on stdout.
  {"cmd": "load", "key": K, "path": P}                    -> {"ok": true, "version": V}
  {"cmd": "input", "key": K, "shape": [n, ...], "bytes": B}  then B bytes of little-endian f32
                                                          -> {"ok": true}
  {"cmd": "time", "key": K, "reps": R}                    -> {"ok": true, "us": [R floats],
                                                              "logits": [first output, flat]}
  {"cmd": "quit"}                                         -> exits
Each timing covers one `session.run` call only (no pipe, no JSON), measured with
time.perf_counter_ns. Errors reply {"ok": false, "error": "..."}.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    stdin = sys.stdin.buffer
    out = sys.stdout
    sessions = {}
    inputs = {}

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    while True:
        line = stdin.readline()
        if not line:
            return
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            if cmd == "quit":
                return
            if cmd == "load":
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(req["path"], opts, providers=["CPUExecutionProvider"])
                sessions[req["key"]] = (sess, sess.get_inputs()[0].name)
                reply({"ok": True, "version": ort.__version__})
            elif cmd == "input":
                data = stdin.read(req["bytes"])
                if len(data) != req["bytes"]:
                    raise ValueError("short input")
                inputs[req["key"]] = np.frombuffer(data, dtype="<f4").reshape(req["shape"]).copy()
                reply({"ok": True})
            elif cmd == "time":
                sess, name = sessions[req["key"]]
                feed = {name: inputs[req["key"]]}
                samples = []
                result = None
                for _ in range(int(req["reps"])):
                    start = time.perf_counter_ns()
                    result = sess.run(None, feed)
                    samples.append((time.perf_counter_ns() - start) / 1000.0)
                logits = [] if result is None else result[0].reshape(-1).tolist()
                reply({"ok": True, "us": samples, "logits": logits})
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as e:  # reported to the bench, which stops using the peer
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
