"""`jsa-rt serve --backend tensorrt`: the audio and visual branches on TensorRT engines in the server.

The engines come from the same dynamic-batch graphs the onnxruntime server runs (engines/serve/),
built by build-engine's builder (tensorrt_build.build_engine) with one optimization profile over
the batch axis, 1..max_batch (tuned for max_batch: under load Triton's batcher fills its batches),
checked against onnxruntime at batch 1, and cached next to the graphs:

    <graphs>/tensorrt/max-batch-<N>/<model>/<gpu>-sm<cc>/trt<version>/<graph>.<precision>.none.<sha12>/

keyed like every engine (the graph's sha256, TensorRT version, GPU, precision, plugin mode) and
written atomically, so a second start reuses them and a changed graph is built again. The visual
graph returns its audio_slot input unchanged; TensorRT's ONNX parser renames an input that is also
an output, so that graph is built from a copy without the echo (beside the engines, rewritten only
when its bytes change).

PyTriton calls each model from a thread of its own and CUDA state belongs to a thread (pycuda's
context), so one thread (GpuThread) opens CUDA, builds and loads both engines and makes every call.

Written against the documented TensorRT 10.3 / 11.x Python API and tested only with a stand-in
(tests/fake_tensorrt.py): TensorRT cannot be installed on the machines jsa-rt is developed on.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..atomic import write_bytes
from ..errors import DeviceError, EngineError
from ..paths import file_sha256
from ..runtime import cuda_mem
from ..runtime.ort_backend import graph_path
from ..runtime.trt_backend import TrtEngine
from .serve_branches import Branch

FIX = ("on a machine with an NVIDIA GPU and its driver, install TensorRT, cuda-python and onnx there: "
       "`{python} -m pip install tensorrt cuda-python onnx --extra-index-url https://pypi.nvidia.com`; "
       "or serve with --backend onnxruntime")


# ---- which backend --------------------------------------------------------------------------------
def tensorrt_problem(open_cuda=None) -> str | None:
    """Why TensorRT cannot run the server in this interpreter, or None when it can: `import
    tensorrt` (with its builder), onnx (the builder reads the graphs with it), a CUDA device."""
    from .tensorrt_build import import_tensorrt
    try:
        import_tensorrt()
    except EngineError:
        return "no TensorRT with a builder can be imported"
    if importlib.util.find_spec("onnx") is None:
        return "onnx (the engine builder reads the graphs with it) is not installed"
    try:
        (open_cuda or cuda_mem.open_cuda)().close()
    except DeviceError:
        return "no usable CUDA device (needs an NVIDIA GPU, its driver, and cuda-python or pycuda)"
    return None


def choose_backend(choice: str, problem=tensorrt_problem) -> tuple[str, str]:
    """--backend auto|onnxruntime|tensorrt -> ('tensorrt' | 'onnxruntime', a note for the start
    line: '' or 'chosen by auto', with the reason TensorRT was not). tensorrt without a working
    TensorRT is a one-line error with the fix."""
    if choice == "onnxruntime":
        return "onnxruntime", ""
    why = problem()
    if why is None:
        return "tensorrt", "chosen by auto" if choice == "auto" else ""
    if choice == "tensorrt":
        raise EngineError(f"--backend tensorrt: {why} in {sys.executable}; " + FIX.format(python=sys.executable))
    return "onnxruntime", f"chosen by auto: {why}"


# ---- the engines ----------------------------------------------------------------------------------
class GpuThread:
    """One worker thread that opens CUDA and makes every CUDA and TensorRT call."""

    def __init__(self, open_cuda):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsa-rt-gpu")
        self.cuda, self.users = None, []
        try:
            self.cuda = self.call(open_cuda)
        except BaseException:
            self.pool.shutdown()
            raise

    def call(self, fn, *args, **kwargs):
        return self.pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        if self.cuda is not None:
            self.call(self._release)
            self.pool.shutdown()

    def _release(self) -> None:           # the engines go before the buffers they point into
        for user in self.users:
            user.engine = None
        self.cuda, cuda = None, self.cuda
        cuda.close()


class TrtBranch(Branch):
    """One graph's TensorRT engine, called with whole batches (on the GPU thread)."""

    def __init__(self, plan: Path, trt, gpu: GpuThread, max_batch: int, meta: dict):
        self.plan, self.gpu, self.meta = Path(plan), gpu, meta
        self.engine = gpu.call(TrtEngine, plan, trt, gpu.cuda, max_batch=max_batch)
        gpu.users.append(self)

        def spec(name):
            return self.engine.host[name].dtype.type, tuple(self.engine.host[name].shape[1:])
        self.inputs = {n: spec(n) for n in self.engine.inputs}
        self.outputs = {n: spec(n) for n in self.engine.outputs if n not in self.inputs}

    def run(self, feeds: dict) -> dict:
        out = self.gpu.call(self.engine.infer, feeds)
        return {name: out[name] for name in self.outputs}

    def close(self) -> None:
        self.gpu.close()


def trt_graph(src: Path, folder: Path) -> tuple[Path, dict]:
    """The graph TensorRT builds for `src` and its jsa-rt metadata: `src` itself, or a copy in
    `folder` without the outputs that only return an input (rewritten only when its bytes change)."""
    from .triton_repo import drop_echo, load_graph
    proto, spec = load_graph(src)        # one-line errors unless every tensor has a batch axis
    meta = {p.key: p.value for p in proto.metadata_props}
    if not drop_echo(proto, spec):
        return Path(src), meta
    data = proto.SerializeToString()
    copy = Path(folder) / Path(src).name
    if not (copy.is_file() and file_sha256(copy) == hashlib.sha256(data).hexdigest()):
        write_bytes(copy, data)
    return copy, meta


def trt_branches(base: Path, *, max_batch: int, log=print, trt=None, open_cuda=None,
                 validate=None) -> tuple[TrtBranch, TrtBranch]:
    """(audio, visual) on TensorRT engines for the graphs at `base` (x.audio.onnx, x.visual.onnx),
    built once per graph, TensorRT version, GPU and max_batch, then reused. `trt`, `open_cuda`
    and `validate` are for tests (a stand-in TensorRT and CUDA)."""
    from .engine_check import validate_against_onnxruntime
    from .tensorrt_build import build_engine, import_tensorrt
    trt = trt or import_tensorrt()
    folder = Path(base).parent / "tensorrt"
    gpu = GpuThread(open_cuda or cuda_mem.open_cuda)
    try:
        branches = []
        for graph in ("audio", "visual"):
            onnx_path, meta = trt_graph(graph_path(base, graph), folder)
            log(f"serve: the {graph} engine (TensorRT {trt.__version__}, batch 1..{max_batch}) from {onnx_path}")
            built = gpu.call(build_engine, onnx_path, precision=meta.get("jsa_rt.precision", "fp32"),
                             plugins=meta.get("jsa_rt.plugins", "none"), root=folder / f"max-batch-{max_batch}",
                             max_batch=max_batch, opt_batch=max_batch, trt=trt, log=log,
                             gpu=(gpu.cuda.gpu_name, gpu.cuda.compute_capability),
                             validate=validate or validate_against_onnxruntime)
            branches.append(TrtBranch(built.plan, trt, gpu, max_batch, meta))
    except BaseException:
        gpu.close()
        raise
    return branches[0], branches[1]


def describe(branch: TrtBranch) -> str:
    """The start line's words for a TensorRT branch: the GPU and the engines' precision."""
    return f"on {branch.gpu.cuda.gpu_name} ({branch.meta.get('jsa_rt.precision', 'fp32')} engines)"
