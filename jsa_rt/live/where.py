"""`Where`: one frame's answer, the one type after the backend's `Maps`.

    FrameStep.run (step.py)  -> the model's answer for a frame: map, confidence, level, times
    Localizer.update (render.py) -> the same, smoothed and gated: active or not, peak, box

`SoundLocator.locate` returns it, and the live pipeline draws and logs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .preprocess import bearing_deg

FULL_VIEW = (0.0, 0.0, 1.0, 1.0)


@dataclass
class Where:
    """Coordinates in `peak`/`box` are [0, 1] of the frame; the `_px` forms are in pixels."""
    heatmap: np.ndarray              # (S, S) in [0, 1], the model's square (smoothed if asked; after
                                     # the gate, the Localizer's own buffer: copy it to keep it)
    confidence: float                # model confidence (cosine of the two target slots); after the
                                     # gate a non-finite one reads 0
    level_db: float                  # audio level of the last half second, dBFS
    view: tuple = FULL_VIEW          # where the model's square lies in the frame, [0, 1]
    frame_size: tuple[int, int] = (1, 1)   # (height, width)
    active: bool = False             # False: "no source" (see `reason`), or not gated yet
    reason: str = ""                 # "quiet", "low confidence", "empty map", "non-finite model
                                     # output", "server unreachable"; "" when active
    peak: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    audio_age_s: float = 0.0         # how far the audio clock moved since the audio branch ran
    stages_ms: dict = field(default_factory=dict)   # the step's time: preprocess, audio, visual
    t_done: float = 0.0              # time.monotonic() when the model answered

    @property
    def infer_ms(self) -> float:
        return sum(self.stages_ms.values())

    @property
    def peak_px(self) -> tuple[int, int] | None:
        """(x, y) pixel of the peak in the frame."""
        if self.peak is None:
            return None
        h, w = self.frame_size
        return min(int(self.peak[0] * w), w - 1), min(int(self.peak[1] * h), h - 1)

    @property
    def box_px(self) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) pixel box of the region around the peak (exclusive ends)."""
        if self.box is None:
            return None
        h, w = self.frame_size
        return (int(round(self.box[0] * w)), int(round(self.box[1] * h)),
                int(round(self.box[2] * w)), int(round(self.box[3] * h)))

    def bearing_deg(self, hfov: float) -> tuple[float, float] | None:
        """(azimuth, elevation) of the peak in degrees from the optical axis (right and up
        positive), given the camera's horizontal field of view."""
        if self.peak is None:
            return None
        return bearing_deg(*self.peak, hfov, self.frame_size[1], self.frame_size[0])

    def heatmap_px(self) -> np.ndarray:
        """The heatmap over the whole frame, (H, W) float32; zero outside the model's view."""
        import cv2
        h, w = self.frame_size
        x0, y0 = int(round(self.view[0] * w)), int(round(self.view[1] * h))
        x1, y1 = int(round(self.view[2] * w)), int(round(self.view[3] * h))
        out = np.zeros((h, w), np.float32)
        out[y0:y1, x0:x1] = np.clip(cv2.resize(self.heatmap, (x1 - x0, y1 - y0),
                                               interpolation=cv2.INTER_LINEAR), 0, 1)
        return out
