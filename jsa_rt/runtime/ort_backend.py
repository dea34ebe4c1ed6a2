"""onnxruntime backend: the exported graphs (full, audio, visual) on CPU, or on CUDA when
onnxruntime-gpu is installed. Never imports torch; the model config comes from the ONNX
metadata written by `jsa-rt export-onnx`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import EngineError
from .base import Backend

def graph_path(full: Path, graph: str) -> Path:
    """x.onnx -> x.audio.onnx / x.visual.onnx (same rule as export.onnx_export)."""
    full = Path(full)
    if graph == "full":
        return full
    stem = full.name[:-5] if full.name.endswith(".onnx") else full.name
    return full.with_name(f"{stem}.{graph}.onnx")


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed: pip install onnxruntime "
                              "(onnxruntime-gpu for CUDA)") from None
        self.ort = ort
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise EngineError(f"ONNX file not found: {self.path}; make it with `jsa-rt export-onnx`")
        want_cuda = device == "cuda" or (device is None and cuda_available())
        if device == "cuda" and not cuda_available():
            raise EngineError("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu, "
                              "or use --device cpu")
        self.device = "cuda" if want_cuda else "cpu"
        self.providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda
                          else ["CPUExecutionProvider"])
        self.threads = threads
        self._sessions = {}
        full = self._session("full")
        meta = full.get_modelmeta().custom_metadata_map
        if "jsa_rt.config" not in meta:
            raise EngineError(f"{self.path} has no jsa-rt metadata: export it with `jsa-rt export-onnx`")
        self.config = ModelConfig.from_dict(json.loads(meta["jsa_rt.config"]))
        self.precision = meta.get("jsa_rt.precision", "fp32")

    def _session(self, graph: str):
        if graph not in self._sessions:
            path = graph_path(self.path, graph)
            if not path.is_file():
                raise EngineError(f"no {graph} graph next to {self.path} ({path.name}); re-export "
                                  f"with `jsa-rt export-onnx` (it writes all three graphs)")
            opts = self.ort.SessionOptions()
            opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3                   # fp16 graphs log harmless fold warnings
            if self.threads:
                opts.intra_op_num_threads = self.threads
            try:
                self._sessions[graph] = self.ort.InferenceSession(str(path), opts, providers=self.providers)
            except Exception as exc:                     # InvalidProtobuf, Fail, NoSuchFile, ...
                first = str(exc).strip().splitlines()[0][:160]
                raise EngineError(f"onnxruntime cannot load {path} ({first}): the file is corrupt "
                                  f"or not an ONNX graph; re-export with `jsa-rt export-onnx`") from None
        return self._sessions[graph]

    def _run(self, graph: str, feeds: dict) -> dict:
        session = self._session(graph)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def _run_full(self, frame, wave):
        return self._run("full", {"frame": frame, "wave": wave})

    def _run_audio(self, wave):
        return self._run("audio", {"wave": wave})

    def _run_visual(self, frame, state):
        return self._run("visual", {"frame": frame, "audio_query": state["audio_query"],
                                    "audio_slot": state["audio_slot"]})

    def describe(self) -> str:
        threads = self.threads or os.cpu_count()
        return f"onnxruntime ({self.device}, {self.precision}, {threads} threads, {self.path.name})"

    def close(self):
        self._sessions.clear()


def run_onnx(path: str | Path, feeds: dict) -> dict:
    """One-off onnxruntime CPU run of any graph (validation references)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {k: np.asarray(v) for k, v in feeds.items()})))
