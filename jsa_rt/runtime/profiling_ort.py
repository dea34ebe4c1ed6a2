"""Per-stage times inside an onnxruntime session, from its own node profiler.

The ONNX exporter (torch dynamo) writes each node's module path into its metadata
(`pkg.torch.onnx.name_scopes`, `pkg.torch.onnx.stack_trace`), so every node can be assigned to a
model stage. onnxruntime's optimiser adds and fuses nodes; those take the stage of the node that
feeds them. A profiled session then reports each node's kernel time per run: summed per stage,
one sample per run. The profiler's own overhead sits between kernels, not in them, so stage
sums are slightly below the un-profiled `total` of the backend.
"""
from __future__ import annotations

import ast
import json
import os
import tempfile

import numpy as np

# module scope prefix (as the exporter's wrappers name them) -> stage
SCOPE_STAGES = (("preprocess", "preprocess"), ("model.frontend", "audio_frontend"),
                ("model.audio_encoder", "audio_encoder"), ("model.image_encoder", "image_encoder"),
                ("model.slots", "slot_attention"))


def node_stage(node) -> str | None:
    """The model stage an exported ONNX node belongs to, from its metadata (None: unknown)."""
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        scopes = []
    for scope in scopes:
        for prefix, stage in SCOPE_STAGES:
            if scope == prefix or scope.startswith(prefix + "."):
                return stage
    trace = meta.get("pkg.torch.onnx.stack_trace", "")
    if not trace:
        return None
    # top-level code of visual_branch: maps.py does upsampling, min-max and the IQR blend
    return "upsample" if "maps.py" in trace else "maps_fusion"


def _stages_of_optimized(original, optimized) -> dict[str, str]:
    """Node name -> stage in the optimised graph; nodes onnxruntime made inherit from inputs."""
    known = {n.name: node_stage(n) for n in original.graph.node}
    producer_stage: dict[str, str] = {}
    stages = {}
    for node in optimized.graph.node:              # topologically sorted
        stage = known.get(node.name)
        if stage is None:
            stage = next((producer_stage[t] for t in node.input if t in producer_stage), "other")
        stages[node.name] = stage
        for t in node.output:
            producer_stage[t] = stage
    return stages


def _feeds(session, frame: np.ndarray, audio: np.ndarray) -> dict:
    """Match inputs by type: the uint8 one is the frame, the float one the waveform."""
    feeds = {}
    for inp in session.get_inputs():
        feeds[inp.name] = frame[None] if "uint8" in inp.type else audio[None].astype(np.float32)
    return feeds


def ort_stage_samples(onnx_path: str, frame: np.ndarray, audio: np.ndarray, warmup: int,
                      iterations: int, threads: int | None = None) -> dict[str, list[float]]:
    """{stage: [ms per run]} for `iterations` profiled runs of the full graph on CPU."""
    import onnx
    import onnxruntime as ort

    original = onnx.load(onnx_path)
    if not any(node_stage(n) for n in original.graph.node):
        return {}                                  # no exporter metadata: stages unknown
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort_profile")
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        stages = _stages_of_optimized(original, onnx.load(options.optimized_model_filepath,
                                                          load_external_data=False))
        feeds = _feeds(session, frame, audio)
        for _ in range(warmup + iterations):
            session.run(None, feeds)
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    return _per_run_sums(events, stages, skip=warmup)


def _per_run_sums(events: list, stages: dict[str, str], skip: int) -> dict[str, list[float]]:
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    names = sorted({stages.get(e["name"][: -len("_kernel_time")], "other") for e in nodes})
    sums = np.zeros((len(runs), len(names)))
    starts = np.array([r[0] for r in runs])
    for e in nodes:
        run = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if run >= 0 and e["ts"] <= runs[run][1]:
            stage = stages.get(e["name"][: -len("_kernel_time")], "other")
            sums[run, names.index(stage)] += e["dur"] / 1e3
    return {name: sums[skip:, i].tolist() for i, name in enumerate(names)}
