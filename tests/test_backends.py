"""Runtime backends: torch and onnxruntime agree on the same inputs, the split audio/visual
calls equal the full run, input and file errors are one line, and the onnxruntime/tensorrt
paths import no torch (checked in a subprocess where importing torch fails)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine_helpers import contrast_model, real_inputs
from jsa_rt.errors import EngineError, InputError, JsaError
from jsa_rt.export import onnx_export as oe
from jsa_rt.runtime import Maps, available_backends, load_backend
from jsa_rt.runtime.ort_backend import OrtBackend
from jsa_rt.runtime.torch_backend import TorchBackend

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny model (contrasty maps), as torch and as exported ONNX graphs."""
    model = contrast_model("tiny")
    out = tmp_path_factory.mktemp("backends")
    paths = oe.export_all(model, out / "tiny.onnx", model_name="tiny", log=lambda *_: None)
    return model, paths


@pytest.fixture(scope="module")
def backends(tiny):
    model, paths = tiny
    torch_backend = TorchBackend(model=model, device="cpu", kernels="torch")
    ort_backend = load_backend("onnxruntime", model=str(paths["full"]), device="cpu")
    yield torch_backend, ort_backend
    torch_backend.close()
    ort_backend.close()


def assert_same(a: Maps, b: Maps, atol: float):
    for field in ("heatmap", "aud", "img", "image_slot", "audio_slot"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.shape == y.shape and x.dtype == np.float32
        np.testing.assert_allclose(x, y, atol=atol, err_msg=field)
    assert abs(a.confidence - b.confidence) <= atol
    assert a.peak == b.peak


def test_torch_and_onnxruntime_agree_on_real_and_synthetic_inputs(backends):
    torch_b, ort_b = backends
    cfg = torch_b.config
    assert ort_b.config == cfg and ort_b.name == "onnxruntime" and torch_b.name == "torch"
    ex = oe.example_inputs(cfg)
    frame, wave = real_inputs(cfg)
    for f, w in ((ex["frame"][0], ex["wave"][0]), (frame, wave)):
        a, b = torch_b.run(f, w), ort_b.run(f, w)
        assert_same(a, b, atol=1e-4)
        assert a.heatmap.shape == (cfg.image_size, cfg.image_size)
        assert 0.0 <= a.heatmap.min() and a.heatmap.max() <= 1.0 and 0.0 <= a.confidence <= 1.0
        assert a.aud.shape == (cfg.grid, cfg.grid) and a.image_slot.shape == (cfg.dim,)


def test_audio_then_visual_equals_full_run_on_every_backend(backends):
    frame, wave = real_inputs(backends[0].config)
    for backend in backends:
        state = backend.run_audio(wave)
        assert_same(backend.run_visual(frame, state), backend.run(frame, wave), atol=1e-5)
        # the state is reusable across frames (the live loop refreshes audio at a lower rate)
        other = np.ascontiguousarray(frame[::-1])
        assert_same(backend.run_visual(other, state), backend.run(other, wave), atol=1e-5)


def test_wrong_inputs_are_one_line_errors(backends):
    cfg = backends[0].config
    s, n = cfg.image_size, cfg.num_samples
    good_frame, good_wave = np.zeros((s, s, 3), np.uint8), np.zeros(n, np.float32)
    for backend in backends:
        bad = [(np.zeros((s + 1, s, 3), np.uint8), good_wave, "frame must be uint8"),
               (good_frame.astype(np.float32), good_wave, "frame must be uint8"),
               (good_frame[..., 0], good_wave, "frame must be uint8"),
               (good_frame, np.zeros(n - 1, np.float32), "audio must be float32"),
               (good_frame, np.zeros((n, 2), np.float32), "audio must be float32")]
        for frame, wave, message in bad:
            with pytest.raises(InputError, match=message) as err:
                backend.run(frame, wave)
            assert "\n" not in str(err.value) and str(s) in str(err.value) or str(n) in str(err.value)
    state = backends[0].run_audio(good_wave)
    with pytest.raises(InputError, match="AudioState of this onnxruntime"):
        backends[1].run_visual(good_frame, state)


def test_corrupt_foreign_and_missing_onnx_files(tmp_path, tiny):
    _, paths = tiny
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(paths["full"].read_bytes()[:1000])
    with pytest.raises(EngineError, match="corrupt or not an ONNX graph"):
        OrtBackend(corrupt)
    with pytest.raises(EngineError, match="not found"):
        OrtBackend(tmp_path / "missing.onnx")
    import onnx
    proto = onnx.load(str(paths["full"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    with pytest.raises(EngineError, match="no jsa-rt metadata"):
        OrtBackend(tmp_path / "foreign.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(paths["full"].read_bytes())
    backend = OrtBackend(lonely)
    with pytest.raises(EngineError, match="no audio graph next to"):
        backend.run_audio(np.zeros(backend.config.num_samples, np.float32))


def test_tensorrt_backend_errors_without_tensorrt(tmp_path):
    with pytest.raises(EngineError, match="engine not found"):
        load_backend("tensorrt", model=str(tmp_path / "none.plan"))
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not a plan")
    (tmp_path / "x.plan.json").write_text(json.dumps({"format": "jsa-rt-engine/1", "plan_bytes": 3}))
    with pytest.raises(EngineError, match="corrupt"):
        load_backend("tensorrt", model=str(plan))
    with pytest.raises(EngineError, match="CUDA only"):
        load_backend("tensorrt", model=str(plan), device="cpu")


def test_auto_prefers_onnxruntime_on_cpu_and_unknown_names_fail(tiny):
    _, paths = tiny
    backend = load_backend("auto", model=str(paths["full"]), device="cpu")
    assert backend.name == "onnxruntime"
    with pytest.raises(JsaError, match="unknown backend"):
        load_backend("tflite")
    assert {"onnxruntime", "torch"} <= set(available_backends())


@pytest.mark.skipif("tensorrt" in available_backends(), reason="TensorRT is installed here")
def test_auto_says_why_nothing_fits_an_engine_file_or_a_missing_gpu(tmp_path, tiny):
    plan = tmp_path / "model.engine"
    plan.write_bytes(b"not checked: no TensorRT to read it")
    with pytest.raises(EngineError, match="tensorrt: not installed"):
        load_backend("auto", model=str(plan))
    from jsa_rt.runtime import _cuda_possible
    if not _cuda_possible("onnxruntime") and not _cuda_possible("torch"):
        _, paths = tiny
        with pytest.raises(EngineError, match="no CUDA GPU visible") as error:
            load_backend("auto", model=str(paths["full"]), device="cuda")
        assert "none installed" not in str(error.value)


def test_onnxruntime_and_tensorrt_paths_import_no_torch(tiny):
    """In a fresh interpreter where `import torch` fails: import the runtime, run onnxruntime."""
    _, paths = tiny
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import jsa_rt.runtime as rt
        import jsa_rt.runtime.ort_backend, jsa_rt.runtime.trt_backend, jsa_rt.runtime.cuda_mem
        import jsa_rt.runtime.engine_cache
        names = rt.available_backends()
        b = rt.load_backend("onnxruntime", model={str(paths['full'])!r}, device="cpu")
        cfg = b.config
        m = b.run(np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8), np.zeros(cfg.num_samples, np.float32))
        m2 = b.run_visual(np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8),
                          b.run_audio(np.zeros(cfg.num_samples, np.float32)))
        try:
            rt.load_backend("tensorrt", model="missing.plan")
        except rt.JsaError as exc:
            print("tensorrt:", exc)
        assert "torch" not in sys.modules, "torch was imported"
        print("ok", m.heatmap.shape, names)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok" in result.stdout and "engine not found" in result.stdout
