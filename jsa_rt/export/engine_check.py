"""A freshly built TensorRT plan against onnxruntime on the same fixed inputs (what
`build-engine` writes into the sidecar): comparing an engine with its reference is its own
step, apart from the runtime that runs engines.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..runtime.cuda_mem import open_cuda
from ..runtime.ort_backend import run_onnx
from ..runtime.trt_backend import TrtEngine, import_tensorrt_runtime
from .onnx_export import example_inputs

TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2}   # max |engine - onnxruntime| per output (TF32 / fp16)


def compare_outputs(reference: dict, candidate: dict, tolerance: float) -> dict:
    """Max |candidate - reference| per output, heatmap peak agreement, pass/fail."""
    errors = {n: float(np.max(np.abs(np.asarray(candidate[n], np.float32)
                                     - np.asarray(reference[n], np.float32))))
              for n in reference}
    result = {"reference": "onnxruntime-cpu", "max_abs_err": errors, "tolerance": tolerance,
              "passed": all(e <= tolerance for e in errors.values())}
    if "heatmap" in reference:
        peak = lambda a: [int(i) for i in np.unravel_index(np.argmax(a[0]), a[0].shape)]
        result["heatmap_peak"] = {"reference": peak(reference["heatmap"]),
                                  "engine": peak(candidate["heatmap"])}
    return result


def validate_against_onnxruntime(plan: Path, onnx_path: Path) -> dict:
    """Run the new engine and onnxruntime on the same fixed inputs; errors go to the sidecar."""
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    cfg = ModelConfig.from_dict(json.loads(meta["jsa_rt.config"]))
    graph = meta.get("jsa_rt.graph", "full")
    feeds = example_inputs(cfg, graph)
    if graph == "visual":           # the audio_query slot count comes from the graph itself
        dims = [d.dim_value for d in onnx.load(str(onnx_path), load_external_data=False)
                .graph.input[1].type.tensor_type.shape.dim]
        feeds = example_inputs(cfg, graph, query_slots=dims[1])
    reference = run_onnx(onnx_path, feeds)
    trt = import_tensorrt_runtime()
    cuda = open_cuda()
    try:
        # the sidecar is written after validation: check the plan itself, not the cache entry
        engine = TrtEngine(plan, trt, cuda, verified=False)
        candidate = engine.infer(feeds)
    finally:
        cuda.close()
    return compare_outputs(reference, candidate, TOLERANCE[meta.get("jsa_rt.precision", "fp32")])
