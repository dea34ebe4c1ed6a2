"""The runtime interface every backend implements (torch, onnxruntime, tensorrt).

    backend.run(frame, audio) -> Maps               one full localisation
    backend.run_audio(audio) -> AudioState          refreshed at the audio rate
    backend.run_visual(frame, audio_state) -> Maps  per video frame
    backend.close()

frame: uint8 (S, S, 3), RGB, HWC, S = config.image_size (resize before: audio_io.resize_image).
audio: float32 (config.num_samples,), mono, config.sample_rate Hz (audio_io.fit_length).
Batch 1, numpy in and out. No torch here: the onnxruntime and tensorrt backends must run
without it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..config import ModelConfig
from ..errors import InputError

MAP_NAMES = ("heatmap", "aud", "img", "image_slot", "audio_slot", "confidence")


@dataclass
class Maps:
    heatmap: np.ndarray        # (S, S) float32 in [0, 1]
    aud: np.ndarray            # (g, g) audio-query map (sharpened attention)
    img: np.ndarray            # (g, g) image-query map
    image_slot: np.ndarray     # (D,) L2-normalised target slot of the image
    audio_slot: np.ndarray     # (D,) L2-normalised target slot of the audio
    confidence: float          # in [0, 1]: cosine of the two target slots

    @classmethod
    def from_outputs(cls, out: dict) -> "Maps":
        """Batch-1 graph outputs (name -> array with a leading batch dim) -> Maps."""
        arrays = {n: np.asarray(out[n], dtype=np.float32)[0] for n in MAP_NAMES}
        return cls(heatmap=arrays["heatmap"], aud=arrays["aud"], img=arrays["img"],
                   image_slot=arrays["image_slot"], audio_slot=arrays["audio_slot"],
                   confidence=float(arrays["confidence"]))

    @property
    def peak(self) -> tuple[int, int]:
        """(row, col) of the heatmap maximum."""
        return tuple(int(i) for i in np.unravel_index(np.argmax(self.heatmap), self.heatmap.shape))


@dataclass
class AudioState:
    """Opaque to callers: what run_visual needs from the last run_audio."""
    backend: str
    values: dict = field(default_factory=dict)     # audio_query (1,S,D), audio_slot (1,D)


class Backend(ABC):
    name: str = "?"
    config: ModelConfig
    device: str = "cpu"

    # ---- the interface --------------------------------------------------------------------------
    def run(self, frame: np.ndarray, audio: np.ndarray) -> Maps:
        return Maps.from_outputs(self._run_full(self.check_frame(frame)[None],
                                                self.check_audio(audio)[None]))

    def run_audio(self, audio: np.ndarray) -> AudioState:
        return AudioState(self.name, self._run_audio(self.check_audio(audio)[None]))

    def run_visual(self, frame: np.ndarray, audio_state: AudioState) -> Maps:
        if not isinstance(audio_state, AudioState) or audio_state.backend != self.name:
            got = getattr(audio_state, "backend", type(audio_state).__name__)
            raise InputError(f"run_visual needs the AudioState of this {self.name} backend's "
                             f"run_audio (got {got})")
        return Maps.from_outputs(self._run_visual(self.check_frame(frame)[None], audio_state.values))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        return f"{self.name} ({self.device}, preset {self.config.preset})"

    # ---- what a backend provides (batch-1 arrays in, dict of arrays out) --------------------------
    @abstractmethod
    def _run_full(self, frame: np.ndarray, wave: np.ndarray) -> dict: ...

    @abstractmethod
    def _run_audio(self, wave: np.ndarray) -> dict: ...

    @abstractmethod
    def _run_visual(self, frame: np.ndarray, state: dict) -> dict: ...

    # ---- input checks: one line naming what was expected and how to get it ------------------------
    def check_frame(self, frame) -> np.ndarray:
        s = self.config.image_size
        frame = np.asarray(frame)
        if frame.shape != (s, s, 3) or frame.dtype != np.uint8:
            raise InputError(f"frame must be uint8 ({s}, {s}, 3) RGB HWC, got {frame.dtype} "
                             f"{frame.shape}: resize with jsa_rt.audio_io.resize_image(rgb, {s}) "
                             f"and keep uint8")
        return np.ascontiguousarray(frame)

    def check_audio(self, audio) -> np.ndarray:
        cfg = self.config
        audio = np.asarray(audio)
        if audio.shape != (cfg.num_samples,) or not np.issubdtype(audio.dtype, np.floating):
            raise InputError(f"audio must be float32 ({cfg.num_samples},) mono at {cfg.sample_rate} Hz "
                             f"({cfg.audio_seconds:g} s), got {audio.dtype} {audio.shape}: use "
                             f"jsa_rt.audio_io.fit_length(to_mono(x), {cfg.num_samples})")
        return np.ascontiguousarray(audio, dtype=np.float32)
