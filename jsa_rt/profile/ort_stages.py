"""Per-stage times inside an onnxruntime session, from its own node profiler.

The ONNX exporter (torch dynamo) writes each node's module path into its metadata
(`pkg.torch.onnx.name_scopes`, `pkg.torch.onnx.stack_trace`), so every node can be assigned to a
model stage. onnxruntime's optimiser adds and fuses nodes; those take the stage of the node that
feeds them. A profiled session then reports each node's kernel time per run: summed per stage,
one sample per run. Profiling slows the run down (measured on the 2-core dev CPU with the edge
model: 9.1 ms un-profiled, 13.0 ms per profiled run, 11.2 ms of kernel time in it), so the
stage sums are kernel times of a slower session: they can exceed the backend's un-profiled
`total`. `ort_profile` also returns each profiled run's length, so reports can say by how much.
"""
from __future__ import annotations

import ast
import json
import os
import tempfile
import time

import numpy as np

# module scope prefix (as the exporter's wrappers name them) -> stage
SCOPE_STAGES = (("model.frame_preprocess", "preprocess"), ("model.frontend", "audio_frontend"),
                ("model.audio_encoder", "audio_encoder"), ("model.image_encoder", "image_encoder"),
                ("model.slots", "slot_attention"))


def node_stage(node) -> str | None:
    """The stage of an exported node from its module scope; "" for top-level code (the maps),
    None without exporter metadata."""
    meta = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" not in meta:
        return None
    try:
        scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])
    except (ValueError, SyntaxError):
        return None
    for scope in scopes:
        for prefix, stage in SCOPE_STAGES:
            if scope == prefix or scope.startswith(prefix + "."):
                return stage
    return ""


def _image_size(graph) -> int | None:
    """S of the (B, S, S, 3) uint8 frame input."""
    for inp in graph.input:
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        if inp.type.tensor_type.elem_type == 2 and len(dims) == 4:      # 2 = uint8
            return dims[1] or None
    return None


def exported_stages(graph) -> dict[str, str]:
    """Node name -> stage for an exported graph. Top-level code is `visual_branch`'s: upsampling
    (maps.fuse: a Resize, or matmuls with a fixed bicubic matrix) and everything computed from
    it is "upsample", recognised by image-sized tensors (S or S*S, S = the frame's size); the
    rest (sharpened maps, normalised slots, confidence) is "maps_fusion"."""
    size = _image_size(graph)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.output)}
    image_sized = {t for t, dims in shapes.items() if size and (size in dims or size * size in dims)}
    stages, tensor_stage = {}, {}
    for node in graph.node:                       # topologically sorted
        stage = node_stage(node)
        if stage == "":
            upstream = {tensor_stage.get(t) for t in node.input}
            resized = node.op_type == "Resize" or any(t in image_sized for t in node.output)
            stage = "upsample" if resized or "upsample" in upstream else "maps_fusion"
        if stage is not None:
            stages[node.name] = stage
            for t in node.output:
                tensor_stage[t] = stage
    return stages


def _stages_of_optimized(original, optimized) -> dict[str, str]:
    """Node name -> stage in onnxruntime's optimised graph. Fused nodes keep the original name
    before a '/' (`node_MatMul_284/MatMulAddFusion`) or are named after the tensor they compute
    (`relu_9_nchwc`); layout reorders and the like inherit the stage of their input."""
    known = exported_stages(original.graph)
    by_tensor = {t: known[n.name] for n in original.graph.node if n.name in known for t in n.output}
    producer_stage: dict[str, str] = {}
    stages = {}
    for node in optimized.graph.node:             # topologically sorted
        base = node.name.split("/")[0]
        stage = known.get(node.name) or known.get(base) or by_tensor.get(
            base[: -len("_nchwc")] if base.endswith("_nchwc") else base)
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
    return ort_profile(onnx_path, frame, audio, warmup, iterations, threads)[0]


def ort_profile(onnx_path: str, frame: np.ndarray, audio: np.ndarray, warmup: int,
                iterations: int, threads: int | None = None) -> tuple[dict[str, list[float]], list[float]]:
    """({stage: [kernel ms per run]}, [ms of each profiled run]) for `iterations` profiled runs
    of the full graph on CPU (({}, []) without exporter metadata)."""
    import onnx
    import onnxruntime as ort

    original = onnx.load(onnx_path)
    if not exported_stages(original.graph):
        return {}, []                              # no exporter metadata: stages unknown
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3             # quiet: saving an NCHWc-optimised graph warns
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
    return _per_run_sums(events, stages, skip=warmup), _run_lengths(events, skip=warmup)


def _run_lengths(events: list, skip: int) -> list[float]:
    """ms of each profiled `model_run`, the first `skip` (warm-up) left out."""
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")
    return [dur / 1e3 for _, dur in runs[skip:]]


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


def ort_matmul_gflops(n: int, repeats: int, threads: int) -> float | None:
    """fp32 GEMM throughput of onnxruntime's own kernels (MLAS), one n x n MatMul graph: its
    convolutions can beat numpy's and torch's GEMM, so the machine's peak includes it."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    feeds = {"a": a, "b": a}
    session.run(None, feeds)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9
