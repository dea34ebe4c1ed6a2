"""TensorRT backend: plans built by `jsa-rt build-engine`, run through the TensorRT 10/11 runtime
API (deserialize_cuda_engine, create_execution_context, set_input_shape, set_tensor_address,
execute_async_v3). Device buffers, pinned host buffers and the stream come from cuda_mem
(pycuda in the primary context, else cuda-python, else torch). Optional CUDA graph: the
enqueue is captured once and replayed per call (copies stay outside the graph).

Never imports torch (unless torch is the only CUDA provider left). Never run on the machines
jsa-rt is developed on: this is a thin layer over the documented API; tools/validate_trt.sh
checks it where TensorRT exists. All calls must come from the thread that created the backend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import EngineError
from . import engine_cache as cache
from .base import Backend
from .trt_facts import INSTALL_HINT, io_specs


def import_tensorrt_runtime():
    """`tensorrt`, or the runtime-only `tensorrt_lean`; one-line error otherwise."""
    for name in ("tensorrt", "tensorrt_lean"):
        try:
            return __import__(name)
        except (ImportError, OSError):
            continue
    raise EngineError(INSTALL_HINT)


def _nptype(trt, dtype):
    if hasattr(trt, "nptype"):
        return np.dtype(trt.nptype(dtype))
    return np.dtype({"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT32": np.int32,
                     "INT64": np.int64, "BOOL": np.bool_}[getattr(dtype, "name", str(dtype))])


class TrtEngine:
    """One plan, one execution context, its buffers. Batch 1 (the profile's opt shape).
    `verified=False` is for a plan build-engine has just written, before its sidecar exists."""

    def __init__(self, plan: str | Path, trt, cuda, cuda_graph: bool = False, verified: bool = True):
        self.plan, self.trt, self.cuda = Path(plan), trt, cuda
        if verified:
            sidecar = cache.verify_plan(self.plan)
            cache.check_compatible(sidecar, str(trt.__version__), cuda.gpu_name, cuda.compute_capability)
            if sidecar["key"]["plugins"] == "triton":
                from .trt_plugin import register_for_runtime
                register_for_runtime(trt)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            if getattr(trt, "__name__", "") == "tensorrt_lean":
                # the lean runtime runs only plans built version-compatible, which ours are not
                raise EngineError(f"only the lean TensorRT runtime (tensorrt_lean) is installed, and it "
                                  f"cannot run {self.plan.name}; install the full tensorrt package")
            raise EngineError(f"TensorRT could not deserialize {self.plan} (built by another TensorRT "
                              f"or damaged); rebuild with `jsa-rt build-engine --force`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.plan.name} "
                              f"(out of GPU memory?)")
        inputs, outputs = io_specs(trt, self.engine)
        self.inputs, self.outputs, self.host, self.device = [], [], {}, {}
        for spec, is_input in [(s, True) for s in inputs] + [(s, False) for s in outputs]:
            name, shape = spec["name"], tuple(1 if d < 0 else d for d in spec["shape"])
            if is_input and self.context.set_input_shape(name, shape) is False:
                raise EngineError(f"{self.plan.name} does not accept input {name} of shape {shape}; "
                                  f"rebuild it with `jsa-rt build-engine --force`")
            self.host[name] = cuda.alloc_host(shape, _nptype(trt, self.engine.get_tensor_dtype(name)))
            self.device[name] = cuda.alloc_device(self.host[name].nbytes)
            if self.context.set_tensor_address(name, self.device[name]) is False:
                raise EngineError(f"TensorRT refused the buffer of {name} in {self.plan.name}")
            (self.inputs if is_input else self.outputs).append(name)
        self._graph, self.cuda_graph = None, cuda_graph

    def infer(self, feeds: dict) -> dict:
        for name in self.inputs:
            src = np.asarray(feeds[name])
            if src.shape != self.host[name].shape:
                raise EngineError(f"input {name} has shape {src.shape}, the engine expects "
                                  f"{self.host[name].shape}")
            np.copyto(self.host[name], src, casting="same_kind")
            self.cuda.h2d(self.device[name], self.host[name])
        self._enqueue()
        for name in self.outputs:
            self.cuda.d2h(self.host[name], self.device[name])
        self.cuda.synchronize()
        return {name: self.host[name].copy() for name in self.outputs}

    def _enqueue(self):
        stream = self.cuda.stream_handle
        if not self.cuda_graph:
            if not self.context.execute_async_v3(stream):
                raise EngineError(f"TensorRT failed to run {self.plan.name}; see its log")
            return
        if self._graph is None:
            # one plain run first: TensorRT defers some shape work to the first enqueue
            self.context.execute_async_v3(stream)
            self.cuda.begin_capture()
            self.context.execute_async_v3(stream)
            self._graph = self.cuda.end_capture()
        self.cuda.launch_graph(self._graph)


def sibling_plan(full_plan: Path, graph: str) -> Path | None:
    """The audio/visual plan built with the full one: same parent folder (TensorRT version,
    GPU), same precision and plugin mode, built from the sibling ONNX of the same export."""
    side = cache.read_sidecar(cache.sidecar_for(full_plan))
    from .ort_backend import graph_path
    want_onnx = str(graph_path(Path(side["onnx"]), graph))
    key = side["key"]
    folder = full_plan.parent
    for cand in sorted(folder.parent.glob(f"{graph}.{key['precision']}.{key['plugins']}.*")):
        plan = cand / cache.PLAN_NAME
        if plan.is_file() and (cand / cache.SIDECAR_NAME).is_file():
            if cache.read_sidecar(cand / cache.SIDECAR_NAME).get("onnx") == want_onnx:
                return plan
    return None


def find_engine(model_name: str, root: Path = cache.DEFAULT_ROOT, precision: str | None = None) -> Path:
    """Newest cached full-graph plan of a model (fp16 preferred)."""
    plans = [p for p in cache.list_engines(root)
             if p.parent.name.startswith("full.") and cache.slug(model_name) in p.parts]
    plans.sort(key=lambda p: (p.parent.name.split(".")[1] != (precision or "fp16")))
    if not plans:
        raise EngineError(f"no TensorRT engine for {model_name} under {root}; build one with "
                          f"`jsa-rt build-engine --fp16 --checkpoint {model_name}`")
    return plans[0]


class TrtBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, plan: str | Path, cuda_graph: bool = False, cuda_provider: str | None = None):
        from .cuda_mem import open_cuda
        plan = Path(plan)
        side = cache.verify_plan(plan)          # missing / corrupt plans: say so even without TensorRT
        trt = import_tensorrt_runtime()
        self.config = ModelConfig.from_dict(side["model_config"])
        self.precision = side["key"]["precision"]
        self.cuda = open_cuda(cuda_provider)
        self.engines = {}
        graphs = {"full": plan}
        for graph in ("audio", "visual"):
            sibling = sibling_plan(plan, graph)
            if sibling is not None:
                graphs[graph] = sibling
        for graph, path in graphs.items():
            self.engines[graph] = TrtEngine(path, trt, self.cuda, cuda_graph=cuda_graph)
        self.plan = plan

    def _engine(self, graph):
        if graph not in self.engines:
            raise EngineError(f"no {graph} engine next to {self.plan}; build all graphs with "
                              f"`jsa-rt build-engine` (default --graphs full,audio,visual)")
        return self.engines[graph]

    def _run_full(self, frame, wave):
        return self._engine("full").infer({"frame": frame, "wave": wave})

    def _run_audio(self, wave):
        return self._engine("audio").infer({"wave": wave})

    def _run_visual(self, frame, state):
        return self._engine("visual").infer({"frame": frame, **state})

    def describe(self) -> str:
        return f"tensorrt ({self.cuda.gpu_name}, {self.precision}, CUDA via {self.cuda.name})"

    def close(self):
        self.engines.clear()
        self.cuda.close()
