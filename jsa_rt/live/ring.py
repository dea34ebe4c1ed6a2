"""A lock-free, preallocated audio ring buffer with capture timestamps.

One writer (the PortAudio callback thread) and any number of readers. The writer only copies
into arrays allocated up front and bumps two counters, so the callback never allocates a
buffer, never blocks and never logs. Readers check the counters before and after a copy (a
seqlock), so a read that raced with a wrap-around is detected instead of returning torn audio.

Non-finite samples (NaN, inf: a glitching driver, a caller's bad block) never enter: the writer
zeroes them in place and counts them in `nonfinite`, so no reader, model or recording sees one.

Sample positions are absolute: sample `i` is the i-th sample ever written. `index_at(t)` maps a
`time.monotonic()` instant to a position using the (end position, end time) stamp of each block.
"""
from __future__ import annotations

import numpy as np


class Overwritten(Exception):
    """The requested samples were already overwritten by newer ones (the reader fell behind)."""


class RingBuffer:
    def __init__(self, capacity: int, sample_rate: float, max_blocks: int = 4096):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = int(capacity)
        self.sample_rate = float(sample_rate)
        self._data = np.zeros(self.capacity, np.float32)
        self._bad = np.zeros(self.capacity, bool)             # scratch mask: the writer never allocates
        self._stamp_pos = np.zeros(max_blocks, np.int64)      # absolute position after each block
        self._stamp_time = np.zeros(max_blocks, np.float64)   # monotonic time of that block's last sample
        self._max_blocks = max_blocks
        # The writer publishes `written` only after its copy, so a reader cannot see a block in
        # flight: keep this many of the oldest samples off-limits (larger than any block).
        self.margin = max(1, self.capacity // 8)
        self._last_t = float("-inf")
        self.written = 0          # samples ever written (published after the copy)
        self.blocks = 0           # stamps ever written
        self.nonfinite = 0        # NaN / inf samples written (stored as 0.0)

    # ---- writer (callback thread) -------------------------------------------------------------
    def write(self, samples: np.ndarray, t_end: float) -> None:
        """Copy a 1-D block in; `t_end` is when its last sample was captured. No buffer allocation."""
        n = samples.shape[0]
        if n > self.capacity:                      # keep only what fits (a huge block is abnormal)
            samples = samples[n - self.capacity:]
            self.written += n - self.capacity
            n = self.capacity
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = samples[:first]
        if first < n:
            self._data[:n - first] = samples[first:]
        self._zero_nonfinite(start, first)
        self._zero_nonfinite(0, n - first)
        slot = self.blocks % self._max_blocks
        # Keep stamps non-decreasing (np.interp needs it): latency estimates jitter.
        if t_end < self._last_t:
            t_end = self._last_t
        self._last_t = t_end
        self._stamp_pos[slot] = self.written + n
        self._stamp_time[slot] = t_end
        self.written += n                          # publish samples, then the stamp
        self.blocks += 1

    def _zero_nonfinite(self, start: int, n: int) -> None:
        if n <= 0:
            return
        data, bad = self._data[start:start + n], self._bad[:n]
        np.isfinite(data, out=bad)
        np.logical_not(bad, out=bad)
        if bad.any():
            self.nonfinite += int(np.count_nonzero(bad))
            np.copyto(data, 0.0, where=bad)

    # ---- readers ------------------------------------------------------------------------------
    def oldest(self) -> int:
        """The oldest absolute position that can still be read safely."""
        return max(0, self.written - self.capacity + self.margin)

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) by absolute position. Raises `Overwritten` if they are gone."""
        n = stop - start
        if n < 0 or stop > self.written:
            raise ValueError(f"cannot read [{start}, {stop}): only {self.written} samples written")
        if start < self.oldest():
            raise Overwritten(f"samples from {start} were overwritten")
        out = np.empty(n, np.float32) if out is None else out[:n]
        a = start % self.capacity
        first = min(n, self.capacity - a)
        out[:first] = self._data[a:a + first]
        if first < n:
            out[first:] = self._data[:n - first]
        if start < self.oldest():                  # the writer lapped us during the copy
            raise Overwritten(f"samples from {start} were overwritten while reading")
        return out

    def read_padded(self, start: int, stop: int) -> np.ndarray:
        """Like `read`, but positions not (or no longer) in the buffer read as silence."""
        out = np.zeros(max(0, stop - start), np.float32)
        for _ in range(3):                         # retry if the writer laps the copy
            lo, hi = max(start, self.oldest()), min(stop, self.written)
            if lo >= hi:
                return out
            try:
                self.read(lo, hi, out[lo - start:])
                return out
            except Overwritten:
                continue
        return out

    def read_window(self, stop: int, n: int, tries: int = 8) -> tuple[np.ndarray, int]:
        """The `n` samples ending at `stop` (silence before position 0), and the end actually used.

        If the writer has overwritten part of them (a reader that stalled, or a source that
        delivers faster than real time), the window slides forward to the newest whole window
        and the copy is retried: audio that was lost never reaches the model as silence.
        """
        out = np.zeros(n, np.float32)
        for _ in range(tries):
            stop = min(max(stop, self.oldest() + n), self.written)
            start = max(stop - n, 0)
            try:
                self.read(start, stop, out[n - (stop - start):])
                return out, stop
            except Overwritten:
                continue
        return self.read_padded(stop - n, stop), stop

    def stamps(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, times) of the retained blocks, oldest first."""
        blocks = self.blocks
        # Skip the oldest retained slot: the writer may be overwriting it right now.
        count = min(blocks, self._max_blocks - 1)
        idx = np.arange(blocks - count, blocks) % self._max_blocks
        return self._stamp_pos[idx].copy(), self._stamp_time[idx].copy()

    def index_at(self, t: float) -> int:
        """Absolute position of the sample captured at monotonic time `t`.

        Interpolates between block stamps; before the first or after the last stamp it
        extrapolates at the nominal rate. The result is not clamped to what was written.
        """
        pos, times = self.stamps()
        if pos.size == 0:
            return 0
        if pos.size == 1 or t >= times[-1]:
            return int(round(pos[-1] + (t - times[-1]) * self.sample_rate))
        if t <= times[0]:
            return int(round(pos[0] + (t - times[0]) * self.sample_rate))
        return int(round(np.interp(t, times, pos)))

    def time_at(self, index: int) -> float:
        """Inverse of `index_at`: when the sample at absolute `index` was captured."""
        pos, times = self.stamps()
        if pos.size == 0:
            return float("nan")
        if pos.size == 1 or index >= pos[-1]:
            return float(times[-1] + (index - pos[-1]) / self.sample_rate)
        if index <= pos[0]:
            return float(times[0] + (index - pos[0]) / self.sample_rate)
        return float(np.interp(index, pos, times))
