"""Video URIs, the grabber thread (newest frame wins, pacing, loop) and the hand-off slot."""
from __future__ import annotations

import threading
import time

import pytest

from jsa_rt.errors import DeviceError, InputError
from jsa_rt.live.handoff import Closed, LatestSlot
from jsa_rt.live.video import VideoSource, fit_within, fitted_size, opencv_has_gstreamer, parse_video_uri

from live_helpers import write_red_square_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_red_square_clip(path, frames=20, fps=20)
    return path


def test_uri_forms(clip):
    assert parse_video_uri("0").kind == "camera" and parse_video_uri("0").target == 0
    assert parse_video_uri("/dev/video2").target == "/dev/video2"
    assert parse_video_uri("v4l2:///dev/video1").target == "/dev/video1"
    assert parse_video_uri("csi://1").kind == "csi" and parse_video_uri("csi://1").target == 1
    assert parse_video_uri("rtsp://cam.local:8554/live").kind == "stream"
    assert parse_video_uri("videotestsrc ! videoconvert ! appsink").kind == "gstreamer"
    assert parse_video_uri(f"file://{clip}").kind == "file"
    assert parse_video_uri(str(clip)).target == str(clip)


@pytest.mark.parametrize("uri, error, words", [
    ("foo://bar", InputError, "unknown camera URI scheme"),
    ("v4l2://video0", InputError, "expected v4l2:///dev/videoN"),
    ("csi://front", InputError, "expected csi://N"),
    ("missing_clip.mp4", InputError, "video file not found"),
    ("file://missing_clip.mkv", InputError, "video file not found"),
    ("not a camera", InputError, "not a file, device or URI"),
    ("", InputError, "empty --camera"),
])
def test_bad_uris_are_one_line_errors(uri, error, words):
    with pytest.raises(error, match=words) as info:
        VideoSource(uri)
    assert "\n" not in str(info.value)


def test_missing_camera_lists_what_exists():
    with pytest.raises(DeviceError, match=r"camera /dev/video97 does not exist; .*(cameras present|no /dev/video)"):
        VideoSource("/dev/video97")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer: csi:// would try the camera")
def test_csi_without_gstreamer_says_so():
    with pytest.raises(DeviceError, match="needs OpenCV built with GStreamer") as info:
        VideoSource("csi://0")
    assert "\n" not in str(info.value) and "jetson" in str(info.value).lower()


def drain(src, reader_delay: float = 0.0) -> list:
    """Every frame a reader gets from `src` until the source closes."""
    seen = []
    while True:
        try:
            f = src.frames.get(1.0)
        except Closed:
            return seen
        if f is not None:
            seen.append(f)
            time.sleep(reader_delay)


def test_unpaced_file_delivers_every_frame_once_in_order(clip):
    src = VideoSource(str(clip), paced=False)
    src.start()
    seen = drain(src)
    for f in seen:
        assert f.image.shape == (120, 160, 3)
        assert f.t_media == pytest.approx(f.index / 20)
    assert [f.index for f in seen] == list(range(20)) and src.dropped == 0 and src.join(2.0)


def test_large_frames_are_shrunk_at_capture_keeping_their_aspect(tmp_path):
    """A 4K source would cost more to draw and record than the model does: frames arrive with
    the longer side at max_side (never enlarged, never distorted), the red square where it was."""
    import numpy as np
    boxes = write_red_square_clip(tmp_path / "wide.mp4", frames=4, fps=20, size=(640, 360), side=90)
    src = VideoSource(str(tmp_path / "wide.mp4"), paced=False, max_side=320)
    assert src.source_size == (640, 360) and src.frame_size == (320, 180)
    src.start()
    seen = drain(src)
    assert len(seen) == 4 and all(f.image.shape == (180, 320, 3) for f in seen)
    red = seen[-1].image[..., 2].astype(int) - seen[-1].image[..., 1]
    ys, xs = np.nonzero(red > 80)
    x0, y0, x1, y1 = boxes[-1]
    assert abs(xs.mean() / 320 - (x0 + x1) / 2) < 0.02 and abs(ys.mean() / 180 - (y0 + y1) / 2) < 0.02
    # smaller sources and 0 are kept as they are
    assert fitted_size(160, 120, 320) == (160, 120) and fitted_size(3840, 2160, 0) == (3840, 2160)
    assert fitted_size(2160, 3840, 1280) == (720, 1280)
    small = np.zeros((120, 160, 3), np.uint8)
    assert fit_within(small, 320) is small


def test_paced_file_keeps_only_the_newest_frame_for_a_slow_reader(clip):
    src = VideoSource(str(clip), paced=True)
    t0 = time.monotonic()
    src.start()
    seen = drain(src, reader_delay=0.15)     # a reader three frames slower than the source
    elapsed = time.monotonic() - t0
    idx = [f.index for f in seen]
    assert idx == sorted(set(idx)) and len(idx) < 20
    assert src.dropped == 20 - len(idx)      # every frame was either read or counted as dropped
    assert elapsed >= 0.8                    # 20 frames at 20 fps play for about a second
    # arrival stamps follow the file's clock (paced), not the decoder's speed
    for f in seen:
        assert f.t_capture - seen[0].t_capture == pytest.approx(f.t_media - seen[0].t_media, abs=0.1)


def test_loop_restarts_the_file_and_keeps_counting(clip):
    src = VideoSource(str(clip), paced=False, loop=True)
    src.start()
    idx = []
    while len(idx) < 45:
        f = src.frames.get(1.0)
        if f is not None:
            idx.append(f.index)
    src.stop()
    assert idx == list(range(45)) and src.join(2.0)


def test_latest_slot_replaces_unread_items_and_counts_them():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get(0.01) == 4 and slot.dropped == 4
    assert slot.get(0.01) is None
    slot.put(7)
    slot.close()
    assert slot.get(0.01) == 7               # a pending item survives close
    with pytest.raises(Closed):
        slot.get(0.01)
    assert slot.put(8) is False


def test_lossless_slot_waits_for_the_reader():
    slot = LatestSlot(lossless=True)
    got = []

    def reader():
        while True:
            try:
                item = slot.get(0.5)
            except Closed:
                return
            if item is not None:
                got.append(item)
                time.sleep(0.005)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(50):
        while not slot.put(i):
            pass
    slot.close()
    t.join(2.0)
    assert got == list(range(50)) and slot.dropped == 0
