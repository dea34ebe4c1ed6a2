"""The live path never needs PyTorch: run it with `import torch` made impossible."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from live_helpers import REPO, write_red_square_clip, write_tone_wav

BLOCK_TORCH = """
import sys
class NoTorch:
    '''Makes `import torch` (and friends) fail, as on a machine without PyTorch.'''
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'triton'):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, NoTorch())
"""

SCRIPT = BLOCK_TORCH + """
import importlib, json, pkgutil
import jsa_rt.live
modules = sorted(m.name for m in pkgutil.iter_modules(jsa_rt.live.__path__, 'jsa_rt.live.'))
for name in modules:
    importlib.import_module(name)
from jsa_rt.live.doctor import collect
checks = {c.name: c.detail for c in collect()}
from jsa_rt.cli import main
rc = main(['live', '--camera', sys.argv[1], '--mic', 'file://' + sys.argv[2], '--no-pace', '--headless',
           '--backend', 'onnxruntime', '--model', sys.argv[3], '--log-json', sys.argv[4]])
print(json.dumps({'modules': modules, 'rc': rc, 'torch_loaded': 'torch' in sys.modules,
                  'torch_check': checks.get('torch')}))
"""


@pytest.fixture(scope="module")
def tiny_onnx():
    runtime = pytest.importorskip("jsa_rt.runtime")
    if "onnxruntime" not in runtime.available_backends():
        pytest.skip("onnxruntime is not installed")
    return str(runtime.onnx_for(None, "tiny"))      # exported (with torch) here, once


def test_blocker_really_blocks_torch():
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True)
    assert done.returncode != 0 and "blocked by the test" in done.stderr


def test_live_runs_on_onnxruntime_without_torch(tmp_path, tiny_onnx):
    clip, wav, log = tmp_path / "clip.mp4", tmp_path / "tone.wav", tmp_path / "log.jsonl"
    write_red_square_clip(clip, frames=12, fps=12)
    write_tone_wav(wav, 1.0)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(clip), str(wav), tiny_onnx, str(log)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0 and out["torch_loaded"] is False
    assert {"jsa_rt.live.pipeline", "jsa_rt.live.cli_live", "jsa_rt.live.demo", "jsa_rt.live.doctor",
            "jsa_rt.live.devices", "jsa_rt.live.video", "jsa_rt.live.audio"} <= set(out["modules"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 12 and all(r["backend"] == "onnxruntime" for r in records)


def test_sound_locator_runs_the_shipped_model_without_torch():
    script = BLOCK_TORCH + """
import json
import numpy as np
from jsa_rt import SoundLocator
with SoundLocator(backend="onnxruntime", min_confidence=0.0) as locator:    # shipped edge-jsa
    t = np.arange(48000) / 48000
    locator.push_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    where = locator.locate(np.full((240, 320, 3), 80, np.uint8))
print(json.dumps({'active': where.active, 'shape': list(where.heatmap_px().shape),
                  'torch_loaded': 'torch' in sys.modules}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=str(REPO), capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"active": True, "shape": [240, 320], "torch_loaded": False}


def test_auto_backend_without_a_gpu_driver_never_imports_torch():
    """With torch installed (not blocked) and no NVIDIA driver, the default `auto` picks
    onnxruntime on the CPU without importing torch to ask about CUDA."""
    script = """
import json, sys
import numpy as np
import jsa_rt.runtime as runtime
runtime.nvidia_driver_present = lambda: False      # as on this CPU machine, and on any without a driver
from jsa_rt import SoundLocator
with SoundLocator(min_confidence=0.0) as locator:                         # backend auto, edge-jsa
    locator.push_audio(np.zeros(16000, np.float32), 16000)
    locator.locate(np.full((240, 320, 3), 80, np.uint8))
    name = type(locator.backend).__name__
print(json.dumps({'backend': name, 'torch_installed': 'torch' in runtime.available_backends(),
                  'torch_loaded': 'torch' in sys.modules}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=str(REPO), capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if not out["torch_installed"]:
        pytest.skip("torch is not installed: nothing to show")
    assert out["backend"] == "OrtBackend" and out["torch_loaded"] is False


def test_driver_probe_sees_device_nodes(tmp_path, monkeypatch):
    from jsa_rt import machine
    node = tmp_path / "nvidiactl"
    monkeypatch.setattr(machine, "_DRIVER_NODES", (str(node),))
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    assert machine.nvidia_driver_present() is False
    node.touch()
    assert machine.nvidia_driver_present() is True


def test_the_main_job_runs_without_torch(tmp_path):
    """`jsa-rt demo` as the README runs it: the default model on the default scene (real photos and
    recordings when ../shared/data is there, which reads the class map), onnxruntime, no torch."""
    from jsa_rt.runtime import available_backends
    if "onnxruntime" not in available_backends():
        pytest.skip("onnxruntime is not installed")
    script = BLOCK_TORCH + """
import json, sys
from jsa_rt.cli import main
rc = main(['demo', '--out', sys.argv[1], '--segments', '2', '--segment-seconds', '1', '--fps', '10', '--no-pace',
           '--backend', 'onnxruntime'])
print(json.dumps({'rc': rc, 'torch_loaded': 'torch' in sys.modules}))
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=str(REPO), capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"rc": 0, "torch_loaded": False}
    assert json.loads((tmp_path / "score.json").read_text())["model"] == "edge-jsa-listen"
    # its training data's terms are said before it runs
    assert "model edge-jsa-listen: non-commercial use only" in done.stdout.splitlines()[0]
