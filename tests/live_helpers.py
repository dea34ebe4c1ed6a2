"""Helpers for the live tests: a numpy stand-in backend, synthetic clips, a file-backed ALSA mic.

`FakeBackend` implements the runtime Backend interface with a cheap numpy computation (it
"localizes" the reddest region and is confident when the audio is loud). It stands in for a
model only where a model's answer is not what is tested (threading, geometry, outputs); the
end-to-end tests also run the real onnxruntime backend when `jsa_rt.runtime` provides it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jsa_rt.config import get_preset

REPO = Path(__file__).resolve().parents[1]


@dataclass
class FakeMaps:
    heatmap: np.ndarray
    aud: np.ndarray
    img: np.ndarray
    image_slot: np.ndarray
    audio_slot: np.ndarray
    confidence: float


class FakeBackend:
    """Backend interface, numpy only: heatmap = normalised redness, confidence = audio loudness."""
    name = "fake"

    def __init__(self, preset: str = "tiny"):
        self.config = get_preset(preset)
        self.audio_calls = 0
        self.visual_calls = 0
        self.closed = False
        self.thread = None

    def run_audio(self, audio: np.ndarray) -> dict:
        import threading
        self.thread = threading.current_thread().name
        assert audio.shape == (self.config.num_samples,) and audio.dtype == np.float32
        self.audio_calls += 1
        return {"rms": float(np.sqrt(np.mean(audio ** 2)))}

    def run_visual(self, frame: np.ndarray, audio_state: dict) -> FakeMaps:
        s = self.config.image_size
        assert frame.shape == (s, s, 3) and frame.dtype == np.uint8
        self.visual_calls += 1
        f = frame.astype(np.float32)
        red = np.clip(f[..., 0] - 0.5 * (f[..., 1] + f[..., 2]), 0, None)
        heat = red / red.max() if red.max() > 0 else red
        g = self.config.grid
        small = heat.reshape(g, s // g, g, s // g).mean(axis=(1, 3))
        d = 4
        return FakeMaps(heat.astype(np.float32), small, small, np.zeros(d, np.float32),
                        np.zeros(d, np.float32), float(min(1.0, audio_state["rms"] * 10)))

    def run(self, frame, audio):
        return self.run_visual(frame, self.run_audio(audio))

    def close(self) -> None:
        self.closed = True


def write_red_square_clip(path: Path, frames: int = 30, fps: float = 15.0, size=(160, 120),
                          side: int = 30) -> list[tuple[float, float, float, float]]:
    """A grey clip with a red square moving left to right; returns its box per frame in [0, 1]."""
    import cv2
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    boxes = []
    for i in range(frames):
        img = np.full((h, w, 3), 110, np.uint8)
        x = int(5 + (w - side - 10) * i / max(1, frames - 1))
        y = (h - side) // 2
        img[y:y + side, x:x + side] = (30, 30, 230)      # BGR red
        writer.write(img)
        boxes.append((x / w, y / h, (x + side) / w, (y + side) / h))
    writer.release()
    return boxes


def write_tone_wav(path: Path, seconds: float, rate: int = 16000, amp: float = 0.3) -> np.ndarray:
    import soundfile as sf
    t = np.arange(int(seconds * rate)) / rate
    wave = (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(str(path), wave, rate)
    return wave


def alsa_file_mic(home: Path, raw_s16: Path, rate: int = 16000) -> dict:
    """Write the platform.md `.asoundrc` (filemic + testmic) into `home`; returns an env for it."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".asoundrc").write_text(
        f'pcm.filemic {{ type file slave.pcm "null" file "/dev/null" infile "{raw_s16}" format "raw" }}\n'
        f'pcm.testmic {{ type plug slave {{ pcm "filemic" format S16_LE rate {rate} channels 1 }} }}\n')
    env = dict(os.environ, HOME=str(home))
    return env


def run_python(code: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=timeout)


def real_backend_or_none(preset: str = "tiny"):
    """The onnxruntime backend with random `preset` weights, or None while jsa_rt.runtime lacks it."""
    try:
        from jsa_rt.runtime import load_backend, available_backends
    except ImportError:
        return None
    if "onnxruntime" not in available_backends():
        return None
    return lambda: load_backend("onnxruntime", None, preset=preset, device="cpu")


class StreamingSoundDevice:
    """sounddevice with one mono microphone whose stream plays `wave` (looped) in real time:
    a thread calls the stream's callback with 20 ms float32 blocks, as PortAudio does."""

    def __init__(self, wave: np.ndarray, rate: int = 16000):
        self.wave, self.rate = np.asarray(wave, np.float32), rate

    def query_devices(self, kind=None):
        dev = {"index": 0, "name": "Fake Mic", "max_input_channels": 1, "default_samplerate": float(self.rate)}
        return dev if kind == "input" else [dev]

    def check_input_settings(self, device=None, samplerate=None, channels=None, dtype=None):
        if samplerate not in (None, self.rate) or channels not in (None, 1):
            raise ValueError("Invalid setting")

    def InputStream(self, device, samplerate, channels, dtype, blocksize, callback):  # noqa: N802
        return _FakeStream(self.wave, blocksize, samplerate, callback)


class _FakeStream:
    def __init__(self, wave, blocksize, rate, callback):
        import threading
        self.wave, self.blocksize, self.rate, self.callback = wave, blocksize, rate, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-portaudio", daemon=True)

    def _run(self):
        import time
        from types import SimpleNamespace
        info, status = SimpleNamespace(inputBufferAdcTime=0.0, currentTime=0.0), SimpleNamespace(input_overflow=False)
        t0, pos = time.monotonic(), 0
        while not self._stop.is_set():
            due = t0 + (pos + self.blocksize) / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            idx = np.arange(pos, pos + self.blocksize) % self.wave.size
            self.callback(self.wave[idx][:, None], self.blocksize, info, status)
            pos += self.blocksize

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(2.0)

    def close(self):
        pass
