"""Video sources by URI (jetson-inference style) and a grabber thread that keeps the newest frame.

Accepted `--camera` values:
  `0`, `/dev/video0`, `v4l2:///dev/video0`   a V4L2 / USB camera
  `csi://0`                                 a Jetson CSI camera (GStreamer nvarguscamerasrc)
  `file://clip.mp4` or a path               a video file, paced at its frame rate (a camera stand-in)
  `rtsp://...`, `http(s)://...`             a network stream (FFmpeg)
  `... ! appsink`                           a raw GStreamer pipeline

OpenCV buffers a few frames and often ignores CAP_PROP_BUFFERSIZE, so a thread reads
continuously and hands only the newest frame on, stamped with `time.monotonic()` on arrival.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeviceError, InputError
from .handoff import LatestSlot

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
RECONNECT_WAIT_S = 1.0
ACCEPTED = ("0, /dev/video0, v4l2:///dev/video0, csi://0, file://clip.mp4 (or a path), rtsp://..., "
            "or a GStreamer pipeline ending in appsink")


@dataclass
class Frame:
    image: np.ndarray      # BGR uint8 (H, W, 3), as OpenCV captured it
    index: int             # frame number on the source (keeps counting across --loop)
    t_capture: float       # time.monotonic() when the grabber received it
    t_media: float         # seconds on the source's timeline (file position, or since the camera started)


@dataclass(frozen=True)
class VideoSpec:
    kind: str              # "camera" | "csi" | "file" | "stream" | "gstreamer"
    target: object         # camera index or device path, file path, URL, or pipeline text
    uri: str


def cameras_present() -> list[str]:
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))


def describe_cameras() -> str:
    found = cameras_present()
    if found:
        return "cameras present: " + ", ".join(found)
    return "no /dev/video* cameras found (use --camera file://clip.mp4, or run `jsa-rt devices`)"


def opencv_has_gstreamer() -> bool:
    import cv2
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def csi_pipeline(sensor: int, width: int, height: int, rate: int) -> str:
    """The usual Jetson Argus pipeline: NVMM capture, hardware conversion, BGR into appsink."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! "
            f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
            f"framerate=(fraction){rate}/1, format=(string)NV12 ! "
            f"nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert ! "
            f"video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")


def parse_video_uri(uri: str) -> VideoSpec:
    """Classify a --camera value; raises a one-line InputError for anything unrecognised."""
    text = str(uri).strip()
    if not text:
        raise InputError(f"empty --camera; use one of: {ACCEPTED}")
    if text.isdigit():
        return VideoSpec("camera", int(text), text)
    if text.startswith("v4l2://"):
        path = text[len("v4l2://"):]
        if not path.startswith("/dev/video"):
            raise InputError(f"bad camera URI {text!r}: expected v4l2:///dev/videoN")
        return VideoSpec("camera", path, text)
    if text.startswith("/dev/video"):
        return VideoSpec("camera", text, text)
    if text.startswith("csi://"):
        sensor = text[len("csi://"):]
        if not sensor.isdigit():
            raise InputError(f"bad camera URI {text!r}: expected csi://N (N = sensor id, e.g. csi://0)")
        return VideoSpec("csi", int(sensor), text)
    if text.startswith(STREAM_SCHEMES):
        return VideoSpec("stream", text, text)
    if "!" in text and not text.startswith("file://") and not Path(text).is_file():
        return VideoSpec("gstreamer", text, text)
    if text.startswith("file://"):
        path = Path(text[len("file://"):])
    elif "://" in text:
        raise InputError(f"unknown camera URI scheme in {text!r}; use one of: {ACCEPTED}")
    else:
        path = Path(text)
    if path.is_file():
        return VideoSpec("file", str(path), text)
    if path.suffix.lower() in VIDEO_SUFFIXES or text.startswith("file://"):
        raise InputError(f"video file not found: {path} (check the --camera path)")
    raise InputError(f"cannot read --camera {text!r}: not a file, device or URI; use one of: {ACCEPTED}")


def _open(spec: VideoSpec, width: int | None, height: int | None, rate: float | None):
    import cv2
    try:        # OpenCV's own warnings would repeat our one-line error in another form
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass
    if spec.kind == "camera":
        if isinstance(spec.target, str) and not os.path.exists(spec.target):
            raise DeviceError(f"camera {spec.target} does not exist; {describe_cameras()}")
        api = cv2.CAP_V4L2 if os.name == "posix" and Path("/dev").is_dir() else cv2.CAP_ANY
        cap = cv2.VideoCapture(spec.target, api)
        if cap.isOpened():
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if rate:
                cap.set(cv2.CAP_PROP_FPS, rate)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        what = f"camera {spec.uri}"
    elif spec.kind in ("csi", "gstreamer"):
        if not opencv_has_gstreamer():
            raise DeviceError(f"{spec.uri if spec.kind == 'csi' else 'a GStreamer pipeline'} needs OpenCV "
                              f"built with GStreamer, and this OpenCV {cv2.__version__} has none: on Jetson "
                              "use the system OpenCV (pip uninstall opencv-python; see docs/jetson.md)")
        pipeline = (csi_pipeline(spec.target, width or 1280, height or 720, int(rate or 30))
                    if spec.kind == "csi" else spec.target)
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        what = f"GStreamer source {spec.uri}"
    else:
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)
        what = f"{'video file' if spec.kind == 'file' else 'stream'} {spec.target}"
    if not cap.isOpened():
        cap.release()
        hint = describe_cameras() if spec.kind == "camera" else \
            "check the path/URL and that OpenCV can decode it (FFmpeg)"
        raise DeviceError(f"cannot open {what} (busy, no permission, or not a video source); {hint}")
    return cap


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) shrunk (never enlarged) so the longer side is at most `max_side`; 0: as is."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image shrunk to `fitted_size` (area interpolation: no aliasing on a 4K frame)."""
    import cv2
    h, w = image.shape[:2]
    size = fitted_size(w, h, max_side)
    return image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class VideoSource:
    """Opens the source now (so errors come before any thread starts), grabs on `start()`."""

    def __init__(self, uri: str, width: int | None = None, height: int | None = None,
                 rate: float | None = None, loop: bool = False, reconnect: bool = False,
                 paced: bool = True, max_side: int = 0):
        import cv2
        self.spec = parse_video_uri(uri)
        self.width, self.height, self.rate = width, height, rate
        self.max_side = max_side          # larger frames are shrunk on this thread, right after decoding
        self.loop, self.reconnect = loop, reconnect
        self.is_file = self.spec.kind == "file"
        self.paced = paced or not self.is_file          # live sources are real time anyway
        self._cap = _open(self.spec, width, height, rate)
        reported = self._cap.get(cv2.CAP_PROP_FPS)
        # files: any real rate (slideshows, high-speed clips); cameras often report nonsense
        plausible = 0.0 < reported <= 1000.0 if self.is_file else 1.0 <= reported <= 240.0
        native = float(reported if plausible else 30.0)
        self.fps = float(rate or native)                     # the rate frames are delivered at
        # the clock of the content: a file's own rate (--input-rate only changes how fast it
        # plays), so media time, its sound and recordings stay in step
        self.media_fps = native if self.is_file else self.fps
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.is_file else 0
        # (width, height) as decoded (0 where the backend does not say) and as processed
        self.source_size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        w, h = (width, height) if self.is_file and width and height else self.source_size
        self.frame_size = fitted_size(w, h, max_side) if w and h else (w, h)
        # Files not paced are processed exactly once per frame; everything else is latest-wins.
        self.frames = LatestSlot(lossless=self.is_file and not self.paced)
        self.grabbed = 0
        self.reconnects = 0
        self.error: str | None = None      # why capture stopped early (shown in the summary)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-grabber", daemon=True)

    @property
    def name(self) -> str:
        return self.spec.uri

    @property
    def dropped(self) -> int:
        return self.frames.dropped

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.frames.close()
        if self._thread.ident is None:      # never started: release the device here
            self._cap.release()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the grabber thread -------------------------------------------------------------------
    def _reopen(self) -> bool:
        try:
            self._cap.release()
            self._cap = _open(self.spec, self.width, self.height, self.rate)
            return True
        except Exception as exc:          # the camera is gone for now: retry later
            self.error = str(exc)
            return False

    def _run(self) -> None:
        import cv2
        t0 = time.monotonic()
        index = 0
        stamped = None        # files: does the decoder give each frame's own timestamp?
        try:
            while not self._stop.is_set():
                ok, image = self._cap.read()
                if not ok:
                    if self.is_file and self.loop and self.grabbed > 0:
                        if self._reopen():
                            continue
                        break
                    if not self.is_file and self.reconnect:
                        self.error = f"{self.name} stopped delivering frames; reconnecting"
                        if not self._stop.wait(RECONNECT_WAIT_S) and self._reopen():
                            self.reconnects += 1
                            self.error = None
                        continue
                    if not self.is_file:
                        self.error = f"{self.name} stopped delivering frames (use --reconnect to retry)"
                    break
                if self.is_file and self.width and self.height:
                    image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
                # The model sees a few hundred pixels; drawing and encoding a 4K frame costs more
                # than the model, so every later stage gets the shrunk frame.
                image = fit_within(image, self.max_side)
                if self.is_file:
                    # A frame's own timestamp keeps a variable-frame-rate file (a phone's) in step
                    # with its sound; a loop replays the file, so there the index keeps one clock
                    # with the looping soundtrack, as it does when the decoder gives no timestamps.
                    t_media = index / self.media_fps
                    pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    if index == 1:
                        stamped = not self.loop and pos > 0
                    if stamped and pos > 0:
                        t_media = pos
                    play_at = t_media * self.media_fps / self.fps     # --input-rate plays faster or slower
                    if self.paced and self._stop.wait(max(0.0, t0 + play_at - time.monotonic())):
                        break
                now = time.monotonic()
                frame = Frame(image, index, now, t_media if self.is_file else now - t0)
                while not self.frames.put(frame):          # only a lossless slot refuses
                    if self._stop.is_set() or self.frames.closed:
                        return
                self.grabbed += 1
                index += 1
        except Exception as exc:         # never die silently: the summary says why capture ended
            self.error = f"video capture failed: {exc}"
        finally:
            self._cap.release()
            self.frames.close()
