"""The progress bar of the long jobs (make-scenes, train, eval): tqdm on stderr when wanted and
installed, else a bar that does nothing, so callers never branch on it."""
from __future__ import annotations

import sys


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
