"""Localization inside your own loop (a ROS node, a GStreamer app, a robot's control loop).

    from jsa_rt import SoundLocator
    locator = SoundLocator()                          # the shipped default model, the fastest backend installed
    locator.push_audio(block, sample_rate=48000)      # as audio arrives: any rate, mono or (n, channels)
    where = locator.locate(frame)                     # any size, BGR uint8 as OpenCV delivers it
    if where.active:
        print(where.peak_px, where.box_px, where.confidence, where.bearing_deg(70))
    heat = where.heatmap_px()                         # (H, W) float32 over the whole frame
    locator.draw(frame, where)                        # the live view's overlay, in place

No threads and no devices: the caller owns capture and timing. `push_audio` may run on an
audio callback thread while `locate` runs on another (one writer, one reader: the ring buffer
is lock-free); everything else belongs to one thread. It is built from the pieces
`jsa-rt live` uses (a runtime backend, `model_input`, `AudioWindow` over a ring buffer, the
render `Localizer`), so a result is what the live view would show for the same frame and
audio. With the onnxruntime or TensorRT backend, torch is never imported.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..audio_io import to_mono
from ..errors import InputError
from .audio import SILENCE_DB, AudioChunk, AudioWindow, RingAudioSource
from .settings import LiveOptions
from .preprocess import CROP_MODES
from .render import Localizer, RenderOptions, draw_localization
from .ring import RingBuffer
from .step import FrameStep
from .where import Where

BUFFER_SECONDS = 30.0          # audio kept beyond the model's window


class PushedAudio(RingAudioSource):
    """An audio source the caller feeds: a ring buffer at the caller's sample rate."""

    name = "pushed audio"

    def __init__(self, rate: int, window_seconds: float):
        self.rate = int(rate)
        self.ring = RingBuffer(int(self.rate * (window_seconds + BUFFER_SECONDS)), self.rate)

    def push(self, mono: np.ndarray) -> None:
        self.ring.write(mono, time.monotonic())      # zeroes and counts NaN / inf samples

    def position_for(self, t_capture: float, t_media: float) -> int:
        return self.ring.written                      # the caller pushes audio up to "now"


class SoundLocator:
    """Frames and audio in, where the sound comes from out. One per stream (it keeps state).

    model:          checkpoint .pt, .onnx, TensorRT plan, or shipped name (default: shipped.DEFAULT_MODEL)
    backend:        "auto" (fastest installed), "onnxruntime", "tensorrt" or "torch"
    audio_hop:      seconds of pushed audio between audio-branch refreshes (the visual branch
                    runs on every `locate`); 0 refreshes on every call
    crop:           "resize" (whole frame, squeezed) or "center" (centred square)
    color:          "bgr" (OpenCV) or "rgb" frames
    min_level_db, min_confidence: the "no source" gate (defaults: as `jsa-rt live`; the
                    model's own calibrated confidence threshold)
    noise_margin_db: also "no source" until the level is this far above the recent noise floor
                    (`jsa-rt live --noise-margin-db`; None: off)
    persistence_ms: temporal smoothing of the map (0: none; the live view uses 250)
    server:         "grpc://HOST:8001" or "http://HOST:8000": inference on a `jsa-rt serve` server
                    (it chooses the model; leave model/backend unset); a server that does not
                    answer within `timeout_s` (default 2) raises a one-line ServerUnavailable
    """

    def __init__(self, model=None, backend: str = "auto", device: str | None = None,
                 audio_hop: float = LiveOptions.audio_hop, crop: str = LiveOptions.crop, color: str = "bgr",
                 min_level_db: float = RenderOptions.min_level_db, min_confidence: float | None = None,
                 noise_margin_db: float | None = None, persistence_ms: float = 0.0, server: str | None = None, **backend_options):
        if crop not in CROP_MODES:
            raise InputError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
        if color not in ("bgr", "rgb"):
            raise InputError(f"color must be 'bgr' or 'rgb', got {color!r}")
        from ..runtime import load_backend
        self.backend = load_backend(backend, model=model, device=device, server=server, **backend_options)
        self.config = self.backend.config
        self.audio_hop, self.crop, self.color = float(audio_hop), crop, color
        self.render_options = RenderOptions(
            persistence_ms=persistence_ms, min_level_db=min_level_db,
            noise_margin_db=None if noise_margin_db is None else float(noise_margin_db),
            min_confidence=None if min_confidence is None else float(min_confidence))
        self._gate = Localizer(self.render_options, self.config.no_source_confidence)
        self._audio: PushedAudio | None = None
        self._window: AudioWindow | None = None
        self._step = FrameStep(self.backend, self.audio_hop, crop)

    @property
    def min_confidence(self) -> float:
        """The no-source confidence gate in effect (the model's own unless one was given)."""
        return self._gate.min_confidence

    # ---- audio -----------------------------------------------------------------------------
    @property
    def nonfinite_samples(self) -> int:
        """NaN / inf samples pushed so far: each was replaced by silence before the model."""
        return self._audio.nonfinite if self._audio is not None else 0

    def push_audio(self, samples, sample_rate: int) -> None:
        """Append captured audio: (n,) or (n, channels); float in [-1, 1] or integer PCM."""
        samples = np.asarray(samples)
        if samples.ndim not in (1, 2) or samples.size == 0:
            raise InputError(f"audio must be (n,) or (n, channels) samples, got shape {samples.shape}")
        if samples.ndim == 2 and samples.shape[1] > max(8, samples.shape[0]):
            raise InputError(f"audio of shape {samples.shape} looks channels-first: pass (n, channels), "
                             f"e.g. block.T")
        if np.issubdtype(samples.dtype, np.unsignedinteger):  # offset binary: silence is mid-scale
            mid = np.float32((int(np.iinfo(samples.dtype).max) + 1) // 2)
            samples = (samples.astype(np.float32) - mid) / mid
        elif np.issubdtype(samples.dtype, np.integer):        # PCM16/32 as many drivers deliver it
            samples = samples.astype(np.float32) / np.float32(np.iinfo(samples.dtype).max)
        elif not np.issubdtype(samples.dtype, np.floating):
            raise InputError(f"audio must be float or integer PCM, got {samples.dtype}")
        rate = int(sample_rate)
        if self._audio is None:
            if rate <= 0:
                raise InputError(f"sample_rate must be positive, got {sample_rate}")
            audio = PushedAudio(rate, self.config.audio_seconds)
            # the window first: a `locate` on another thread sees either nothing or both
            self._window = AudioWindow(audio, self.config.sample_rate, self.config.num_samples,
                                       self.config.audio_seconds)
            self._audio = audio
        elif rate != self._audio.rate:
            raise InputError(f"sample_rate changed from {self._audio.rate} to {rate} Hz: resample "
                             f"before pushing, or make a new SoundLocator for the new stream")
        self._audio.push(to_mono(samples))

    def _audio_clock(self) -> float:
        """Seconds of audio pushed so far: the clock of the audio branch's refresh grid."""
        return self._audio.available() / self._audio.rate if self._audio is not None else 0.0

    def _read_audio(self) -> AudioChunk:
        if self._audio is None:              # nothing pushed yet: the model hears silence
            return AudioChunk(np.zeros(self.config.num_samples, np.float32), SILENCE_DB, 0)
        return self._window.read(0.0, 0.0)

    @property
    def audio_refreshes(self) -> int:
        return self._step.audio_refreshes

    # ---- frames ----------------------------------------------------------------------------
    def locate(self, frame, t: float | None = None) -> Where:
        """Where the sound comes from in `frame` (H, W, 3) uint8. `t` (seconds, any clock) times
        the smoothing; default now."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
            raise InputError(f"frame must be uint8 (H, W, 3) {self.color.upper()}, got {frame.dtype} "
                             f"{frame.shape}: convert grey or RGBA frames with cv2.cvtColor first")
        bgr = frame if self.color == "bgr" else frame[..., ::-1]
        raw = self._step.run(bgr, self._audio_clock(), self._read_audio)
        where = self._gate.update(raw, time.monotonic() if t is None else float(t))
        # the smoothed map is the gate's running buffer: each Where keeps its own copy
        return replace(where, heatmap=where.heatmap.copy())

    def draw(self, frame: np.ndarray, where: Where) -> np.ndarray:
        """The live view's overlay (heatmap, peak, box) on the frame, in place; returns it.
        The frame is in this locator's colour order (`color`)."""
        if self.color == "bgr":
            return draw_localization(frame, where, self.render_options)
        bgr = np.ascontiguousarray(frame[..., ::-1])           # OpenCV draws in BGR
        draw_localization(bgr, where, self.render_options)
        frame[...] = bgr[..., ::-1]
        return frame

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
