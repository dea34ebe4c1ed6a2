"""The TensorRT layer without TensorRT: cache keys, sidecars, the builder's version branching
(10.3-like and 11-like APIs through FakeTensorRT, a recording stand-in), error paths.
Nothing here proves an engine builds or runs: that needs tools/validate_trt.sh on a machine
with TensorRT."""
from __future__ import annotations

import builtins
import json
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jsa_rt.errors import EngineError
from jsa_rt.runtime import engine_cache as cache
from jsa_rt.export import tensorrt_build as tb
from jsa_rt.runtime import trt_facts
from fake_tensorrt import FakeTensorRT

ORIN = ("NVIDIA Jetson AGX Orin", "8.7")


def small_onnx(path, precision="fp32", graph="full", batch=1, weight_scale=1.0, meta=True):
    """A two-input graph shaped like ours (uint8 frame + float wave in, float maps out)."""
    ftype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    npf = np.float16 if precision == "fp16" else np.float32
    w = numpy_helper.from_array((np.ones((4, 4)) * weight_scale).astype(npf), "w")
    nodes = [
        helper.make_node("Cast", ["frame"], ["f32"], to=ftype),
        helper.make_node("Reshape", ["f32", "shape"], ["flat"]),
        helper.make_node("Cast", ["wave"], ["w16"], to=ftype),
        helper.make_node("MatMul", ["w16", "w"], ["mm"]),
        helper.make_node("Cast", ["mm"], ["heatmap"], to=TensorProto.FLOAT),
    ]
    b = batch if batch else "batch"
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("frame", TensorProto.UINT8, [b, 4, 4, 3]),
         helper.make_tensor_value_info("wave", TensorProto.FLOAT, [b, 4])],
        [helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [b, 4])],
        [w, numpy_helper.from_array(np.array([-1], np.int64), "shape")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    if meta:
        helper.set_model_props(model, {"jsa_rt.graph": graph, "jsa_rt.precision": precision,
                                       "jsa_rt.model_name": "tiny-test",
                                       "jsa_rt.config": json.dumps({"preset": "tiny"})})
    onnx.save(model, str(path))
    return path


def passing_validator(plan, onnx_path):
    return {"reference": "test", "max_abs_err": {"heatmap": 1e-4}, "tolerance": 1e-2, "passed": True}


def build(trt, onnx_path, root, **kw):
    kw.setdefault("precision", "fp16")
    return tb.build_engine(onnx_path, root=root, gpu=kw.pop("gpu", ORIN), trt=trt,
                           validate=kw.pop("validate", passing_validator), log=lambda *_: None, **kw)


# ---- missing / unusable TensorRT ----------------------------------------------------------------
def test_missing_tensorrt_is_one_line_with_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)      # import tensorrt -> ImportError
    with pytest.raises(EngineError) as err:
        tb.import_tensorrt()
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install tensorrt" in msg and "JetPack" in msg and "--system-site-packages" in msg


def test_runtime_only_tensorrt_lean_is_rejected(monkeypatch):
    import types
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))   # no Builder
    with pytest.raises(EngineError, match="no builder"):
        tb.import_tensorrt()


# ---- version branching ----------------------------------------------------------------------------
def test_tensorrt_10_3_requests_strong_typing_and_never_the_fp16_flag(tmp_path):
    trt = FakeTensorRT("10.3.0")
    feats = trt_facts.detect_features(trt)
    assert feats.weak_typing and feats.strongly_typed_flag and not feats.python_plugins
    res = build(trt, small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "engines")
    assert trt.called("create_network") == [("create_network", 1 << 1)]   # STRONGLY_TYPED = 1
    assert trt.called("set_flag") == []                                   # no BuilderFlag.FP16
    assert trt.called("set_memory_pool_limit") == [("set_memory_pool_limit", 0, 2 << 30)]
    assert ("profiling_verbosity", trt.ProfilingVerbosity.DETAILED) in trt.calls
    assert trt.called("profile.set_shape") == [
        ("profile.set_shape", "frame", [1, 4, 4, 3], [1, 4, 4, 3], [1, 4, 4, 3]),
        ("profile.set_shape", "wave", [1, 4], [1, 4], [1, 4])]
    assert len(trt.called("build_serialized_network")) == 1
    assert res.sidecar["precision"]["by_output_dtype"] == {"fp16": 5}
    assert res.sidecar["key"]["tensorrt_version"] == "10.3.0"


def test_tensorrt_11_passes_no_typing_flag(tmp_path):
    trt = FakeTensorRT("11.0.0")
    feats = trt_facts.detect_features(trt)
    assert not feats.weak_typing and feats.aot_plugins
    res = build(trt, small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "engines")
    assert trt.called("create_network") == [("create_network", 0)]
    assert trt.called("set_flag") == []
    # the 11.x inspector schema ("DataType" per tensor) is understood too
    assert res.sidecar["precision"]["fp16_fraction"] == 1.0


def test_precision_report_reads_both_inspector_schemas():
    v10 = {"Layers": [{"Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
                      {"Outputs": [{"Format/Datatype": "Row major linear FP32"}]}], "Bindings": ["x"]}
    v11 = {"Layers": [{"Outputs": [{"DataType": "Half", "Format": "kLINEAR"}]},
                      {"Outputs": [{"DataType": "Float", "Format": "kLINEAR"}]}], "I/O Tensors": []}
    for info in (v10, v11):
        rep = tb.precision_report(json.dumps(info))
        assert rep["by_output_dtype"] == {"fp16": 1, "fp32": 1} and rep["fp16_fraction"] == 0.5
    names_only = {"Layers": ["conv1", "conv2"]}
    with pytest.raises(EngineError, match="profiling verbosity"):
        tb.precision_report(json.dumps(names_only))


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_silently_fp32_engine_fails_loudly(tmp_path, version):
    trt = FakeTensorRT(version, force_layer_dtype="FLOAT")
    root = tmp_path / "engines"
    with pytest.raises(EngineError, match="asked for fp16 but the engine runs 0 of"):
        build(trt, small_onnx(tmp_path / "m.onnx", "fp16"), root)
    assert not list(root.rglob("model.plan")), "a wrong-precision plan must not enter the cache"


def test_fp32_onnx_for_fp16_build_is_refused_before_building(tmp_path):
    trt = FakeTensorRT("10.3.0")
    with pytest.raises(EngineError, match="export-onnx --fp16"):
        build(trt, small_onnx(tmp_path / "m.onnx", "fp32"), tmp_path / "e")
    assert trt.called("build_serialized_network") == []


def test_unparseable_onnx_reports_parser_error(tmp_path):
    bad = small_onnx(tmp_path / "m.onnx", "fp16")
    trt = FakeTensorRT("10.3.0")
    trt.OnnxParser.parse_from_file = lambda self, p: (self.errors.append("In node 3: Einsum unsupported"), False)[1]
    with pytest.raises(EngineError, match="could not parse m.onnx .*Einsum"):
        build(trt, bad, tmp_path / "e")


def test_dynamic_batch_gets_an_optimisation_profile(tmp_path):
    trt = FakeTensorRT("10.3.0")
    build(trt, small_onnx(tmp_path / "m.onnx", "fp16", batch=None), tmp_path / "e", max_batch=8)
    assert ("profile.set_shape", "wave", [1, 4], [1, 4], [8, 4]) in trt.calls


def test_plugins_need_tensorrt_10_6(tmp_path):
    with pytest.raises(EngineError, match="10.6"):
        build(FakeTensorRT("10.3.0"), small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "e",
              plugins="triton")


# ---- the cache ---------------------------------------------------------------------------------------
def test_cache_layout_sidecar_and_plain_plan(tmp_path):
    trt = FakeTensorRT("10.3.0")
    onnx_path = small_onnx(tmp_path / "m.onnx", "fp16", graph="visual")
    res = build(trt, onnx_path, tmp_path / "engines")
    sha = cache.file_sha256(onnx_path)
    expected = (tmp_path / "engines" / "tiny-test" / "nvidia-jetson-agx-orin-sm87" / "trt10.3.0"
                / f"visual.fp16.none.{sha[:12]}" / "model.plan")
    assert res.plan == expected and not res.reused
    plan = res.plan.read_bytes()
    assert plan.startswith(b"{\"fake\""), "the plan must be exactly TensorRT's bytes, no header"
    side = json.loads((expected.parent / "model.json").read_text())
    assert side["format"] == cache.SIDECAR_FORMAT and side["graph"] == "visual"
    assert side["key"] == {"onnx_sha256": sha, "tensorrt_version": "10.3.0",
                           "gpu_name": ORIN[0], "compute_capability": "8.7",
                           "precision": "fp16", "plugins": "none"}
    assert side["plan_bytes"] == len(plan) and side["plan_sha256"]
    assert [i["name"] for i in side["inputs"]] == ["frame", "wave"]
    assert side["inputs"][0]["dtype"] == "UINT8" and side["outputs"][0]["shape"] == [1, 4]
    assert side["validation"]["passed"] and side["build_seconds"] >= 0
    assert side["versions"]["tensorrt"] == "10.3.0" and side["model_config"] == {"preset": "tiny"}
    assert (expected.parent / "timing.cache").read_bytes() == b"|timed"
    assert not [p for p in expected.parent.iterdir() if p.name.endswith(".tmp")]


def test_matching_engine_is_reused_unless_forced_and_timing_cache_is_fed_back(tmp_path):
    onnx_path = small_onnx(tmp_path / "m.onnx", "fp16")
    root = tmp_path / "engines"
    first = build(FakeTensorRT("10.3.0"), onnx_path, root)
    again = FakeTensorRT("10.3.0")
    second = build(again, onnx_path, root)
    assert second.reused and second.plan == first.plan and again.called("build_serialized_network") == []
    forced = FakeTensorRT("10.3.0")
    third = build(forced, onnx_path, root, force=True)
    assert not third.reused and len(forced.called("build_serialized_network")) == 1
    assert forced.called("create_timing_cache") == [("create_timing_cache", b"|timed")]


@pytest.mark.parametrize("change", ["onnx", "tensorrt", "gpu", "plugins_key", "precision_key"])
def test_every_key_field_changes_the_engine_folder(tmp_path, change):
    base = cache.EngineKey("a" * 64, "10.3.0", ORIN[0], "8.7", "fp16", "none")
    changed = {
        "onnx": cache.EngineKey("b" * 64, "10.3.0", ORIN[0], "8.7", "fp16", "none"),
        "tensorrt": cache.EngineKey("a" * 64, "11.0.0", ORIN[0], "8.7", "fp16", "none"),
        "gpu": cache.EngineKey("a" * 64, "10.3.0", "NVIDIA H100", "9.0", "fp16", "none"),
        "plugins_key": cache.EngineKey("a" * 64, "10.3.0", ORIN[0], "8.7", "fp16", "triton"),
        "precision_key": cache.EngineKey("a" * 64, "10.3.0", ORIN[0], "8.7", "fp32", "none"),
    }[change]
    assert base.digest() != changed.digest()
    assert cache.engine_dir("e", "m", "full", base) != cache.engine_dir("e", "m", "full", changed)
    assert base.mismatches(changed) and not base.mismatches(base)


def test_key_rejects_unknown_precision_and_plugin_mode():
    with pytest.raises(ValueError):
        cache.EngineKey("a", "10.3", "g", "8.7", "int8")
    with pytest.raises(ValueError):
        cache.EngineKey("a", "10.3", "g", "8.7", "fp16", "cuda")


def test_corrupt_plan_is_detected_and_rebuilt(tmp_path):
    onnx_path = small_onnx(tmp_path / "m.onnx", "fp16")
    root = tmp_path / "engines"
    res = build(FakeTensorRT("10.3.0"), onnx_path, root)
    res.plan.write_bytes(res.plan.read_bytes()[:-5])          # truncated copy
    with pytest.raises(EngineError, match="corrupt"):
        cache.verify_plan(res.plan)
    trt = FakeTensorRT("10.3.0")
    assert not build(trt, onnx_path, root).reused
    cache.verify_plan(res.plan)                                # healthy again


def test_broken_sidecar_is_a_one_line_error(tmp_path):
    res = build(FakeTensorRT("10.3.0"), small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "e")
    res.plan.with_name("model.json").write_text("{not json")
    with pytest.raises(EngineError, match="unreadable.*--force"):
        cache.verify_plan(res.plan)
    res.plan.with_name("model.json").unlink()
    with pytest.raises(EngineError, match="sidecar missing"):
        cache.verify_plan(res.plan)


def test_engine_for_another_gpu_or_version_is_refused_by_name(tmp_path):
    res = build(FakeTensorRT("10.3.0"), small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "e")
    cache.check_compatible(res.sidecar, "10.3.0", *ORIN)
    with pytest.raises(EngineError, match=r"TensorRT 10.3.0 \(this machine: 11.0.0\)"):
        cache.check_compatible(res.sidecar, "11.0.0", *ORIN)
    with pytest.raises(EngineError, match="this machine: NVIDIA H100 sm9.0"):
        cache.check_compatible(res.sidecar, "10.3.0", "NVIDIA H100", "9.0")


def test_failed_validation_is_loud_recorded_and_not_reused(tmp_path):
    onnx_path = small_onnx(tmp_path / "m.onnx", "fp16")
    root = tmp_path / "engines"

    def failing(plan, onnx_path):
        return {"max_abs_err": {"heatmap": 0.5}, "tolerance": 0.05, "passed": False}
    with pytest.raises(EngineError, match="disagrees with onnxruntime"):
        build(FakeTensorRT("10.3.0"), onnx_path, root, validate=failing)
    side = json.loads(next(root.rglob("model.json")).read_text())
    assert side["validation"]["passed"] is False and side["validation"]["max_abs_err"]["heatmap"] == 0.5
    trt = FakeTensorRT("10.3.0")
    assert not build(trt, onnx_path, root).reused


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "model.plan"
    cache.atomic_write_bytes(target, b"old")

    def crash(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        cache.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.plan"]


@pytest.mark.parametrize("version, aot, flags", [
    ("10.7.0", False, 1 << 1),                        # STRONGLY_TYPED; JIT plugin only
    ("10.9.0", True, (1 << 1) | (1 << 2)),            # + PREFER_AOT_PYTHON_PLUGINS
    ("11.0.0", True, 1 << 1),                         # PREFER_AOT (= 1 in 11); no typing flag
])
def test_triton_plugin_registration_follows_the_version(tmp_path, version, aot, flags):
    trt = FakeTensorRT(version)
    res = build(trt, small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "e", plugins="triton")
    assert trt.called("create_network") == [("create_network", flags)]
    assert ("plugin.register", "jsa_rt::slot_attention_step") in trt.calls
    assert ("plugin.impl", "jsa_rt::slot_attention_step") in trt.calls
    assert (("plugin.aot_impl", "jsa_rt::slot_attention_step") in trt.calls) == aot
    assert res.sidecar["key"]["plugins"] == "triton"
    assert ".triton." in res.plan.parent.name


def test_triton_plugin_functions_pass_tensorrt_plugin_checks(tmp_path, monkeypatch):
    """The fake's tensorrt.plugin makes the real decorators' checks at registration (class type
    hints, annotated returns); here its registered functions are also called the way TensorRT
    calls them at build time. The Triton compile itself (which the interpreter used by the tests
    cannot do in-process) is replaced by a recorder; tests/test_kernels.py compiles it for real."""
    from jsa_rt.runtime.trt_plugin import register_for_runtime
    from jsa_rt.kernels import aot
    compiled = []

    def compile_kernel(name, **kw):
        compiled.append((name, kw))
        return aot.CompiledKernel(".version 8.5\n.target sm_87\n.entry slot_attention_step_kernel(",
                                  "slot_attention_step_kernel", [], 1536)
    monkeypatch.setattr(aot, "compile_kernel", compile_kernel)
    trt = FakeTensorRT("10.9.0")
    build(trt, small_onnx(tmp_path / "m.onnx", "fp16"), tmp_path / "e", plugins="triton")
    register_for_runtime(trt)                      # a second registration in the process: harmless
    plugin = trt.plugin
    desc, _ = plugin.functions["register"]
    q = plugin.TensorDesc((1, 2, 64), trt.float32)
    k = plugin.TensorDesc((1, 49, 64), trt.float32)
    updates, attn = desc(q, k, k, 0.125, 1e-8)
    assert [e.constant_value() for e in updates.shape_expr] == [1, 2, 64]
    assert [e.constant_value() for e in attn.shape_expr] == [1, 2, 49] and attn.dtype == trt.float32
    entry, ptx, launch, extra = plugin.functions["aot_impl"](q, k, k, 0.125, 1e-8, (updates, attn), 0)
    # static sizes read through ShapeExpr.constant_value() (a method), Orin, PTX ISA 8.5 on TRT 10
    assert compiled == [("slot_attention_step", dict(cc=87, dtype="float32", num_warps=4, ptx_version=85,
                                                     num_slots=2, num_tokens=49, dim=64, scale=0.125, eps=1e-8))]
    assert entry == "slot_attention_step_kernel" and ptx.startswith(".version 8.5")
    assert launch.block_x == 128 and launch.grid_x is q.shape_expr[0] and launch.shared_mem == 1536
    assert isinstance(extra, plugin.SymIntExprs) and extra[0].expr is k.shape_expr[1]   # n_tokens


def test_postponed_annotations_would_be_refused_like_tensorrt_does():
    """The fake's checks are real checks: a register function written with string hints (what
    `from __future__ import annotations` gives) or without a return hint is refused."""
    plugin = FakeTensorRT("10.9.0").plugin

    def stringly(q: "TensorDesc", scale: "float") -> "TensorDesc":
        return q
    with pytest.raises(TypeError, match="must be a class"):
        plugin.register("x::y")(stringly)

    def unannotated(q, scale):
        return q
    unannotated.__annotations__ = {"q": plugin.TensorDesc, "scale": float}   # classes; no return hint
    with pytest.raises(ValueError, match="No return annotation"):
        plugin.register("x::y")(unannotated)


def test_a_timing_cache_from_elsewhere_is_replaced_not_fatal(tmp_path):
    onnx_path = small_onnx(tmp_path / "m.onnx", "fp16")
    foreign = tmp_path / "foreign.cache"
    foreign.write_bytes(b"FOREIGN timing cache")
    trt, lines = FakeTensorRT("10.3.0"), []
    tb.build_engine(onnx_path, root=tmp_path / "e", gpu=ORIN, trt=trt, precision="fp16",
                    validate=passing_validator, log=lines.append, timing_cache=foreign)
    assert any("does not fit this TensorRT/GPU" in line for line in lines)
    assert trt.called("create_timing_cache")[-1] == ("create_timing_cache", b"")


def test_lean_runtime_says_it_cannot_run_our_plans(tmp_path):
    """tensorrt_lean deserializes only version-compatible plans, which build-engine does not make."""
    from jsa_rt.runtime.trt_backend import TrtEngine
    lean = FakeTensorRT("10.3.0")
    lean.__name__ = "tensorrt_lean"
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"a plan the lean runtime refuses")
    with pytest.raises(EngineError, match="lean TensorRT runtime .* install the full tensorrt"):
        TrtEngine(plan, lean, cuda=None, verified=False)
    full = FakeTensorRT("10.3.0")
    with pytest.raises(EngineError, match="could not deserialize .* --force"):
        TrtEngine(plan, full, cuda=None, verified=False)


def test_cuda_graphs_without_cuda_python_is_one_line(monkeypatch):
    from jsa_rt.errors import DeviceError
    from jsa_rt.runtime import cuda_mem
    monkeypatch.setitem(sys.modules, "cuda", None)           # no cuda-python at all
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(DeviceError, match="CUDA graphs need cuda-python"):
        cuda_mem._Provider().begin_capture()


def test_a_batch_1_engine_runs_with_fixed_shapes_set_once(tmp_path):
    """TrtEngine as the tensorrt backend uses it, on the stand-ins (FakeTensorRT's context runs the
    graph on onnxruntime): shapes are set once at load, never per call; other shapes are refused."""
    from jsa_rt.runtime.trt_backend import TrtEngine
    from fake_trt_runtime import FakeCuda
    trt = FakeTensorRT("10.3.0")
    res = build(trt, small_onnx(tmp_path / "m.onnx", "fp32"), tmp_path / "e", precision="fp32",
                gpu=(FakeCuda.gpu_name, FakeCuda.compute_capability))
    engine = TrtEngine(res.plan, trt, FakeCuda())
    wave = np.arange(4, dtype=np.float32).reshape(1, 4)
    out = engine.infer({"frame": np.zeros((1, 4, 4, 3), np.uint8), "wave": wave})
    np.testing.assert_allclose(out["heatmap"], wave @ np.ones((4, 4), np.float32))
    assert [c[1:3] for c in trt.called("context.set_input_shape")] == [("frame", (1, 4, 4, 3)), ("wave", (1, 4))]
    with pytest.raises(EngineError, match=r"wave has shape \(2, 4\), the engine takes \(1, 4\)"):
        engine.infer({"frame": np.zeros((1, 4, 4, 3), np.uint8), "wave": np.zeros((2, 4), np.float32)})
