"""Drives a node with KServe's own Python client, as a user's existing code would.

    kserve_client.py BASE_URL ROUTE PIXELS

`kserve.InferenceRESTClient` (Open Inference Protocol v2 over REST) checks the server's
liveness and readiness and the route's readiness, then sends the 28x28 UINT8 image PIXELS
(784 comma-separated integers) three ways:

- `binary`: the client's defaults: the input as binary tensor data after the JSON header,
  every output asked for as binary data too (`binary_data_output`);
- `json`: the input as JSON numbers (`binary_data=False`), outputs as JSON;
- `named`: JSON input, only the first output, asked for by name as binary data
  (`RequestedOutput`).

Prints one JSON object: the health answers and, for each way, the outputs as the client
decoded them (name, datatype, shape, values) and the response's parameters. Exits non-zero,
with the client's error, if any call fails.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def decoded(response):
    return {
        "outputs": [
            {
                "name": o.name,
                "datatype": o.datatype,
                "shape": list(o.shape),
                "values": o.as_numpy().flatten().tolist(),
            }
            for o in response.outputs
        ],
        "parameters": response.parameters,
    }


async def main(base_url, route, pixels):
    image = np.array(pixels, dtype=np.uint8).reshape(28, 28)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    try:
        result = {
            "live": await client.is_server_live(base_url),
            "ready": await client.is_server_ready(base_url),
            "model_ready": await client.is_model_ready(base_url, route),
        }

        binary_input = InferInput(name="image", shape=[28, 28], datatype="UINT8")
        binary_input.set_data_from_numpy(image)  # binary_data=True, the default
        request = InferRequest(
            model_name=route,
            infer_inputs=[binary_input],
            request_id="binary",
            parameters={"binary_data_output": True},
        )
        result["binary"] = decoded(await client.infer(base_url, request, model_name=route))

        json_input = InferInput(name="image", shape=[28, 28], datatype="UINT8")
        json_input.set_data_from_numpy(image, binary_data=False)
        request = InferRequest(model_name=route, infer_inputs=[json_input], request_id="json")
        answer = await client.infer(base_url, request, model_name=route)
        result["json"] = decoded(answer)

        first = answer.outputs[0].name
        request = InferRequest(
            model_name=route,
            infer_inputs=[json_input],
            request_id="named",
            request_outputs=[RequestedOutput(first, parameters={"binary_data": True})],
        )
        result["named"] = decoded(await client.infer(base_url, request, model_name=route))
    finally:
        await client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    pixels = [int(p) for p in sys.argv[3].split(",")]
    asyncio.run(main(sys.argv[1], sys.argv[2], pixels))
