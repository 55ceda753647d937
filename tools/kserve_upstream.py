#!/usr/bin/env python3
"""A real KServe v2 model server (the `kserve` package's ModelServer) wrapping onnxruntime,
used as an edge node's `kind = "kserve"` upstream by edge-node/tests/all/kserve_upstream.rs.

    kserve_upstream.py MODEL.onnx PORT [NAME]

Serves MODEL.onnx as NAME (default `central`) on http://127.0.0.1:PORT with the Open
Inference Protocol: `POST /v2/models/NAME/infer`, `GET /v2/health/ready`. gRPC is off.

What the edge escalates is its client's request as it came in, so the model takes what a
client sends the node: one UINT8 tensor of 784 pixels (`[28, 28]`, `[1, 28, 28]` or `[784]`),
scaled to pixel/255 as the mnist-classifier plugin does, or FP32 already shaped like the
model's input. It answers the raw model output, `logits` FP32 [N, 10], as any KServe
predictor would, and says so in its model metadata (`GET /v2/models/NAME`), as Triton does:
the node checks its route's `from_upstream` mapping against that at start.

Prints one line `kserve_upstream: loaded ...` once the model is loaded; the server accepts
requests shortly after, which `GET /v2/health/ready` tells.
"""

import sys

import numpy as np
import onnxruntime as ort
import uvicorn

# kserve's REST server binds 0.0.0.0 with no option to change it; a test server has no
# business on other interfaces, so every uvicorn config in this process binds loopback.
_uvicorn_config_init = uvicorn.Config.__init__


def _loopback_config_init(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _uvicorn_config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config_init

# kserve parses sys.argv when imported: hide ours from it.
_argv, sys.argv = sys.argv, sys.argv[:1]
import kserve  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402

sys.argv = _argv


class OnnxModel(kserve.Model):
    """An ONNX model run by onnxruntime on one thread, like the node's tract backend."""

    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.session = None
        self.input_name = ""
        self.output_name = ""

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True
        return self.ready

    def _model_input(self, request: InferRequest) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InvalidInput(f"expected one input tensor, got {len(request.inputs)}")
        tensor = request.inputs[0]
        values = tensor.as_numpy()
        if tensor.datatype == "UINT8":
            if values.size != 784:
                raise InvalidInput(f"input `{tensor.name}`: expected 784 pixels, got {values.size}")
            return (values.astype(np.float32) / 255.0).reshape(1, 1, 28, 28)
        if tensor.datatype == "FP32" and values.ndim == 4 and values.shape[1:] == (1, 28, 28):
            return values.astype(np.float32)
        raise InvalidInput(
            f"input `{tensor.name}`: expected UINT8 pixels or FP32 [N, 1, 28, 28], "
            f"got {tensor.datatype} {list(values.shape)}"
        )

    def get_input_types(self) -> list:
        return [{"name": "image", "datatype": "UINT8", "shape": [28, 28]}]

    def get_output_types(self) -> list:
        dims = [d if isinstance(d, int) else -1 for d in self.session.get_outputs()[0].shape]
        return [{"name": self.output_name, "datatype": "FP32", "shape": dims}]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = self._model_input(payload)
        logits = self.session.run([self.output_name], {self.input_name: x})[0]
        output = InferOutput(
            name=self.output_name,
            shape=list(logits.shape),
            datatype="FP32",
            data=logits.reshape(-1).tolist(),
        )
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[output])


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: kserve_upstream.py MODEL.onnx PORT [NAME]")
    path, port = sys.argv[1], int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) == 4 else "central"
    model = OnnxModel(name, path)
    model.load()
    print(f"kserve_upstream: loaded {path} as `{name}`, serving on http://127.0.0.1:{port}", flush=True)
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
