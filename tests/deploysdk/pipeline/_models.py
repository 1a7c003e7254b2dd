"""Small models for pipeline and service tests: hand-built ONNX graphs whose answer is known in closed form."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def threshold_onnx(path, nd: int = 3, meta=None, *, classifier: bool = False):
    """A 1x1 conv with logits (0.5 - x, x - 0.5): label 1 exactly where the normalised input exceeds 0.5.

    With a window spec (center c, width w) that is where the input exceeds c: the answer of any study is known.
    ``classifier=True`` adds a global average pool and flattens: an (N, 2) output the pipeline must refuse.
    """
    spatial = ["D", "H", "W"][3 - nd:]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1] + spatial)
    w = numpy_helper.from_array(np.array([-1, 1], np.float32).reshape((2, 1) + (1,) * nd), "w")
    b = numpy_helper.from_array(np.array([0.5, -0.5], np.float32), "b")
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["logits"])]
    if classifier:
        nodes += [helper.make_node("GlobalAveragePool", ["logits"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["output"])]
        y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])
    else:
        nodes[0].output[0] = "output"
        y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2] + spatial)
    graph = helper.make_graph(nodes, "threshold", [x], [y], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (meta or {}).items():
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    onnx.save(model, str(path))
    return str(path)


def threshold_model(path, nd: int, spec=None, default_size=None, name: str = "threshold"):
    """``threshold_onnx`` with ``sdk.preprocessing`` (when ``spec``) and an input contract."""
    meta = {"sdk.model_name": name,
            "sdk.input_contract": {"channels": 1, "default_size": list(default_size or (16,) * nd)}}
    if spec is not None:
        meta["sdk.preprocessing"] = spec.to_dict()
    return threshold_onnx(path, nd, meta)


def export_small(model, path, example, preprocessing=None):
    """A zoo model to ONNX with the SDK's metadata, through the TorchScript exporter (seconds, not tens of seconds:
    these tests are about the pipeline, ``deploysdk.export`` has its own). Dynamic batch and spatial dims."""
    import warnings

    import torch

    spatial = {i: f"s{i}" for i in range(2, example.dim())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and constant-folding notes
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N", **spatial}, "output": {0: "N", **spatial}})
    proto = onnx.load(str(path))
    meta = {"sdk.model_name": model.model_name, "sdk.input_contract": json.dumps(model.input_contract())}
    if preprocessing is not None:
        meta["sdk.preprocessing"] = json.dumps(preprocessing.to_dict())
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return str(path)
