"""Store an fp32 ONNX graph's large weights as fp16 + a Cast back to fp32.

Compute stays fp32 (onnxruntime folds the casts when it loads the graph); the file halves.
Only tensors that fp16 represents exactly are converted (the shipped models' weights were
stored as fp16, so they all are; derived constants such as the DFT basis are not), so the
graph computes exactly what it did before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def store_weights_fp16(path: str | Path, min_elements: int = 1024) -> tuple[int, int]:
    """Rewrite `path` in place (atomically); returns (bytes before, bytes after)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    before = path.stat().st_size
    model = onnx.load(str(path))
    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init) if init.data_type == TensorProto.FLOAT else None
        if (values is not None and values.size >= min_elements
                and np.array_equal(values.astype(np.float16).astype(np.float32), values)):
            half = numpy_helper.from_array(values.astype(np.float16), init.name + "_fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "_to_fp32"))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)          # casts first: nodes stay topologically sorted
    onnx.checker.check_model(model)
    from ..atomic import atomic_path
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return before, path.stat().st_size
