"""A one-item hand-off between threads: the newest item wins, the reader never sees a backlog.

Live video must never queue: a slow consumer should see the freshest frame, not an ever older
one. `put` replaces an unread item (and counts it as dropped). With `lossless=True` (files run
faster or slower than real time, `--no-pace`) `put` waits until the reader took the previous item
instead, so every frame is processed exactly once.
"""
from __future__ import annotations

import threading


class Closed(Exception):
    """The slot was closed: no more items will come."""


class LatestSlot:
    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self._cond = threading.Condition()
        self._item = None
        self._full = False
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item, timeout: float = 0.1) -> bool:
        """Offer an item. False if the slot is closed, or (lossless) still full after `timeout`."""
        with self._cond:
            if self.lossless:
                self._cond.wait_for(lambda: not self._full or self._closed, timeout)
                if self._full and not self._closed:
                    return False
            if self._closed:
                return False
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self.put_count += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float = 0.1):
        """The newest item, or None after `timeout`. Raises `Closed` once closed and drained."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if self._full:
                item, self._item, self._full = self._item, None, False
                self._cond.notify_all()
                return item
            if self._closed:
                raise Closed()
            return None

    def close(self) -> None:
        """No more puts; a pending item can still be taken, then `get` raises `Closed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
