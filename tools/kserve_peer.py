#!/usr/bin/env python3
"""The Python peer for `edge-node bench edge`: a model served by onnxruntime behind a
Python ASGI server (starlette on uvicorn), speaking the same KServe v2 JSON as the edge node.

    kserve_peer.py MODEL.onnx PORT [--exit-with-parent]

Binds 127.0.0.1 only. `POST /v2/models/digits/infer` takes one UINT8 [28, 28] image (the
node's request body) and answers the softmax of the logits as `probabilities` FP32 [1, 10],
as the mnist-classifier plugin does. `GET /v2/health/ready` answers 200 once the model is
loaded. onnxruntime runs on one thread, like the node's tract backend per request.
With `--exit-with-parent` the server exits once its standard input closes, as it does when
the bench that started it (holding the pipe's other end) ends, however it ends.
"""

import os
import sys
import threading

import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def make_app(model_path: str) -> Starlette:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def bad(message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=400)

    async def infer(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return bad("body: not JSON")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            return bad("inputs: expected one tensor")
        tensor = inputs[0]
        if tensor.get("datatype") != "UINT8" or tensor.get("shape") != [28, 28]:
            return bad("inputs[0]: expected UINT8 [28, 28]")
        try:
            pixels = np.asarray(tensor.get("data"), dtype=np.uint8)
        except (TypeError, ValueError, OverflowError):
            return bad("inputs[0].data: expected 784 bytes")
        if pixels.size != 784:
            return bad("inputs[0].data: expected 784 bytes")
        x = (pixels.astype(np.float32) / 255.0).reshape(1, 1, 28, 28)
        logits = session.run(None, {input_name: x})[0][0]
        exp = np.exp(logits - logits.max())
        probs = exp / exp.sum()
        reply = {
            "model_name": "digits",
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "data": probs.tolist()}
            ],
            "parameters": {"confidence": float(probs.max()), "label": str(int(probs.argmax()))},
        }
        if "id" in body:
            reply["id"] = body["id"]
        return JSONResponse(reply)

    async def ready(_: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/v2/models/digits/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready, methods=["GET"]),
        ]
    )


def main() -> None:
    args = sys.argv[1:]
    exit_with_parent = "--exit-with-parent" in args
    args = [a for a in args if a != "--exit-with-parent"]
    if len(args) != 2:
        sys.exit("usage: kserve_peer.py MODEL.onnx PORT [--exit-with-parent]")
    if exit_with_parent:
        threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    app = make_app(args[0])
    # One process, one event loop: the usual single-worker deployment of such a server.
    uvicorn.run(app, host="127.0.0.1", port=int(args[1]), log_level="warning", access_log=False)


def exit_when_stdin_closes():
    while sys.stdin.buffer.read(256):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
