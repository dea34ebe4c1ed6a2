"""What jsa-rt needs to know about the TensorRT it runs on, shared by the engine builder
(export/tensorrt_build.py) and the runtime (trt_backend.py, trt_plugin.py): the install hint,
feature detection, and an engine's I/O tensors. No TensorRT import here: callers pass `trt`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

INSTALL_HINT = (
    "TensorRT is not installed: on x86 `pip install tensorrt --extra-index-url https://pypi.nvidia.com` "
    "(or run in an NGC container, nvcr.io/nvidia/tensorrt); on Jetson it ships with JetPack: "
    "make your venv with `python3 -m venv --system-site-packages` so `import tensorrt` finds it")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


@dataclass(frozen=True)
class TrtFeatures:
    version: str
    weak_typing: bool          # BuilderFlag.FP16 exists (<= 10.x): strong typing must be requested
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    python_plugins: bool       # tensorrt.plugin decorators (10.6+, JIT)
    aot_plugins: bool          # tensorrt.plugin.aot_impl (10.9+, PTX baked into the plan)

    @property
    def version_tuple(self):
        return _version_tuple(self.version)


def plugin_module(trt):
    """`tensorrt.plugin`, or None where this TensorRT predates it (10.3, 10.5)."""
    try:
        return importlib.import_module(trt.__name__ + ".plugin")
    except (ImportError, AttributeError, TypeError):
        return getattr(trt, "plugin", None)


def detect_features(trt) -> TrtFeatures:
    """Feature detection, not version arithmetic: what the bindings actually expose."""
    plugin = plugin_module(trt)
    return TrtFeatures(
        version=str(trt.__version__),
        weak_typing=hasattr(trt.BuilderFlag, "FP16"),
        strongly_typed_flag=hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
        python_plugins=plugin is not None and hasattr(plugin, "register"),
        aot_plugins=plugin is not None and hasattr(plugin, "aot_impl"),
    )


def io_specs(trt, engine) -> tuple[list, list]:
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = engine.get_tensor_dtype(name)
        spec = {"name": name, "dtype": getattr(dtype, "name", str(dtype).split(".")[-1]),
                "shape": [int(d) for d in engine.get_tensor_shape(name)]}
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (inputs if is_input else outputs).append(spec)
    return inputs, outputs
