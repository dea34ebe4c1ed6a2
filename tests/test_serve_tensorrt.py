"""`jsa-rt serve --backend tensorrt` without TensorRT: the engines the server builds and runs,
through FakeTensorRT (a recording stand-in whose execution context runs the ONNX graph on
onnxruntime; tests/fake_tensorrt.py, tests/fake_trt_runtime.py) and a fake CUDA provider.
Nothing here proves an engine builds or runs on a real TensorRT; it checks what jsa-rt asks of
the documented API: the batch profile, the shapes set per request, the cache, the errors, and
which backend `auto` picks here."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jsa_rt.config import PRESETS
from jsa_rt.errors import EngineError
from jsa_rt.export import engine_check
from jsa_rt.export.serve import SERVE_VENV
from jsa_rt.export.serve_trt import choose_backend, tensorrt_problem, trt_branches
from fake_tensorrt import FakeTensorRT
from fake_trt_runtime import FakeCuda

CFG = PRESETS["tiny"].with_overrides(image_size=16, image_stride=16, audio_seconds=0.001, dim=4)
L, S, D, Q = CFG.num_samples, CFG.image_size, CFG.dim, CFG.num_slots
REPO = SERVE_VENV.parent


def serve_graphs(folder, seed: int = 0):
    """x.audio.onnx and x.visual.onnx shaped like engines/serve/'s: a dynamic batch axis, and a
    visual graph that returns its audio_slot input unchanged. -> the base path x.onnx."""
    rng = np.random.default_rng(seed)
    f32, axes = TensorProto.FLOAT, lambda name, *a: numpy_helper.from_array(np.array(a, np.int64), name)

    def value(name, kind, *dims):
        return helper.make_tensor_value_info(name, kind, ["batch", *dims])

    def save(graph, kind):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        helper.set_model_props(model, {"jsa_rt.graph": kind, "jsa_rt.precision": "fp32", "jsa_rt.plugins": "none",
                                       "jsa_rt.model_name": "tiny-serve", "jsa_rt.config": json.dumps(CFG.to_dict())})
        onnx.save(model, str(folder / f"x.{kind}.onnx"))
    w_query = numpy_helper.from_array(rng.standard_normal((L, Q * D)).astype(np.float32), "w_query")
    w_slot = numpy_helper.from_array(rng.standard_normal((L, D)).astype(np.float32), "w_slot")
    save(helper.make_graph([
        helper.make_node("MatMul", ["wave", "w_query"], ["flat"]),
        helper.make_node("Reshape", ["flat", "query_shape"], ["audio_query"]),
        helper.make_node("MatMul", ["wave", "w_slot"], ["audio_slot"])], "audio",
        [value("wave", f32, L)], [value("audio_query", f32, Q, D), value("audio_slot", f32, D)],
        [w_query, w_slot, axes("query_shape", -1, Q, D)]), "audio")
    save(helper.make_graph([
        helper.make_node("Cast", ["frame"], ["pixels"], to=f32),
        helper.make_node("ReduceMean", ["pixels", "channel"], ["heatmap"], keepdims=0),
        helper.make_node("ReduceSum", ["audio_query", "feature"], ["aud"], keepdims=0),
        helper.make_node("Mul", ["audio_slot", "two"], ["image_slot"]),
        helper.make_node("ReduceSum", ["audio_slot", "one"], ["confidence"], keepdims=0)], "visual",
        [value("frame", TensorProto.UINT8, S, S, 3), value("audio_query", f32, Q, D), value("audio_slot", f32, D)],
        [value("heatmap", f32, S, S), value("aud", f32, Q), value("image_slot", f32, D),
         value("audio_slot", f32, D), value("confidence", f32)],
        [axes("channel", 3), axes("feature", 2), axes("one", 1),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")]), "visual")
    return folder / "x.onnx"


def start(base, monkeypatch, max_batch=6, version="10.3.0"):
    """One server start's engines on a fresh FakeTensorRT; the build's check against onnxruntime
    (engine_check) runs for real, on the same stand-ins."""
    trt, lines = FakeTensorRT(version), []
    monkeypatch.setattr(engine_check, "import_tensorrt_runtime", lambda: trt)
    monkeypatch.setattr(engine_check, "open_cuda", lambda *a: FakeCuda())
    audio, visual = trt_branches(base, max_batch=max_batch, trt=trt, open_cuda=FakeCuda, log=lines.append)
    return trt, audio, visual, lines


def batch(n: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"frame": rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8),
            "audio_query": rng.standard_normal((n, Q, D)).astype(np.float32),
            "audio_slot": rng.standard_normal((n, D)).astype(np.float32)}


@pytest.fixture
def base(tmp_path):
    return serve_graphs(tmp_path)


def test_the_profile_covers_batch_1_to_max_batch_for_every_input(base, monkeypatch):
    trt, audio, visual, _ = start(base, monkeypatch, max_batch=6)
    set_shapes = {c[1]: c[2:] for c in trt.called("profile.set_shape")}
    assert set_shapes == {                                        # (min, opt, max): opt = max_batch
        "wave": ([1, L], [6, L], [6, L]),
        "frame": ([1, S, S, 3], [6, S, S, 3], [6, S, S, 3]),
        "audio_query": ([1, Q, D], [6, Q, D], [6, Q, D]),
        "audio_slot": ([1, D], [6, D], [6, D])}
    assert len(trt.called("add_optimization_profile")) == 2       # one profile per engine
    for branch in (audio, visual):
        side = json.loads(branch.plan.with_name("model.json").read_text())
        assert side["profile"]["audio_slot" if branch is visual else "wave"]["max"][0] == 6
        assert side["validation"]["passed"] and side["validation"]["reference"] == "onnxruntime-cpu"
        assert branch.plan.parent.parent.parent == base.parent / "tensorrt" / "max-batch-6" / "tiny-serve" \
            / "nvidia-fake-gpu-sm90" and branch.plan.parent.parent.name == "trt10.3.0"
    # Triton's tensors: no batch axis, and the echoed audio_slot is not an output
    assert visual.outputs == {"heatmap": (np.float32, (S, S)), "aud": (np.float32, (Q,)),
                              "image_slot": (np.float32, (D,)), "confidence": (np.float32, ())}
    assert visual.inputs["frame"] == (np.uint8, (S, S, 3)) and audio.inputs == {"wave": (np.float32, (L,))}
    visual.close()


def test_a_batch_of_3_sets_batch_3_shapes_and_returns_batch_3_outputs(base, monkeypatch):
    trt, audio, visual, _ = start(base, monkeypatch, max_batch=6)
    feeds = batch(3)
    first = len(trt.calls)
    out = visual(**feeds)
    assert sorted(c[1:3] for c in trt.calls[first:] if c[0] == "context.set_input_shape") == [
        ("audio_query", (3, Q, D)), ("audio_slot", (3, D)), ("frame", (3, S, S, 3))]
    assert {n: a.shape for n, a in out.items()} == {"heatmap": (3, S, S), "aud": (3, Q), "image_slot": (3, D),
                                                    "confidence": (3, 1)}
    reference = ort.InferenceSession(str(base.with_name("x.visual.onnx")), providers=["CPUExecutionProvider"])
    for i in range(3):                                            # each row is that request's own answer
        alone = dict(zip(["heatmap", "aud", "image_slot", "confidence"], reference.run(
            ["heatmap", "aud", "image_slot", "confidence"], {k: v[i:i + 1] for k, v in feeds.items()})))
        for name, value in alone.items():
            np.testing.assert_allclose(out[name][i].reshape(-1), value[0].reshape(-1), rtol=1e-6, err_msg=name)
    assert audio(wave=np.ones((3, L), np.float32))["audio_query"].shape == (3, Q, D)
    again = len(trt.calls)
    visual(**batch(3, seed=2))                                    # same batch size: shapes stay set
    assert not [c for c in trt.calls[again:] if c[0] == "context.set_input_shape"]
    with pytest.raises(EngineError) as err:                       # more than the profile takes
        visual(**batch(7))
    assert "\n" not in str(err.value) and f"the engine takes (1..6, {S}, {S}, 3)" in str(err.value)
    visual.close()


def test_every_cuda_and_tensorrt_call_runs_on_one_gpu_thread(base, monkeypatch):
    """PyTriton calls each model from its own thread; CUDA state belongs to a thread."""
    cudas = []

    def provider():
        cudas.append(FakeCuda())
        return cudas[-1]
    trt, lines = FakeTensorRT("11.0.0"), []
    monkeypatch.setattr(engine_check, "import_tensorrt_runtime", lambda: trt)
    monkeypatch.setattr(engine_check, "open_cuda", lambda *a: provider())
    audio, visual = trt_branches(base, max_batch=4, trt=trt, open_cuda=provider, log=lines.append)
    answers = []
    callers = [threading.Thread(target=lambda i=i: answers.append(visual(**batch(2, seed=i)))) for i in range(3)]
    callers += [threading.Thread(target=lambda: answers.append(audio(wave=np.zeros((4, L), np.float32))))]
    for t in callers:
        t.start()
    for t in callers:
        t.join(10)
    assert len(answers) == 4
    context_threads = {c[-1] for c in trt.calls if c[0].startswith("context.")}
    assert len(context_threads) == 1 and threading.get_ident() not in context_threads
    assert cudas[0].threads == context_threads
    audio.close()
    assert cudas[0].closed and visual.engine is None and audio.engine is None


def test_engines_are_reused_on_a_second_start_and_rebuilt_when_a_graph_changes(base, monkeypatch):
    trt, audio, visual, _ = start(base, monkeypatch)
    assert len(trt.called("build_serialized_network")) == 2
    audio.close()
    copy = base.parent / "tensorrt" / "x.visual.onnx"            # the visual graph without its echo
    stamp = copy.stat().st_mtime_ns
    trt, audio, visual, lines = start(base, monkeypatch)         # second start: nothing built
    assert trt.called("build_serialized_network") == [] and sum("[cache] reusing" in x for x in lines) == 2
    assert copy.stat().st_mtime_ns == stamp
    audio.close()
    serve_graphs(base.parent, seed=1)                            # new audio weights; the same visual graph
    trt, audio, visual, lines = start(base, monkeypatch)
    assert trt.called("parse_from_file") == [("parse_from_file", str(base.with_name("x.audio.onnx")))]
    assert len(trt.called("build_serialized_network")) == 1 and sum("[cache] reusing" in x for x in lines) == 1
    plans = sorted(p.parent.name for p in (base.parent / "tensorrt").rglob("model.plan"))
    assert len(plans) == 3 and len({p.split(".")[-1] for p in plans}) == 3   # keyed by each graph's sha256
    audio.close()
    trt, audio, visual, _ = start(base, monkeypatch, max_batch=2)   # another profile: other engines
    assert len(trt.called("build_serialized_network")) == 2
    audio.close()


def test_a_graph_without_a_batch_axis_is_refused_in_one_line(base, monkeypatch):
    model = onnx.load(str(base.with_name("x.audio.onnx")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(base.with_name("x.audio.onnx")))
    with pytest.raises(Exception) as err:
        start(base, monkeypatch)
    assert "\n" not in str(err.value) and "--dynamic-batch" in str(err.value)


# ---- which backend -------------------------------------------------------------------------------
def test_backend_tensorrt_without_tensorrt_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)          # `import tensorrt` -> ImportError
    assert tensorrt_problem() == "no TensorRT with a builder can be imported"
    with pytest.raises(EngineError) as err:
        choose_backend("tensorrt")
    msg = str(err.value)
    assert "\n" not in msg and sys.executable in msg and "--backend onnxruntime" in msg
    assert f"`{sys.executable} -m pip install tensorrt cuda-python onnx" in msg


def test_auto_picks_tensorrt_where_it_works_and_onnxruntime_where_not():
    assert choose_backend("auto", problem=lambda: None) == ("tensorrt", "chosen by auto")
    assert choose_backend("tensorrt", problem=lambda: None) == ("tensorrt", "")
    assert choose_backend("onnxruntime", problem=lambda: 1 / 0) == ("onnxruntime", "")
    assert choose_backend("auto", problem=lambda: "no GPU") == ("onnxruntime", "chosen by auto: no GPU")


def test_auto_falls_back_to_onnxruntime_here():
    why = tensorrt_problem()
    if why is None:
        pytest.skip("TensorRT and a CUDA device work in this interpreter")
    backend, note = choose_backend("auto")
    assert backend == "onnxruntime" and note == f"chosen by auto: {why}"


@pytest.mark.skipif(not any(SERVE_VENV.glob("lib/python3*/site-packages/pytriton/__init__.py")),
                    reason=f"no {SERVE_VENV} with nvidia-pytriton: run tools/setup.sh")
def test_serve_backend_tensorrt_from_the_cli_is_one_line_where_tensorrt_is_missing(tmp_path):
    """The user's command: from .venv it re-executes under .venv-serve, which has no TensorRT."""
    check = subprocess.run([str(SERVE_VENV / "bin" / "python"), "-c", "import tensorrt"], capture_output=True)
    if check.returncode == 0:
        pytest.skip(f"{SERVE_VENV} has TensorRT")
    proc = subprocess.run([sys.executable, "-m", "jsa_rt.cli", "serve", "--backend", "tensorrt",
                           "--model", str(tmp_path / "x.onnx")], cwd=str(REPO), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jsa-rt serve: error: --backend tensorrt: no TensorRT"), lines
    assert "-m pip install tensorrt cuda-python onnx" in lines[0] and ".venv-serve/bin/python" in lines[0]
