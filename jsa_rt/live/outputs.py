"""Where rendered frames go: a window, an mp4 recording (with sound), a JSON-lines log.

The recording is written to a hidden temporary file next to the target and renamed into place
only once finished (and muxed with the audio when ffmpeg is present), so a crash or a Ctrl-C
never leaves a half-written `out.mp4`. Frames are repeated or skipped to keep the video's
timeline equal to the source's, which keeps the muxed sound in sync even when the pipeline
renders fewer frames than the camera delivers.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

MAX_GAP_S = 10.0          # never fill more than this much missing time with repeated frames
AUDIO_LEAD_S = 0.5        # the sound track may run this far ahead of the video, no further


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

    def __init__(self, title: str = "jsa-rt live"):
        self.title = title
        self._opened = False

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False when the user asked to quit (q, Esc, or closed the window)."""
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

    def close(self) -> None:
        if self._opened:
            import cv2
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


def check_writable(flag: str, path: str | Path) -> None:
    """A one-line error now, not a traceback after the run, for an output path that cannot be written."""
    from ..errors import InputError
    path = Path(path)
    try:
        _check_writable(flag, path)
    except OSError as exc:             # e.g. a name too long for the file system
        raise InputError(f"{flag} {path}: {exc.strerror}; give another file name") from None


def _check_writable(flag: str, path: Path) -> None:
    from ..atomic import refuse_symlink
    from ..errors import InputError
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


class VideoRecorder:
    """mp4 (MPEG-4 part 2, muxed with AAC audio by ffmpeg when available), finished atomically."""

    def __init__(self, path: str | Path, fps: float, audio_rate: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self.audio_rate = audio_rate
        stem = f".{self.path.stem}.partial-{os.getpid()}"
        self._video_tmp = self.path.with_name(stem + ".mp4")
        self._audio_tmp = self.path.with_name(stem + ".wav")
        self._writer = None
        self._audio = None
        self._t0: float | None = None
        self._size: tuple[int, int] | None = None      # (width, height) of the first frame
        self._last: np.ndarray | None = None           # the previous frame: fills gaps
        self.frames_written = 0
        self.audio_samples = 0

    def _open(self, image: np.ndarray) -> None:
        import cv2
        h, w = image.shape[:2]
        self._writer = cv2.VideoWriter(str(self._video_tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                       self.fps, (w, h))
        if not self._writer.isOpened():
            from ..errors import InputError
            raise InputError(f"cannot write video {self.path} (check the folder is writable)")
        if self.audio_rate:
            import soundfile as sf
            self._audio = sf.SoundFile(str(self._audio_tmp), "w", samplerate=int(self.audio_rate),
                                       channels=1, subtype="PCM_16")

    def _full_disk_stops(self, exc: Exception) -> None:
        """A full disk (or quota): drop the partial files and say so in one line; else nothing."""
        from ..atomic import disk_full, disk_full_error
        if disk_full(exc, self.path.parent):
            self.abandon()
            raise disk_full_error(self.path) from None

    def write(self, image: np.ndarray, t_media: float) -> int:
        """Add a frame shown at `t_media` seconds; returns how many video frames that took."""
        try:
            return self._write(image, t_media)
        except Exception as exc:
            self._full_disk_stops(exc)
            raise

    def _write(self, image: np.ndarray, t_media: float) -> int:
        if self._writer is None:
            self._open(image)
            self._t0 = t_media
            self._size = image.shape[1], image.shape[0]
        elif (image.shape[1], image.shape[0]) != self._size:      # e.g. a camera back at another size
            import cv2                                            # (the writer would drop it silently)
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        # frames that should exist now (rounded: a timestamped frame sits at its own slot)
        due = int(round((t_media - self._t0) * self.fps)) + 1
        copies = 1 if self.frames_written == 0 else min(due - self.frames_written, int(MAX_GAP_S * self.fps))
        # a gap (dropped frames) holds the previous picture; the new one goes in its own slot
        for _ in range(max(0, copies - 1)):
            self._writer.write(self._last)
        if copies > 0:
            self._writer.write(image)
            self._last = image            # frames are fresh arrays from the grabber: no copy
        self.frames_written += max(0, copies)
        return max(0, copies)

    def audio_room(self) -> int:
        """How many more samples the sound track takes now: it may lead the video by AUDIO_LEAD_S.

        Against a real microphone this never binds; it keeps a source that delivers faster than
        real time (a file-backed ALSA device) from growing the track without bound.
        """
        if self._audio is None:
            return 0
        allowed = (self.frames_written / self.fps + AUDIO_LEAD_S) * self.audio_rate
        return max(0, int(allowed) - self.audio_samples)

    def write_audio(self, samples: np.ndarray) -> None:
        """Append sound (mono float at `audio_rate`); whatever exceeds `audio_room()` is dropped."""
        samples = samples[:self.audio_room()]
        if samples.size:
            try:
                self._audio.write(np.clip(samples, -1.0, 1.0))
            except Exception as exc:
                self._full_disk_stops(exc)
                raise
            self.audio_samples += samples.size

    def close(self) -> str:
        """Finish the file; returns a short description (path, frames, with or without sound)."""
        try:
            return self._close()
        except Exception as exc:
            self._full_disk_stops(exc)
            raise

    def _close(self) -> str:
        if self._writer is None:
            return f"{self.path}: nothing recorded"
        self._writer.release()
        self._writer = None
        if self._audio is not None:
            # the sound track covers the whole picture (silence where the sound ran short), so
            # -shortest never cuts frames
            short = int(round(self.frames_written / self.fps * self.audio_rate)) - self.audio_samples
            if short > 0 and self.audio_samples:
                self._audio.write(np.zeros(short, np.float32))
                self.audio_samples += short
            self._audio.close()
            self._audio = None
        with_audio = self.audio_samples > 0 and shutil.which("ffmpeg") is not None
        note = ""
        if with_audio:
            muxed = self.path.with_name(self._video_tmp.stem + ".av.mp4")
            cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(self._video_tmp),
                   "-i", str(self._audio_tmp), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                   "-c:a", "aac", "-b:a", "128k", "-shortest", str(muxed)]
            # its own session: the Ctrl-C that stopped the run must not kill the mux
            done = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True)
            if done.returncode == 0:
                os.replace(muxed, self._video_tmp)
            elif "No space left on device" in done.stderr or "Disk quota exceeded" in done.stderr:
                muxed.unlink(missing_ok=True)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(muxed))
            else:
                with_audio = False
                note = f" (ffmpeg could not add the sound: {done.stderr.strip().splitlines()[-1:]})"
                muxed.unlink(missing_ok=True)
        elif self.audio_samples and not shutil.which("ffmpeg"):
            note = " (no sound: install ffmpeg to mux it)"
        self._audio_tmp.unlink(missing_ok=True)
        os.replace(self._video_tmp, self.path)
        return f"{self.path} ({self.frames_written} frames{', with sound' if with_audio else ''}){note}"

    def abandon(self) -> None:
        """Drop the temporary files (a run that failed before producing anything, or a full disk)."""
        for close in (getattr(self._writer, "release", None), getattr(self._audio, "close", None)):
            try:
                if close is not None:
                    close()
            except Exception:
                pass                        # e.g. a full disk: the file goes anyway
        self._writer = self._audio = None
        self.frames_written = self.audio_samples = 0
        self._video_tmp.unlink(missing_ok=True)
        self._audio_tmp.unlink(missing_ok=True)
        self.path.with_name(self._video_tmp.stem + ".av.mp4").unlink(missing_ok=True)


class JsonLog:
    """One JSON object per rendered frame, one per line, flushed as it goes (a crash keeps the
    lines so far). The file is opened at the first line: a run that renders nothing (the mic
    failed to start) neither leaves an empty log nor truncates the previous one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None
        self.lines = 0

    def write(self, record: dict) -> None:
        if self._file is None:
            try:
                from ..atomic import open_no_follow
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open_no_follow(self.path, "w", "--log-json", encoding="utf-8")
            except OSError as exc:
                from ..errors import InputError
                raise InputError(f"cannot write --log-json {self.path}: {exc.strerror}; "
                                 f"choose a folder you can write to") from None
        # strict JSON: a NaN or inf (never meant to get here) is written as null, not as bare NaN
        try:
            self._file.write(json.dumps(_finite(record), separators=(",", ":"), allow_nan=False) + "\n")
            self._file.flush()
        except OSError as exc:
            from ..atomic import disk_full, disk_full_error
            if disk_full(exc):
                raise disk_full_error(self.path) from None
            raise
        self.lines += 1

    def close(self) -> str | None:
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
