"""Static checks of an exported graph: the ops TensorRT 10.3 can parse, the opset, and the fp32
islands of the fp16 graph. Used by the exporter (fail before writing a graph TensorRT would
reject on a Jetson, minutes into a build) and by the tests.
"""
from __future__ import annotations

from collections import Counter

import onnx
from onnx import TensorProto

OPSET_RANGE = (18, 20)        # TensorRT 10.3's parser: opsets 9-20; LayerNormalization needs 17

# Operators our graphs may contain, all in onnx-tensorrt's support matrix for TensorRT 10.x
# (docs/operators.md, 10.0-10.3: opsets 9-20). Deliberately narrower than that matrix: anything
# new in a graph gets looked at before it reaches a Jetson.
TRT_10_3_OPS = frozenset("""
    Abs Add AveragePool BatchNormalization Cast Clip Concat Constant ConstantOfShape Conv Div
    Equal Erf Exp Expand Flatten Gather Gemm GlobalAveragePool Greater HardSigmoid HardSwish
    Identity LayerNormalization Less Log MatMul Max MaxPool Min Mul Neg Pad Pow Range Reciprocal
    ReduceL2 ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape Resize Shape Sigmoid Slice
    Softmax Split Sqrt Squeeze Sub Tanh Tile Transpose Unsqueeze Where
""".split())
# Known trouble, with the reason (some parse on 10.3 but are slow or fragile there)
AVOID = {"Einsum": "use MatMul (Einsum is restricted and slow in TensorRT)",
         "STFT": "TensorRT has no STFT: the spectrogram must be a convolution",
         "DFT": "TensorRT has no DFT", "Loop": "slot iterations must unroll",
         "Scan": "slot iterations must unroll", "If": "no data-dependent control flow",
         "GRU": "TensorRT's GRU op differs from GRUCell; keep it as Gemm/Sigmoid/Tanh"}


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter((n.domain or "", n.op_type) for n in model.graph.node)


def unsupported_ops(model: onnx.ModelProto, plugin_domains=()) -> dict[str, str]:
    """{op: why} for every op outside the TensorRT 10.3 allowlist (custom plugin ops excepted)."""
    bad = {}
    for (domain, op), _ in op_counts(model).items():
        if domain in plugin_domains:
            continue
        if domain not in ("", "ai.onnx") or op not in TRT_10_3_OPS:
            bad[f"{domain}::{op}" if domain else op] = AVOID.get(op, "not in the TensorRT 10.3 allowlist")
    return bad


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor (after shape inference), for precision checks."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def softmax_islands(model: onnx.ModelProto) -> list[dict]:
    """For each Softmax: the dtypes of its input, its output, and of the eps-add / token-sum /
    division that follow it (softmax over slots + eps, renormalised over tokens)."""
    types = tensor_types(model)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    islands = []
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        island = {"softmax": node.name, "input": types.get(node.input[0]),
                  "output": types.get(node.output[0]), "followers": []}
        frontier = [node.output[0]]
        for _ in range(3):                      # Add(eps) -> ReduceSum -> Div
            nxt = []
            for tensor in frontier:
                for c in consumers.get(tensor, []):
                    if c.op_type in ("Add", "ReduceSum", "Div"):
                        island["followers"].append((c.op_type, types.get(c.output[0])))
                        nxt.append(c.output[0])
            frontier = nxt
        islands.append(island)
    return islands


def float_initializer_types(model: onnx.ModelProto) -> Counter:
    """How many weights are fp16 / fp32 (an fp16 graph has mostly fp16 weights)."""
    return Counter(TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer
                   if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16))
