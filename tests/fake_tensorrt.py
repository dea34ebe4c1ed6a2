"""FakeTensorRT: a stand-in for the `tensorrt` module, for the machines where TensorRT cannot
be installed (all of jsa-rt's development and CI machines). It is NOT TensorRT: it builds no
kernels and runs nothing. It exposes the documented Python API surface that
jsa_rt/export/tensorrt_build.py uses, in the shape of a given release, and records every call so
tests can check which API a given TensorRT version gets:

  10.3-like  BuilderFlag.FP16 exists (weak typing available), NetworkDefinitionCreationFlag has
             EXPLICIT_BATCH (deprecated, 0) and STRONGLY_TYPED (1); no tensorrt.plugin;
             inspector JSON layers carry "Format/Datatype" strings and a "Bindings" list.
  10.7-like  as 10.3 plus tensorrt.plugin (register/impl, JIT only).
  10.9+-like plus tensorrt.plugin.aot_impl and PREFER_AOT_PYTHON_PLUGINS.
  11-like    no BuilderFlag.FP16 (weak typing removed), STRONGLY_TYPED deprecated and ignored,
             no EXPLICIT_BATCH; inspector JSON has "DataType" per tensor and "I/O Tensors".

"Strong typing" is simulated: the fake engine's layers run in the precision of the ONNX
initializers, as a real strongly typed build would; `force_layer_dtype` overrides it to
simulate a silently-fp32 engine. An engine's execution context (tests/fake_trt_runtime.py)
checks shapes against the plan's optimization profile and runs the ONNX graph on onnxruntime.
"""
from __future__ import annotations

import enum
import inspect
import json
import types
import typing

import numpy as np
import onnx
from onnx import numpy_helper


def _version_tuple(v):
    return tuple(int(x) for x in v.split(".")[:3])


class FakeTensorRT:
    __name__ = "FakeTensorRT"

    def __init__(self, version: str = "10.3.0", force_layer_dtype: str | None = None):
        self.__version__ = version
        self.calls: list[tuple] = []
        self.force_layer_dtype = force_layer_dtype
        vt = _version_tuple(version)
        major = vt[0]
        fake = self

        class Logger:
            VERBOSE, INFO, WARNING, ERROR = 0, 1, 2, 3

            def __init__(self, severity=2):
                fake.calls.append(("Logger", severity))

        self.Logger = Logger

        builder_flags = {"TF32": 7, "REFIT": 3}
        if major < 11:
            builder_flags.update(FP16=0, INT8=1, OBEY_PRECISION_CONSTRAINTS=10)
        self.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
        if major < 11:
            net_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
            if vt >= (10, 9, 0):
                net_flags.update(PREFER_AOT_PYTHON_PLUGINS=2, PREFER_JIT_PYTHON_PLUGINS=3)
        else:
            net_flags = {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1,
                         "PREFER_JIT_PYTHON_PLUGINS": 2}
        self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags)
        self.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
        self.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity",
                                               {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
        self.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})
        self.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
        self.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3,
                                                  "BOOL": 4, "UINT8": 5, "INT64": 8})
        self.float32, self.float16 = self.DataType.FLOAT, self.DataType.HALF     # tensorrt's aliases
        if vt >= (10, 6, 0):
            self.plugin = self._make_plugin_module(aot=vt >= (10, 9, 0))

        # the classes a build uses ---------------------------------------------------------
        class Builder:
            def __init__(self, logger):
                fake.calls.append(("Builder",))

            def create_network(self, flags=0):
                fake.calls.append(("create_network", flags))
                return Network(flags)

            def create_builder_config(self):
                fake.calls.append(("create_builder_config",))
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build_serialized_network",))
                if network.onnx is None:
                    return None
                return fake._plan_bytes(network, config)

        class Network:
            def __init__(self, flags):
                self.flags, self.onnx = flags, None

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, min, opt, max):
                fake.calls.append(("profile.set_shape", name, list(min), list(opt), list(max)))
                self.shapes[name] = (list(min), list(opt), list(max))

        class TimingCache:
            def __init__(self, blob):
                self.blob = bytes(blob)

            def serialize(self):
                return self.blob + b"|timed"

        class Config:
            def __init__(self):
                self.cache, self.profiles = None, []

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("set_flag", flag))

            @property
            def profiling_verbosity(self):
                return None

            @profiling_verbosity.setter
            def profiling_verbosity(self, value):
                fake.calls.append(("profiling_verbosity", value))

            def create_timing_cache(self, blob):
                fake.calls.append(("create_timing_cache", bytes(blob)))
                return TimingCache(blob)

            def set_timing_cache(self, cache, ignore_mismatch):
                fake.calls.append(("set_timing_cache", ignore_mismatch))
                if bytes(cache.blob).startswith(b"FOREIGN"):       # another GPU / TensorRT's cache
                    return False
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_optimization_profile", dict(profile.shapes)))
                self.profiles.append(dict(profile.shapes))

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", path))
                try:
                    self.network.onnx, self.network.path = onnx.load(path), str(path)
                except Exception as exc:           # the real parser reports, never raises
                    self.errors.append(f"failed to parse: {exc}")
                    return False
                return True

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, blob):
                fake.calls.append(("deserialize_cuda_engine",))
                try:
                    return Engine(json.loads(bytes(blob).decode()))
                except Exception:
                    return None

        class Inspector:
            def __init__(self, engine):
                self.engine = engine

            def get_engine_information(self, fmt):
                fake.calls.append(("get_engine_information", fmt))
                return fake._engine_info(self.engine.desc)

        class Engine:
            def __init__(self, desc):
                self.desc = desc
                self.io = desc["inputs"] + desc["outputs"]

            @property
            def num_io_tensors(self):
                return len(self.io)

            def get_tensor_name(self, i):
                return self.io[i]["name"]

            def _spec(self, name):
                return next(t for t in self.io if t["name"] == name)

            def get_tensor_mode(self, name):
                return fake.TensorIOMode.INPUT if self._spec(name) in self.desc["inputs"] \
                    else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name):
                return fake.DataType[self._spec(name)["dtype"]]

            def get_tensor_shape(self, name):
                return tuple(self._spec(name)["shape"])

            def create_engine_inspector(self):
                return Inspector(self)

            def create_execution_context(self):      # runs the graph on onnxruntime: fake_trt_runtime.py
                from fake_trt_runtime import FakeContext
                return FakeContext(fake, self)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    # ---- helpers ---------------------------------------------------------------------------
    def _make_plugin_module(self, aot: bool):
        """tensorrt.plugin as far as jsa-rt uses it, making the checks the real decorators make
        when they run (tensorrt/plugin/_validate.py): every `register` argument and its return
        carry class type hints (postponed string hints fail `issubclass`), `aot_impl` declares
        its return, annotated attributes match the registered types, and an id is registered
        once per process. The registered functions are kept in `functions` so tests can call them."""
        fake = self
        mod = types.SimpleNamespace(functions={})

        class ShapeExpr:
            def __init__(self, value):
                self._value = value

            @property
            def is_constant(self):               # a property in tensorrt.plugin ...
                return True

            def constant_value(self):            # ... and this one a method
                return self._value

        class TensorDesc:
            def __init__(self, shape, dtype):
                self.shape_expr, self.dtype = [ShapeExpr(d) for d in shape], dtype

            def like(self):
                return TensorDesc([e.constant_value() for e in self.shape_expr], self.dtype)

        class Tensor:
            pass

        class KernelLaunchParams:
            grid_x = grid_y = grid_z = block_x = block_y = block_z = shared_mem = None

        class SymExprs(list):
            def __init__(self, n):
                super().__init__([None] * n)

        class SymIntExprs(SymExprs):
            pass

        class SymInt32:
            def __init__(self, expr):
                self.expr = expr

        class AutoTuneCombination:
            def __init__(self, spec):
                self.spec = spec

        def from_shape_expr(shape, dtype):
            return TensorDesc([e.constant_value() for e in shape], dtype)

        def annotation(name, param):
            hint = param.annotation
            if isinstance(hint, str):            # what `from __future__ import annotations` produces
                raise TypeError(f"issubclass() arg 1 must be a class (hint of {name!r} is the string {hint!r})")
            return hint

        def check_register(fn):
            sig = inspect.signature(fn)
            attrs = {}
            for name, param in sig.parameters.items():
                if param.annotation is inspect.Parameter.empty:
                    raise ValueError(f"Argument {name} does not have a type annotation")
                hint = annotation(name, param)
                if not issubclass(hint, TensorDesc):
                    attrs[name] = hint
            if sig.return_annotation is inspect.Parameter.empty:
                raise ValueError("No return annotation found for register function")
            if not all(issubclass(a, TensorDesc) for a in typing.get_args(sig.return_annotation)):
                raise ValueError(f"register must return TensorDesc or Tuple[TensorDesc], not {sig.return_annotation}")
            return attrs

        def check_attr_hints(fn, plugin_id):
            for name, param in inspect.signature(fn).parameters.items():
                if param.annotation is inspect.Parameter.empty or name in ("outputs", "stream", "tactic"):
                    continue
                hint = annotation(name, param)
                registered = mod.functions["register"][1].get(name)
                if registered is not None and hint is not registered:
                    raise ValueError(f"Attribute '{name}' has a type annotation different from the one "
                                     f"specified at registration")

        def decorator(kind):
            def outer(plugin_id):
                def inner(fn):
                    if kind == "register":
                        if "register" in mod.functions:
                            raise ValueError(f"'{plugin_id}' already has a defintion")
                        mod.functions["register"] = (fn, check_register(fn))
                    else:
                        check_attr_hints(fn, plugin_id)
                        if kind == "aot_impl":
                            ret = inspect.signature(fn).return_annotation
                            if ret is inspect.Parameter.empty:
                                raise ValueError("No return annotation found for aot_impl function")
                            args = typing.get_args(ret)
                            if len(args) != 4 or not issubclass(args[2], KernelLaunchParams) \
                                    or not issubclass(args[3], SymExprs):
                                raise ValueError(f"aot_impl's return annotation is {ret}")
                        mod.functions[kind] = fn
                    fake.calls.append((f"plugin.{kind}", plugin_id))
                    return fn
                return inner
            return outer

        mod.register, mod.impl, mod.autotune = decorator("register"), decorator("impl"), decorator("autotune")
        mod.TensorDesc, mod.Tensor, mod.AutoTuneCombination = TensorDesc, Tensor, AutoTuneCombination
        mod.from_shape_expr = from_shape_expr
        if aot:
            mod.aot_impl = decorator("aot_impl")
            mod.KernelLaunchParams, mod.SymExprs, mod.SymIntExprs, mod.SymInt32 = \
                KernelLaunchParams, SymExprs, SymIntExprs, SymInt32
        return mod

    _ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 2: "UINT8", 7: "INT64", 6: "INT32", 9: "BOOL"}

    def _plan_bytes(self, network, config) -> bytes:
        graph = network.onnx.graph
        floats = [numpy_helper.to_array(t).dtype for t in graph.initializer
                  if numpy_helper.to_array(t).dtype in (np.float16, np.float32)]
        compute = "HALF" if floats and np.float16 in floats else "FLOAT"
        if self.force_layer_dtype:
            compute = self.force_layer_dtype

        def spec(v):
            dims = [d.dim_value if d.HasField("dim_value") else -1
                    for d in v.type.tensor_type.shape.dim]
            return {"name": v.name, "dtype": self._ONNX_TO_TRT.get(v.type.tensor_type.elem_type, "FLOAT"),
                    "shape": dims}
        desc = {"fake": "FakeTensorRT plan, not a real engine", "version": self.__version__,
                "compute": compute, "layers": [n.name or n.op_type for n in graph.node],
                "inputs": [spec(v) for v in graph.input], "outputs": [spec(v) for v in graph.output],
                "onnx": network.path, "profiles": config.profiles}
        return json.dumps(desc).encode()

    def _engine_info(self, desc) -> str:
        """Layer JSON in this version's schema (TensorRT 10.x vs 11.x)."""
        major = _version_tuple(self.__version__)[0]
        half = desc["compute"] == "HALF"
        layers = []
        for name in desc["layers"]:
            if major >= 11:
                out = {"Name": name + "_out", "DataType": "Half" if half else "Float",
                       "Format": "Row major linear FP16 format (kLINEAR)" if half
                       else "Row major linear FP32 format (kLINEAR)"}
            else:
                out = {"Name": name + "_out", "Location": "Device",
                       "Format/Datatype": "Row major linear FP16 format" if half
                       else "Row major linear FP32"}
            layers.append({"Name": name, "LayerType": "Fake", "Outputs": [out]})
        info = {"Layers": layers}
        if major >= 11:
            info["I/O Tensors"] = [{"Name": t["name"]} for t in desc["inputs"] + desc["outputs"]]
        else:
            info["Bindings"] = [t["name"] for t in desc["inputs"] + desc["outputs"]]
        return json.dumps(info)

    # ---- what tests look at ------------------------------------------------------------------
    def called(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]
