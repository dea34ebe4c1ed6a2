"""Where rendered frames go: sinks, opened by name the way sources are.

    open_sink("window")                       a window ('q' or Esc quits)
    open_sink("out.mp4", fps=30, sound=w)     an mp4 recording with its sound (recorder.py)
    open_sink("frames.jsonl")                 one JSON object per frame, one per line

Every sink takes each rendered frame (`Shown`) through `write`, which returns why the run
should stop (the window was closed) or None, and is finished by `close`, which says what was
written. The pipeline's output thread only loops over its sinks.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import disk_full, disk_full_error, open_no_follow, refuse_symlink
from ..errors import InputError
from .audio import AudioWindow
from .recorder import Recording


@dataclass
class Shown:
    """One rendered frame, as every sink takes it."""
    image: np.ndarray                  # the annotated BGR frame
    t_capture: float                   # time.monotonic() at capture
    t_media: float                     # the source's own time, s
    fields: dict                       # the frame's log line, less the time the sinks take
    t_sinks: float = 0.0               # when the first sink began
    _record: dict | None = field(default=None, repr=False)

    def record(self) -> dict:
        """The frame's log line. Made once, when a sink first asks (the log and `on_frame` come
        after the window and the recording), so `encode_display` is the time those two took."""
        if self._record is None:
            spent = round((time.monotonic() - self.t_sinks) * 1e3, 2)
            self._record = self.fields | {"stages_ms": self.fields["stages_ms"] | {"encode_display": spent}}
        return self._record


def open_sink(spec: str, kind: str | None = None, *, fps: float = 30.0, sound: AudioWindow | None = None):
    """A sink by name: "window", an mp4 recording (`file://out.mp4` or a path ending .mp4: `fps`
    its frame rate, `sound` the audio it carries) or a JSON-lines log (a path ending .jsonl).
    `kind` ("window", "recording", "log") overrides the name: `--log-json` takes any file name."""
    path = spec[len("file://"):] if spec.startswith("file://") else spec
    if kind is None:
        suffix = Path(path).suffix.lower()
        kind = ("window" if spec == "window" else "recording" if suffix == ".mp4" else
                "log" if suffix in (".jsonl", ".json") else "")
    if kind == "window":
        return Window()
    if kind == "recording":
        return Recording(path, fps, sound)
    if kind == "log":
        return JsonLog(path)
    raise InputError(f"no output {spec!r}: give window, a .mp4 file or a .jsonl file")


class Callback:
    """A sink that hands each frame's log line to a function (tools, tests)."""

    thread_bound = False

    def __init__(self, on_record: Callable[[dict], None]):
        self.on_record = on_record

    def write(self, shown: Shown) -> None:
        self.on_record(shown.record())

    def close(self, hung: bool = False) -> None:
        return None


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def opencv_has_gui() -> bool:
    import cv2
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.upper()
    return True


def window_problem() -> str:
    """Why no window can be shown here, or "" when it can."""
    if not display_available():
        return "no display (DISPLAY is not set)"
    if not opencv_has_gui():
        return "this OpenCV has no GUI support (opencv-python-headless): pip install opencv-python"
    return ""


class Window:
    """cv2.imshow with 'q' / Esc to quit. Call only from one thread (the output thread)."""

    thread_bound = True                # a GUI window belongs to the thread that drew it

    def __init__(self, title: str = "jsa-rt live"):
        self.title = title
        self._opened = False

    def write(self, shown: Shown) -> str | None:
        """Show the frame; "window closed" when the user asked to quit (q, Esc, or closed it)."""
        return None if self.show(shown.image) else "window closed"

    def show(self, image: np.ndarray) -> bool:
        import cv2
        if not self._opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            self._opened = True
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except Exception:
            return True

    def close(self, hung: bool = False) -> None:
        if self._opened:
            import cv2
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


def check_writable(flag: str, path: str | Path) -> None:
    """A one-line error now, not a traceback after the run, for an output path that cannot be written."""
    path = Path(path)
    try:
        _check_writable(flag, path)
    except OSError as exc:             # e.g. a name too long for the file system
        raise InputError(f"{flag} {path}: {exc.strerror}; give another file name") from None


def _check_writable(flag: str, path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder: give a file name, e.g. {path / 'out'}"
                         f"{'.mp4' if flag == '--output' else '.jsonl'}")
    if flag == "--output" and path.suffix.lower() != ".mp4":
        raise InputError(f"{flag} {path}: jsa-rt records MP4 video only (a {path.suffix or 'nameless'} file "
                         f"would hold an MP4 inside); give a .mp4 name, e.g. {path.with_suffix('.mp4')}")
    if flag == "--log-json":
        refuse_symlink(path, flag)             # the log is written in place: never through a link
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write in {parent} (check the path and permissions)")


class JsonLog:
    """One JSON object per rendered frame, one per line, flushed as it goes (a crash keeps the
    lines so far). The file is opened at the first line: a run that renders nothing (the mic
    failed to start) neither leaves an empty log nor truncates the previous one."""

    thread_bound = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None
        self.lines = 0

    def write(self, shown: Shown) -> None:
        self.append(shown.record())

    def append(self, record: dict) -> None:
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open_no_follow(self.path, "w", "--log-json", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"cannot write --log-json {self.path}: {exc.strerror}; "
                                 f"choose a folder you can write to") from None
        # strict JSON: a NaN or inf (never meant to get here) is written as null, not as bare NaN
        try:
            self._file.write(json.dumps(_finite(record), separators=(",", ":"), allow_nan=False) + "\n")
            self._file.flush()
        except OSError as exc:
            if disk_full(exc):
                raise disk_full_error(self.path) from None
            raise
        self.lines += 1

    def close(self, hung: bool = False) -> str | None:
        """What was written, for the summary; None when no frame was logged (no file)."""
        if self._file is None:
            return None
        self._file.close()
        return f"{self.path} ({self.lines} lines)"


def _finite(value):
    """`value` with every non-finite float inside (dicts, lists) replaced by None."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
