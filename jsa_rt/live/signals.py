"""Ctrl-C and SIGTERM during a live run: a clean stop, never a half-written recording."""
from __future__ import annotations

import signal
import threading
import time
from typing import Callable


class StopSignals:
    """SIGINT / SIGTERM ask for a clean stop (main thread only). A repeat within
    REPEAT_GRACE_S is the same request (`timeout -s INT` and terminals can deliver two); a later
    Ctrl-C aborts a stop that hangs; once `shield()` is called (the outputs are being finished)
    every signal is ignored until `restore()`."""

    REPEAT_GRACE_S = 2.0

    def __init__(self, request_stop: Callable[[str], None]):
        self._request_stop, self._first, self._shielded, self._previous = request_stop, None, False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        now = time.monotonic()
        if self._shielded:
            return
        if self._first is None:
            self._first = now
            self._request_stop(signal.Signals(signum).name)
        elif signum == signal.SIGINT and now - self._first > self.REPEAT_GRACE_S:
            raise KeyboardInterrupt

    def shield(self) -> None:
        self._shielded = True

    def restore(self) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}
