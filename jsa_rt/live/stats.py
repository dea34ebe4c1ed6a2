"""What a live run measured: capture-to-render latencies in a fixed array, and the summary line."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LATENCY_KEEP = 100_000          # latencies kept for the percentiles (a fixed array: no growth)
JOIN_TIMEOUT_S = 2.0            # how long a stopping run waits for each thread


class LatencyStats:
    """Capture-to-render latencies in a fixed array (the newest LATENCY_KEEP of them)."""

    def __init__(self, keep: int = LATENCY_KEEP):
        self._values = np.zeros(keep, np.float32)
        self.count = 0

    def add(self, ms: float) -> None:
        self._values[self.count % self._values.size] = ms
        self.count += 1

    def values(self, since: int = 0) -> np.ndarray:
        """Latencies recorded after the first `since` ones (those still kept), oldest first."""
        lo = max(since, self.count - self._values.size)
        idx = np.arange(lo, self.count) % self._values.size
        return self._values[idx].copy()

    def percentile(self, q: float, since: int = 0) -> float:
        v = self.values(since)
        return float(np.percentile(v, q)) if v.size else float("nan")


@dataclass
class Summary:
    frames: int
    seconds: float
    fps: float
    p50_ms: float
    p99_ms: float
    dropped: int
    overflows: int
    audio_refreshes: int
    backend: str
    stopped_by: str
    written: list[str]
    not_joined: list[str]
    server_misses: int = 0             # frames a `--server` did not answer (shown as "server unreachable")

    def line(self) -> str:
        text = (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps, {self.backend}), "
                f"latency p50 {self.p50_ms:.0f} ms p99 {self.p99_ms:.0f} ms, "
                f"{self.audio_refreshes} audio refreshes, dropped {self.dropped}, "
                f"mic overflows {self.overflows}; stopped by {self.stopped_by}")
        if self.server_misses:
            text += f"; {self.server_misses} frames unanswered by the server (shown as 'server unreachable')"
        if self.not_joined:
            text += f"; threads still running after {JOIN_TIMEOUT_S:.0f} s: {', '.join(self.not_joined)}"
        if self.written:
            text += "; wrote " + ", ".join(self.written)
        return text
