"""The mp4 recording with its sound: `VideoRecorder` (the file) and `Recording` (the sink the
pipeline writes to, which adds each frame's sound from the audio source).

The recording is written to a hidden temporary file next to the target and renamed into place
only once finished (and muxed with the audio when ffmpeg is present), so a crash or a Ctrl-C
never leaves a half-written `out.mp4`. Frames are repeated or skipped to keep the video's
timeline equal to the source's, which keeps the muxed sound in sync even when the pipeline
renders fewer frames than the camera delivers.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..atomic import disk_full, disk_full_error
from ..errors import InputError
from .audio import AudioWindow

MAX_GAP_S = 10.0          # never fill more than this much missing time with repeated frames
AUDIO_LEAD_S = 0.5        # the sound track may run this far ahead of the video, no further


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
            raise InputError(f"cannot write video {self.path} (check the folder is writable)")
        if self.audio_rate:
            import soundfile as sf
            self._audio = sf.SoundFile(str(self._audio_tmp), "w", samplerate=int(self.audio_rate),
                                       channels=1, subtype="PCM_16")

    def _full_disk_stops(self, exc: Exception) -> None:
        """A full disk (or quota): drop the partial files and say so in one line; else nothing."""
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


class Recording:
    """The `--output` sink: each rendered frame into a `VideoRecorder`, with the sound captured
    up to that frame read from the audio source (the track starts with the first frame)."""

    thread_bound = False                  # finished after the threads are joined

    def __init__(self, path: str | Path, fps: float, sound: AudioWindow | None = None):
        self.sound = sound
        self.video = VideoRecorder(path, fps, audio_rate=sound.source.rate if sound is not None else None)
        self._cursor: int | None = None   # the first sample not yet in the track

    @property
    def path(self) -> Path:
        return self.video.path

    def write(self, shown) -> None:
        self.video.write(shown.image, shown.t_media)
        if self.sound is None:
            return
        end = self.sound.recording_position(shown.t_capture, shown.t_media)
        if self._cursor is None:
            self._cursor = end
        if end > self._cursor:
            start = max(self._cursor, end - self.video.audio_room())
            self.video.write_audio(self.sound.source.read(start, end))
            self._cursor = end

    def close(self, hung: bool = False) -> str | None:
        """Finish the file; `hung`: the output thread may still be writing, so the partial file stays."""
        if hung:
            return f"{self.path} (not finalized: the output thread hung)"
        if self.video.frames_written:
            return self.video.close()
        self.video.abandon()             # nothing rendered (e.g. the mic failed to start): no file
        return None
