"""TensorRT backend: plans built by `jsa-rt build-engine`, run through the TensorRT 10/11 runtime
API (deserialize_cuda_engine, create_execution_context, set_input_shape, get_tensor_shape,
set_tensor_address, execute_async_v3). Device buffers, pinned host buffers and the stream come from cuda_mem
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
    """One plan, one execution context, its buffers. Batch 1 by default; `max_batch` > 1 is for a
    plan built with a batch profile 1..max_batch (`jsa-rt serve --backend tensorrt`): the buffers
    hold max_batch rows, and each call sets the input shapes of its own batch (set_input_shape)
    and reads the output shapes TensorRT derives from them (get_tensor_shape). A CUDA graph
    replays fixed shapes, so only a batch-1 engine takes one.
    `verified=False` is for a plan build-engine has just written, before its sidecar exists."""

    def __init__(self, plan: str | Path, trt, cuda, cuda_graph: bool = False, verified: bool = True,
                 max_batch: int = 1):
        self.plan, self.trt, self.cuda = Path(plan), trt, cuda
        if cuda_graph and max_batch > 1:
            raise EngineError("a CUDA graph replays fixed shapes: use cuda_graph only with batch-1 engines")
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
        # inputs with a dynamic first (batch) axis; their buffers hold max_batch rows
        self.batched = {s["name"] for s in inputs if s["shape"] and s["shape"][0] < 0}
        self.inputs, self.outputs, self.host, self.device = [], [], {}, {}
        self.shapes, self._out_shapes = {}, {}          # the input shapes the context holds now
        for spec in inputs:                             # the largest shapes: outputs are sized from them
            name = spec["name"]
            self._set_shape(name, tuple(max_batch if i == 0 and d < 0 else 1 if d < 0 else d
                                        for i, d in enumerate(spec["shape"])))
            self._bind(name, self.shapes[name])
            self.inputs.append(name)
        for spec in outputs:
            self._bind(spec["name"], self._output_shape(spec["name"]))
            self.outputs.append(spec["name"])
        self._graph, self.cuda_graph = None, cuda_graph

    def _set_shape(self, name: str, shape: tuple) -> None:
        if self.context.set_input_shape(name, shape) is False:
            raise EngineError(f"{self.plan.name} does not accept input {name} of shape {shape}; "
                              f"rebuild it with `jsa-rt build-engine --force`")
        self.shapes[name] = tuple(shape)
        self._out_shapes.clear()

    def _output_shape(self, name: str) -> tuple:
        """What TensorRT derives for output `name` from the input shapes set now."""
        if name not in self._out_shapes:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"TensorRT cannot tell the shape of output {name} of {self.plan.name} "
                                  f"({shape}); rebuild it with `jsa-rt build-engine --force`")
            self._out_shapes[name] = shape
        return self._out_shapes[name]

    def _bind(self, name: str, shape: tuple) -> None:
        self.host[name] = self.cuda.alloc_host(shape, _nptype(self.trt, self.engine.get_tensor_dtype(name)))
        self.device[name] = self.cuda.alloc_device(self.host[name].nbytes)
        if self.context.set_tensor_address(name, self.device[name]) is False:
            raise EngineError(f"TensorRT refused the buffer of {name} in {self.plan.name}")

    def _rows(self, name: str, shape: tuple) -> np.ndarray:
        """The first rows of the pinned buffer of `name`, as `shape` (a view: no copy)."""
        return self.host[name].reshape(-1)[:int(np.prod(shape))].reshape(shape)

    def _check(self, name: str, shape: tuple) -> None:
        full = self.host[name].shape
        if shape == full or (name in self.batched and len(shape) == len(full) and shape[1:] == full[1:]
                             and 1 <= shape[0] <= full[0]):
            return
        takes = (f"1..{full[0]}",) if name in self.batched else (str(full[0]),) if full else ()
        raise EngineError(f"input {name} has shape {shape}, the engine takes "
                          f"({', '.join(takes + tuple(map(str, full[1:])))})")

    def infer(self, feeds: dict) -> dict:
        """One call; a batched engine takes any batch 1..max_batch (the same for every input)."""
        for name in self.inputs:
            src = np.asarray(feeds[name])
            self._check(name, src.shape)
            if src.shape != self.shapes[name]:
                self._set_shape(name, src.shape)
            host = self._rows(name, src.shape)
            np.copyto(host, src, casting="same_kind")
            self.cuda.h2d(self.device[name], host)
        self._enqueue()
        out = {name: self._rows(name, self._output_shape(name)) for name in self.outputs}
        for name, host in out.items():
            self.cuda.d2h(host, self.device[name])
        self.cuda.synchronize()
        return {name: host.copy() for name, host in out.items()}

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
