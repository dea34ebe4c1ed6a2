"""One frame through the model: the per-frame step that `jsa-rt live` (the threaded Pipeline)
and `SoundLocator` (your own loop) both run.

    frame -> model input (resize or centre crop) -> audio branch, when due -> visual branch

The audio branch is the expensive, slowly changing half, so its state is cached and refreshed
on a fixed grid of `audio_hop` seconds of an audio clock (the frame's media time in the
pipeline, the pushed audio in SoundLocator); the visual branch runs on every frame. Gating and
smoothing come after this step (render.Localizer), on the output side: the step's answer is a
`Where` not gated yet.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .audio import AudioChunk
from .preprocess import model_input
from .where import Where


class RefreshGrid:
    """When the audio branch is due: every `hop` seconds of `clock`, on a fixed grid.

    A fixed grid (not "hop after the last refresh") keeps the mean rate at 1/hop however the
    frames fall. The grid restarts at the first call, when the clock goes back (a looping file)
    and after a gap of more than a hop (a stall). `hop` 0 refreshes on every call.
    """

    def __init__(self, hop: float):
        self.hop = float(hop)
        self.last: float | None = None        # clock of the last refresh
        self.next: float | None = None

    def due(self, clock: float) -> bool:
        return self.last is None or clock < self.last or clock >= self.next

    def mark(self, clock: float) -> None:
        restart = self.last is None or clock < self.last
        late = not restart and clock - self.next >= self.hop
        self.next = clock + self.hop if restart or late else self.next + self.hop
        self.last = clock


class FrameStep:
    """Holds the backend's cached audio state between frames; one per stream."""

    def __init__(self, backend, audio_hop: float, crop: str = "resize"):
        self.backend = backend
        self.config = backend.config
        self.crop = crop
        self.grid = RefreshGrid(audio_hop)
        self.state = None
        self.level_db = -120.0
        self.audio_refreshes = 0

    def run(self, bgr: np.ndarray, clock: float, read_audio: Callable[[], AudioChunk]) -> Where:
        """The model's answer for one frame, not gated yet (render.Localizer does that).
        `bgr`: the frame; `clock`: the audio clock now (s); `read_audio`: the window to use if a
        refresh is due (only called then)."""
        t0 = time.monotonic()
        rgb, view = model_input(bgr, self.config.image_size, self.crop)
        t1 = time.monotonic()
        if self.grid.due(clock):
            chunk = read_audio()
            self.state, self.level_db = self.backend.run_audio(chunk.wave), chunk.level_db
            self.grid.mark(clock)
            self.audio_refreshes += 1
        t2 = time.monotonic()
        maps = self.backend.run_visual(rgb, self.state)
        t3 = time.monotonic()
        stages = {"preprocess": (t1 - t0) * 1e3, "audio": (t2 - t1) * 1e3, "visual": (t3 - t2) * 1e3}
        return Where(maps.heatmap, maps.confidence, self.level_db, view, bgr.shape[:2],
                     audio_age_s=clock - self.grid.last, stages_ms=stages, t_done=t3)
