"""Backends behind one interface (base.Backend): torch, onnxruntime, tensorrt.

    from jsa_rt.runtime import load_backend
    with load_backend("auto", model="edge-jsa-listen") as backend:
        maps = backend.run(frame_uint8_rgb, audio_float32)

`model`: a checkpoint .pt, an exported .onnx, a TensorRT plan, or a shipped name
(shipped.SHIPPED); None -> shipped.DEFAULT_MODEL (edge-jsa-listen). `preset` with model=None: random weights of that
preset (timing). `server="grpc://host:8001"` (or http://): the `triton` backend, inference on a `jsa-rt serve`
server (the server chooses the model). "auto" tries, fastest first: tensorrt > onnxruntime-cuda > torch-cuda >
onnxruntime-cpu > torch-cpu, skipping what is not installed or has no model file.
Importing this package imports neither torch nor onnxruntime.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import EngineError, JsaError
from ..machine import nvidia_driver_present
from ..paths import ENGINES_DIR, WEIGHTS_DIR
from ..shipped import DEFAULT_MODEL, SHIPPED
from .base import AudioState, Backend, Maps

BACKENDS = ("tensorrt", "onnxruntime", "torch")
AUTO_ORDER = (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda"),
              ("onnxruntime", "cpu"), ("torch", "cpu"))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Backends whose library is installed (cheap: nothing is imported)."""
    found = []
    if _installed("tensorrt") or _installed("tensorrt_lean"):
        found.append("tensorrt")
    if _installed("onnxruntime"):
        found.append("onnxruntime")
    if _installed("torch"):
        found.append("torch")
    return found


# ---- which file serves which backend ------------------------------------------------------------
def onnx_for(model, preset: str | None = None) -> Path:
    """The full-graph ONNX for a model argument, exporting random weights for a preset."""
    if model is None and preset is not None:
        path = ENGINES_DIR / f"random-{preset}" / f"random-{preset}.onnx"
        if not path.is_file():
            from ..export.onnx_export import export_all   # needs torch: random weights for tests and timing
            from ..model import random_model
            export_all(random_model(preset), path, model_name=f"random-{preset}", log=lambda *_: None)
        return path
    name = str(model or DEFAULT_MODEL)
    if name.endswith(".onnx"):
        return Path(name)
    if name in SHIPPED:
        for cand in (WEIGHTS_DIR / f"{name}.onnx", ENGINES_DIR / f"{name}.onnx"):
            if cand.is_file():
                return cand
        raise EngineError(f"no ONNX export of {name}: run `jsa-rt export-onnx --checkpoint {name}`")
    if name.endswith(".pt"):
        cand = Path(name).with_suffix(".onnx")
        if cand.is_file():
            return cand
        raise EngineError(f"no ONNX next to {name}: run `jsa-rt export-onnx --checkpoint {name}`")
    raise EngineError(f"onnxruntime needs an .onnx file or a shipped model name, got {name}")


def plan_for(model) -> Path:
    name = str(model or DEFAULT_MODEL)
    if name.endswith((".plan", ".engine")):
        return Path(name)
    from .trt_backend import find_engine
    return find_engine(Path(name).stem.split(".")[0])


def load_backend(name: str = "auto", model=None, preset: str | None = None,
                 device: str | None = None, server: str | None = None, **options) -> Backend:
    """A ready backend (see module docstring). Options: threads (onnxruntime/torch CPU),
    kernels ("auto"|"torch"|"triton", torch), cuda_graph (torch CUDA, tensorrt), timeout_s (server)."""
    if server is not None or name == "triton":
        if server is None:
            raise EngineError("the triton backend needs a server: server='grpc://HOST:8001' (`jsa-rt serve`)")
        if model is not None or preset is not None or name not in ("auto", "triton"):
            raise EngineError(f"with a server, the server chooses the model and backend (`jsa-rt serve --model "
                              f"...`); drop model/preset/backend={name!r}")
        from .triton_client import TritonClientBackend
        return TritonClientBackend(server, **_pick(options, "timeout_s"))
    if name == "auto":
        return _auto(model, preset, device, options)
    if name == "torch":
        from .torch_backend import TorchBackend
        if model is not None and str(model).endswith((".onnx", ".plan", ".engine")):
            raise EngineError(f"the torch backend needs a checkpoint (.pt or shipped name), got {model}")
        return TorchBackend(model=model if (model is not None or preset is None) else None,
                            preset=preset, device=device, **_pick(options, "kernels", "cuda_graph", "threads"))
    if name == "onnxruntime":
        from .ort_backend import OrtBackend
        return OrtBackend(onnx_for(model, preset), device=device, **_pick(options, "threads"))
    if name == "tensorrt":
        if device == "cpu":
            raise EngineError("the tensorrt backend runs on CUDA only; use onnxruntime for --device cpu")
        from .trt_backend import TrtBackend
        return TrtBackend(plan_for(model), **_pick(options, "cuda_graph"))
    raise EngineError(f"unknown backend {name!r}; choose auto, {', '.join(BACKENDS)}")


def _pick(options: dict, *names) -> dict:
    return {k: v for k, v in options.items() if k in names and v is not None}


def _auto(model, preset, device, options) -> Backend:
    installed = available_backends()
    reasons = []
    for backend, dev in AUTO_ORDER:
        if device is not None and dev != device:
            continue
        if backend not in installed:
            if backend == "tensorrt" and str(model).endswith((".plan", ".engine")):
                reasons.append("tensorrt: not installed (`jsa-rt doctor` says how to install it)")
            continue
        if dev == "cuda" and not _cuda_possible(backend):
            if device == "cuda":          # asked for: say why, else a CPU backend is the answer
                reasons.append(f"{backend}-cuda: no CUDA GPU visible (use --device cpu)")
            continue
        try:
            return load_backend(backend, model=model, preset=preset, device=dev, **options)
        except JsaError as exc:
            reasons.append(f"{backend}-{dev}: {exc}")
    raise EngineError("no backend could load the model (" + " | ".join(reasons or ["none installed"])
                      + "); install onnxruntime or torch, or export/build the model first")


def _cuda_possible(backend: str) -> bool:
    if not nvidia_driver_present():
        return False
    if backend == "onnxruntime":
        from .ort_backend import cuda_available
        return cuda_available()
    if backend == "torch":
        import torch
        return torch.cuda.is_available()
    return True                                   # tensorrt: the backend says why it cannot


__all__ = ["available_backends", "load_backend", "Backend", "Maps", "AudioState", "BACKENDS"]
