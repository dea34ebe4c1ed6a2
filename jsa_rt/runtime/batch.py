"""A runtime backend behind the batch interface that `jsa-rt eval` scores (`localize`), so the
graph that is deployed (an ONNX export in fp32, fp16 or int8, a TensorRT plan) gets the same
metrics as the checkpoint it came from.

Evaluation datasets give normalised float images (N, 3, S, S) at the model's input size; they go
back to the uint8 RGB frames a camera gives, which is what the graphs take. Each sample runs the
audio branch, then the visual branch, as `live` does. No torch here (numpy in, numpy out).
"""
from __future__ import annotations

import numpy as np

from ..audio_io import camera_frames
from ..errors import InputError
from .base import MAP_NAMES, Backend


class BackendModel:
    """`localize(images, wave)` of a model, answered by a runtime backend one sample at a time."""

    kind = "deployed"

    def __init__(self, backend: Backend):
        self.backend = backend
        self.cfg = backend.config

    def eval(self) -> "BackendModel":
        return self

    def localize(self, images, wave, alpha: float | None = None) -> dict:
        if alpha is not None and alpha != self.cfg.iqr_alpha:
            raise InputError(f"a deployed graph has its IQR weight built in ({self.cfg.iqr_alpha:g}); "
                             f"drop --alpha, or evaluate the checkpoint for another weight")
        frames = camera_frames(images)
        waves = np.asarray(wave, dtype=np.float32)
        per_sample = [self.backend.run_visual(frame, self.backend.run_audio(w)) for frame, w in zip(frames, waves)]
        return {name: np.stack([np.asarray(getattr(m, name), np.float32) for m in per_sample])
                for name in MAP_NAMES}
