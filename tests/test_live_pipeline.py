"""The live pipeline end to end: file camera + real ALSA/PortAudio mic, outputs, gating, shutdown."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jsa_rt.live.recorder import VideoRecorder
from jsa_rt.live.pipeline import Pipeline
from jsa_rt.live.settings import LiveOptions
from jsa_rt.live.render import Localizer, RenderOptions
from jsa_rt.live.where import Where

from live_helpers import (REPO, FakeBackend, alsa_file_mic, write_red_square_clip, write_tone_wav)

REQUIRED_KEYS = {"t", "peak", "confidence", "latency_ms", "backend"}
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    boxes = write_red_square_clip(d / "clip.mp4", frames=30, fps=15)
    write_tone_wav(d / "tone.wav", 2.0)
    write_tone_wav(d / "silence.wav", 2.0, amp=0.0)
    raw = d / "mic.raw"
    (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000) * 32767).astype("<i2").tofile(raw)
    return {"dir": d, "clip": d / "clip.mp4", "boxes": boxes, "tone": d / "tone.wav",
            "silence": d / "silence.wav", "raw": raw}


@pytest.fixture(scope="module")
def tiny_onnx():
    """The runtime's random-weight tiny ONNX (exported once, then cached by jsa_rt.runtime)."""
    runtime = pytest.importorskip("jsa_rt.runtime")
    if "onnxruntime" not in runtime.available_backends():
        pytest.skip("onnxruntime is not installed")
    return str(runtime.onnx_for(None, "tiny"))


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def count_frames(path: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def inside(peak, box) -> bool:
    return box[0] <= peak[0] <= box[2] and box[1] <= peak[1] <= box[3]


E2E_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from live_helpers import FakeBackend
from jsa_rt.live.pipeline import Pipeline
from jsa_rt.live.settings import LiveOptions
kind, model, out = sys.argv[1:4]
if kind == "fake":
    fb = FakeBackend()
    factory = lambda: fb
else:
    from jsa_rt.runtime import load_backend
    factory = lambda: load_backend("onnxruntime", model, device="cpu")
opts = LiveOptions(camera={clip!r}, mic="testmic", paced=False, headless=True, quiet=True,
                   output=out + ".mp4", log_json=out + ".jsonl")
s = Pipeline(opts, factory).run()
print(json.dumps(dict(frames=s.frames, stopped_by=s.stopped_by, not_joined=s.not_joined,
                      written=s.written, refreshes=s.audio_refreshes,
                      thread=fb.thread if kind == "fake" else None,
                      closed=fb.closed if kind == "fake" else None)))
"""


def run_e2e(media, kind: str, model: str = "") -> tuple[dict, list[dict], Path]:
    d = media["dir"]
    env = alsa_file_mic(d / f"home-{kind}", media["raw"])
    env["PYTHONPATH"] = str(REPO)
    script = d / "e2e.py"
    script.write_text(E2E_SCRIPT.format(tests=str(TESTS), clip=str(media["clip"])))
    out = d / f"e2e-{kind}"
    done = subprocess.run([sys.executable, str(script), kind, model, str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, read_log(Path(str(out) + ".jsonl")), Path(str(out) + ".mp4")


def test_end_to_end_video_file_camera_and_alsa_microphone_fake_backend(media):
    summary, log, mp4 = run_e2e(media, "fake")
    # every frame of the 30-frame clip rendered once, recorded once, logged once
    assert summary["frames"] == 30 and len(log) == 30 and count_frames(mp4) == 30
    assert summary["stopped_by"] == "end of input" and summary["not_joined"] == []
    assert summary["thread"] == "inference" and summary["closed"] is True
    assert all(REQUIRED_KEYS <= set(r) for r in log)
    assert [r["frame"] for r in log] == list(range(30))
    # the microphone's tone (-13.5 dBFS) opens the gate; peaks map back onto the red square
    assert all(r["level_db"] == pytest.approx(-13.5, abs=1.0) for r in log)
    hits = sum(inside(r["peak"], media["boxes"][r["frame"]]) for r in log if r["peak"])
    assert hits >= 27
    # the audio branch ran about every 0.25 s of the 2 s clip, not on every frame
    assert 7 <= summary["refreshes"] <= 10


def test_a_fast_source_is_recorded_at_the_capped_rate_over_the_same_duration(media, tmp_path):
    """A 60 fps source: every frame is processed (not paced), the recording runs at 30 fps
    (each recorded frame is encoded; past the processing rate they would only repeat)."""
    import cv2
    write_red_square_clip(tmp_path / "fast.mp4", frames=60, fps=60)
    out = tmp_path / "rec.mp4"
    opts = LiveOptions(camera=str(tmp_path / "fast.mp4"), mic=f"file://{media['tone']}", paced=False,
                       headless=True, quiet=True, output=str(out))
    summary = Pipeline(opts, lambda: FakeBackend()).run()
    assert summary.frames == 60
    cap = cv2.VideoCapture(str(out))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert fps == pytest.approx(30.0) and 29 <= count_frames(out) <= 31


def test_end_to_end_with_the_onnxruntime_backend(media, tiny_onnx):
    summary, log, mp4 = run_e2e(media, "ort", tiny_onnx)
    assert summary["frames"] == 30 and len(log) == 30 and count_frames(mp4) == 30
    assert summary["not_joined"] == [] and any("with sound" in w for w in summary["written"])
    for r in log:
        assert REQUIRED_KEYS <= set(r) and r["backend"] == "onnxruntime"
        assert 0.0 <= r["confidence"] <= 1.0 and r["latency_ms"] > 0
        assert r["peak"] is None or all(0.0 <= v <= 1.0 for v in r["peak"])


@pytest.mark.parametrize("sig, twice", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_joins_threads_and_leaves_a_playable_recording(media, tiny_onnx, tmp_path, sig, twice):
    """One signal, or two SIGINTs 50 ms apart (what `timeout -s INT` and some terminals send)."""
    out, log = tmp_path / "rec.mp4", tmp_path / "rec.jsonl"
    cmd = [sys.executable, "-m", "jsa_rt.cli", "live", "--camera", str(media["clip"]), "--loop",
           "--mic", f"file://{media['tone']}", "--headless", "--backend", "onnxruntime",
           "--model", tiny_onnx, "--output", str(out), "--log-json", str(log)]
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 20):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        assert not out.exists()                 # still recording into a temporary file
        proc.send_signal(sig)
        if twice:
            time.sleep(0.05)
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    last = stdout.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(sig).name}" in last and "threads still running" not in last
    frames = count_frames(out)
    assert frames >= 20 and f"{out} ({frames} frames, with sound)" in last
    assert not list(tmp_path.glob(".*partial*"))      # temporary files renamed or removed


def run_inprocess(media, tmp_path, **overrides) -> tuple[object, list[dict], FakeBackend]:
    fb = FakeBackend()
    records = []
    opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False, headless=True,
                       quiet=True)
    for k, v in overrides.items():
        setattr(opts, k, v)
    summary = Pipeline(opts, lambda: fb, on_frame=records.append).run()
    return summary, records, fb


def test_silence_and_low_confidence_give_the_no_source_state(media, tmp_path):
    _, quiet, _ = run_inprocess(media, tmp_path, mic=f"file://{media['silence']}")
    assert quiet and all(r["peak"] is None and r["state"] == "no source (quiet)" for r in quiet)
    _, unsure, _ = run_inprocess(media, tmp_path, render=RenderOptions(min_confidence=1.01))
    # (the first frames, before any sound has played, are quiet first)
    assert all(r["peak"] is None for r in unsure)
    assert sum(r["state"] == "no source (low confidence)" for r in unsure) >= 25
    _, loud, _ = run_inprocess(media, tmp_path)
    assert sum(r["peak"] is not None for r in loud) >= 25     # the tone is heard after the first hop


def test_the_gate_is_the_models_own_unless_one_is_given(media, tmp_path):
    """Each checkpoint carries the no-source confidence chosen for it on val (0.3 for edge-jsa,
    0 for edge-jsa-listen): `live` applies that one unless --min-confidence overrides it."""
    import dataclasses

    class HalfSure(FakeBackend):
        def __init__(self, gate):
            super().__init__()
            self.config = dataclasses.replace(self.config, no_source_confidence=gate)

        def run_visual(self, frame, audio_state):
            maps = super().run_visual(frame, audio_state)
            maps.confidence = 0.5
            return maps

    def states(gate, render):
        opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False,
                           headless=True, quiet=True, render=render)
        records = []
        Pipeline(opts, lambda: HalfSure(gate), on_frame=records.append).run()
        return [r["state"] for r in records if r["t"] >= 0.3]       # after the first audio refresh

    assert set(states(0.6, RenderOptions())) == {"no source (low confidence)"}
    assert set(states(0.4, RenderOptions())) == {"source"}
    assert set(states(0.6, RenderOptions(min_confidence=0.4))) == {"source"}


def test_center_crop_maps_peaks_back_to_the_full_frame(media, tmp_path):
    _, recs, _ = run_inprocess(media, tmp_path, crop="center")
    boxes = media["boxes"]
    # a 160x120 frame's centre square spans x in [1/8, 7/8]: frames whose square is fully inside it
    central = [r for r in recs if r["peak"] and boxes[r["frame"]][0] >= 0.125 and boxes[r["frame"]][2] <= 0.875]
    assert len(central) >= 10
    assert all(inside(r["peak"], boxes[r["frame"]]) for r in central)


def test_duration_and_loop(media, tmp_path):
    summary, recs, _ = run_inprocess(media, tmp_path, loop=True, duration=3.0)
    assert summary.stopped_by == "--duration" and summary.not_joined == []
    # [0, 3) s of media time at 15 fps: 45 frames, looping past the clip's 30; none in flight after it
    assert len(recs) == 45 and recs[-1]["t"] < 3.0 and max(r["frame"] for r in recs) >= 40


def test_a_mic_that_fails_to_start_leaves_the_previous_log_alone(media, tmp_path, monkeypatch):
    """The microphone refuses to start (no permission, device busy): a one-line error, and the
    log of an earlier run at the same path is neither truncated nor replaced by an empty file."""
    from jsa_rt.errors import JsaError
    from jsa_rt.live import pipeline as pipeline_module
    from live_helpers import FakeBackend
    real_open = pipeline_module.open_audio

    def refusing_mic(*args, **kwargs):
        source = real_open(*args, **kwargs)
        def start():
            raise JsaError("cannot open the microphone 'default': permission denied; allow microphone access")
        source.start = start
        return source
    monkeypatch.setattr(pipeline_module, "open_audio", refusing_mic)
    log = tmp_path / "log.jsonl"
    log.write_text('{"frame": 0}\n')
    opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False, headless=True,
                       quiet=True, log_json=str(log))
    with pytest.raises(JsaError, match="permission denied"):
        Pipeline(opts, lambda: FakeBackend()).run()
    assert log.read_text() == '{"frame": 0}\n'


def test_backend_errors_are_reported_not_hung(media, tmp_path):
    from jsa_rt.errors import EngineError, JsaError

    def broken():
        raise EngineError("no ONNX export of edge-jsa: run `jsa-rt export-onnx`")
    opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", headless=True, quiet=True)
    with pytest.raises(JsaError, match="no ONNX export"):
        Pipeline(opts, broken).run()


def test_persistence_smoothing_has_the_configured_time_constant():
    loc = Localizer(RenderOptions(persistence_ms=200, min_level_db=-60))
    zeros, ones = np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)
    loc.update(Where(zeros, 1.0, -10.0), t=0.0)
    out = loc.update(Where(ones, 1.0, -10.0), t=0.2)         # one time constant later: 1 - 1/e
    assert float(out.heatmap.mean()) == pytest.approx(1 - np.exp(-1), abs=1e-5)
    quiet = loc.update(Where(ones, 1.0, -90.0), t=0.4)       # gated: no peak, the map fades
    assert not quiet.active and quiet.peak is None
    assert float(quiet.heatmap.mean()) == pytest.approx((1 - np.exp(-1)) * np.exp(-1), abs=1e-5)


def test_peak_box_encloses_the_region_above_the_threshold():
    heat = np.zeros((100, 100), np.float32)
    heat[20:40, 60:90] = 0.8
    heat[30, 75] = 1.0
    heat[70:80, 10:20] = 0.9                          # a second blob, not connected to the peak
    loc = Localizer(RenderOptions(persistence_ms=0)).update(Where(heat, 1.0, 0.0), t=0.0)
    assert loc.peak == pytest.approx((0.755, 0.305))
    assert loc.box == pytest.approx((0.60, 0.20, 0.90, 0.40))


def test_recorder_is_atomic_and_keeps_the_source_timeline(tmp_path):
    import cv2
    out = tmp_path / "r.mp4"
    rec = VideoRecorder(out, fps=10)
    img = np.zeros((48, 64, 3), np.uint8)
    assert rec.write(img, 5.0) == 1
    assert rec.write(img, 5.5) == 5                   # 0.5 s later at 10 fps: the gap is filled
    assert rec.write(img, 5.52) == 0                  # early frame: the timeline already covers it
    assert not out.exists() and list(tmp_path.glob(".r.partial-*"))
    rec.close()
    assert out.exists() and count_frames(out) == 6 and not list(tmp_path.glob(".r.partial-*"))
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)


def test_recorder_fills_gaps_with_the_previous_frame_and_keeps_one_size(tmp_path):
    import cv2
    from jsa_rt.live.recorder import VideoRecorder
    rec = VideoRecorder(tmp_path / "gaps.mp4", fps=10.0, audio_rate=16000)
    frame = lambda level, size=(64, 48): np.full((size[1], size[0], 3), level, np.uint8)   # noqa: E731
    assert rec.write(frame(40), 0.0) == 1
    assert rec.write(frame(200), 0.4) == 4            # frames at 0.1-0.3 were dropped upstream
    assert rec.write(frame(120, (128, 96)), 0.5) == 1  # a camera back at another size
    rec.write_audio(np.zeros(1600, np.float32))        # 0.1 s of sound for 0.6 s of picture
    assert "6 frames" in rec.close()
    cap, levels = cv2.VideoCapture(str(tmp_path / "gaps.mp4")), []
    ok, img = cap.read()
    while ok:
        assert img.shape[:2] == (48, 64)
        levels.append(round(float(img.mean()) / 10) * 10)
        ok, img = cap.read()
    # the gap holds the old picture; the new one appears at its own time; nothing was cut short
    assert levels == [40, 40, 40, 40, 200, 120]


def test_a_capture_failure_is_an_error_not_end_of_input(tmp_path, monkeypatch):
    """A grabber that dies (a decoder error, a camera unplugged) ends the run with an error and a
    non-zero exit, its outputs still finished; it is not reported as the end of the input."""
    from jsa_rt.errors import JsaError
    from jsa_rt.live import video as video_module
    from jsa_rt.live.pipeline import Pipeline
    from jsa_rt.live.settings import LiveOptions
    from live_helpers import FakeBackend, write_red_square_clip, write_tone_wav
    clip, wav = tmp_path / "c.mp4", tmp_path / "t.wav"
    write_red_square_clip(clip, frames=20)
    write_tone_wav(wav, 2.0)

    def failing_run(self):
        self.error = "video capture failed: decoder exploded"      # what _run records on an exception
        self.frames.close()
    monkeypatch.setattr(video_module.VideoSource, "_run", failing_run)
    pipe = Pipeline(LiveOptions(camera=str(clip), mic=f"file://{wav}", headless=True, paced=False, quiet=True,
                                log_json=str(tmp_path / "log.jsonl")), lambda: FakeBackend())
    with pytest.raises(JsaError, match="decoder exploded; wrote nothing"):   # no frame was captured
        pipe.run()
    assert not (tmp_path / "log.jsonl").exists()
    assert pipe.stopped_by == "capture failure (video capture failed: decoder exploded)"


def strict_json(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


class AudioSensitiveBackend(FakeBackend):
    """As a real model does: NaN audio makes the whole map and the confidence NaN."""

    def run_visual(self, frame, audio_state):
        maps = super().run_visual(frame, audio_state)
        maps.heatmap = maps.heatmap + np.float32(0.0 * audio_state["rms"])
        maps.confidence = float(np.clip(audio_state["rms"] * 10, 0.0, 1.0))
        return maps


def test_a_nan_burst_from_the_microphone_never_reaches_the_model_or_the_log(media, tmp_path, monkeypatch):
    """NaN and inf samples in the mic stream are zeroed and counted: the state stays right
    through the burst and after it, and --log-json stays strict JSON."""
    from jsa_rt.live import audio as audio_module
    from live_helpers import StreamingSoundDevice
    rate = 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * rate) / rate)).astype(np.float32)
    wave[int(0.5 * rate):int(0.6 * rate)] = np.nan          # a 100 ms burst of NaN
    wave[int(1.0 * rate):int(1.0 * rate) + 5] = np.inf      # and a few inf samples
    monkeypatch.setattr(audio_module, "import_sounddevice", lambda: StreamingSoundDevice(wave, rate))
    log = tmp_path / "nan.jsonl"
    opts = LiveOptions(camera=str(media["clip"]), mic="default", headless=True, quiet=True,
                       log_json=str(log))
    pipe = Pipeline(opts, lambda: AudioSensitiveBackend())
    summary = pipe.run()
    records = [strict_json(line) for line in log.read_text().splitlines()]
    assert summary.frames >= 15 and len(records) == summary.frames
    assert all(r["confidence"] is not None and 0.0 <= r["confidence"] <= 1.0 for r in records)
    assert records[-1]["nonfinite_samples"] == int(0.1 * rate) + 5
    assert "NaN/inf samples zeroed 1605" in pipe.status_line()
    # after the first audio refresh the tone is heard on every frame, and the peak is on the square
    heard = [r for r in records if r["t"] >= 0.3]
    assert heard and all(r["state"] == "source" for r in heard)
    assert all(inside(r["peak"], media["boxes"][r["frame"]]) for r in heard)


def test_a_non_finite_model_output_is_the_no_source_state_and_does_not_linger():
    loc = Localizer(RenderOptions(persistence_ms=250, min_level_db=-60, min_confidence=0.1))
    heat = np.zeros((8, 8), np.float32)
    heat[5, 6] = 1.0
    assert loc.update(Where(heat, 0.9, -10.0), t=0.0).active
    for bad_heat, bad_conf in ((np.full((8, 8), np.nan, np.float32), 0.9), (heat, float("nan")),
                               (heat, float("inf"))):
        out = loc.update(Where(bad_heat, bad_conf, -10.0), t=0.1)
        assert not out.active and out.reason == "non-finite model output" and out.peak is None
        assert np.isfinite(out.heatmap).all()
    again = loc.update(Where(heat, 0.9, -10.0), t=0.2)
    assert again.active and again.peak == pytest.approx((6.5 / 8, 5.5 / 8))


def test_the_json_log_never_writes_bare_nan(tmp_path):
    from jsa_rt.live.outputs import JsonLog
    log = JsonLog(tmp_path / "l.jsonl")
    log.append({"confidence": float("nan"), "peak": [float("inf"), 0.5], "stages_ms": {"a": float("-inf")}})
    log.close()
    assert strict_json((tmp_path / "l.jsonl").read_text()) == {"confidence": None, "peak": [None, 0.5],
                                                               "stages_ms": {"a": None}}


def test_output_and_log_json_naming_one_file_is_refused_before_the_model_loads(media, tmp_path):
    from jsa_rt.errors import JsaError
    loaded = []
    same = tmp_path / "run.mp4"
    for log in (same, tmp_path / "." / "run.mp4"):
        opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False, headless=True,
                           quiet=True, output=str(same), log_json=str(log))
        with pytest.raises(JsaError, match="--output and --log-json both name"):
            Pipeline(opts, lambda: loaded.append(1) or FakeBackend()).run()
    assert not loaded and list(tmp_path.iterdir()) == []


def test_a_full_disk_while_recording_is_one_line_and_leaves_no_partial_files(media, tmp_path, monkeypatch):
    """Issue 16.7: a full disk in `live --output` gave a traceback and left hidden .partial-* files."""
    import errno
    import soundfile as sf
    from jsa_rt.errors import JsaError
    writes = []

    def full(self, data):
        writes.append(len(data))
        if len(writes) >= 3:                                  # a few blocks went in, then the disk filled
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sf.SoundFile, "write", full)
    out = tmp_path / "run.mp4"
    pipe = Pipeline(LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False,
                                headless=True, quiet=True, output=str(out)), lambda: FakeBackend())
    with pytest.raises(JsaError) as err:
        pipe.run()
    message = str(err.value)
    assert "the disk is full" in message and str(out) in message and "\n" not in message, message
    assert list(tmp_path.iterdir()) == []                   # neither run.mp4 nor .run.partial-*


def test_a_full_disk_while_finishing_the_recording_removes_its_partial_files(tmp_path, monkeypatch):
    import errno
    from jsa_rt.errors import InputError
    rec = VideoRecorder(tmp_path / "r.mp4", fps=10, audio_rate=16000)
    rec.write(np.zeros((48, 64, 3), np.uint8), 0.0)
    rec.write_audio(np.zeros(160, np.float32))
    assert list(tmp_path.glob(".r.partial-*"))

    def full(*args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(InputError, match=r"r.mp4: the disk is full"):
        rec.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["run.avi", "run.png", "run"])
def test_an_output_not_named_mp4_is_refused_before_the_model_loads(media, tmp_path, name):
    """Issue 16: `--output run.avi` wrote an MP4 inside a .avi (and .png, a video)."""
    from jsa_rt.errors import JsaError
    loaded = []
    opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False, headless=True,
                       quiet=True, output=str(tmp_path / name))
    with pytest.raises(JsaError, match=r"records MP4 video only.*give a .mp4 name, e.g. .*run.mp4"):
        Pipeline(opts, lambda: loaded.append(1) or FakeBackend()).run()
    assert not loaded and list(tmp_path.iterdir()) == []


def test_log_json_never_writes_through_a_symbolic_link(media, tmp_path):
    """Issue 16: a --log-json that is a link (to a file the user owns) truncated the file it points to."""
    from jsa_rt.errors import InputError, JsaError
    from jsa_rt.live.outputs import JsonLog
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "run.jsonl"
    link.symlink_to(victim)
    loaded = []
    opts = LiveOptions(camera=str(media["clip"]), mic=f"file://{media['tone']}", paced=False, headless=True,
                       quiet=True, log_json=str(link))
    with pytest.raises(JsaError, match=r"--log-json .*run.jsonl is a symbolic link .*refusing to write through"):
        Pipeline(opts, lambda: loaded.append(1) or FakeBackend()).run()
    assert not loaded
    log = JsonLog(link)                                     # a link made after the start-up check
    with pytest.raises(InputError, match="symbolic link"):
        log.append({"t": 0.0})
    assert victim.read_text() == "keep me\n" and link.is_symlink()


def test_sinks_open_by_name_as_sources_do(tmp_path):
    from jsa_rt.errors import InputError
    from jsa_rt.live.outputs import JsonLog, Window, open_sink
    from jsa_rt.live.recorder import Recording
    assert isinstance(open_sink("window"), Window)
    for spec in (f"file://{tmp_path}/a.mp4", str(tmp_path / "a.MP4")):
        rec = open_sink(spec, fps=10)
        assert isinstance(rec, Recording) and rec.path.name.lower() == "a.mp4" and rec.close() is None
    assert isinstance(open_sink(str(tmp_path / "f.jsonl")), JsonLog)
    assert isinstance(open_sink(str(tmp_path / "f.txt"), "log"), JsonLog)     # --log-json takes any name
    with pytest.raises(InputError, match="give window, a .mp4 file or a .jsonl file"):
        open_sink(str(tmp_path / "f.avi"))
    assert list(tmp_path.iterdir()) == []                   # nothing written until a frame is


# ---- the noise-floor gate (--noise-margin-db) ---------------------------------------------------
def _gate_states(options: RenderOptions, levels, fps: float = 30.0) -> list[str]:
    """The Localizer's state for one frame per level, `fps` frames a second."""
    loc, heat = Localizer(options), np.ones((8, 8), np.float32)
    return ["source" if w.active else w.reason for w in
            (loc.update(Where(heat, 1.0, float(level)), t=i / fps) for i, level in enumerate(levels))]


def test_the_noise_floor_gate_hides_steady_background_noise_and_shows_a_sound_above_it():
    # 10 s of a fan at -40 dBFS (above the fixed gate of -50), a 1 s sound at -20, 4 s more fan
    levels = [-40.0] * 300 + [-20.0] * 30 + [-40.0] * 120
    fixed = _gate_states(RenderOptions(persistence_ms=0), levels)
    assert set(fixed) == {"source"}                          # today's gate: the fan is "a source"
    follows = _gate_states(RenderOptions(persistence_ms=0, noise_margin_db=10), levels)
    assert set(follows[:60]) == {"source"}                    # under 2 s of history: the fixed gate only
    assert set(follows[60:300]) == {"quiet"} and set(follows[330:]) == {"quiet"}
    assert set(follows[300:330]) == {"source"}


def test_the_noise_floor_gate_keeps_a_source_until_it_fills_nine_tenths_of_the_window():
    """The documented trade: 10 s of silence, then a source that does not stop. It stays shown
    while silence is more than a tenth of the last 30 s (to t = 37 s), then becomes the floor."""
    fps = 10.0
    levels = [-90.0] * 100 + [-25.0] * 400
    states = _gate_states(RenderOptions(persistence_ms=0, noise_margin_db=10), levels, fps)
    assert set(states[100:360]) == {"source"}                 # t = 10 .. 36 s
    assert set(states[380:]) == {"quiet"}                     # t >= 38 s


def test_the_noise_floor_restarts_when_media_time_goes_back():
    loc = Localizer(RenderOptions(persistence_ms=0, noise_margin_db=10))
    heat = np.ones((8, 8), np.float32)
    for i in range(90):                                       # 3 s of -40 dBFS: the floor is -40
        loc.update(Where(heat, 1.0, -40.0), t=i / 30)
    assert loc.level_gate_db == pytest.approx(-30.0)
    looped = loc.update(Where(heat, 1.0, -40.0), t=0.0)       # a looped file starts again
    assert looped.active and loc.level_gate_db == -50.0


needs_urbansound = pytest.mark.skipif(
    not (Path(os.environ.get("JSA_DATA", REPO.parent / "shared" / "data")) / "urbansound8k").is_dir(),
    reason="needs ../shared/data/urbansound8k (or JSA_DATA): real recordings")


@needs_urbansound
def test_the_noise_floor_gate_on_real_recordings_an_air_conditioner_and_a_dog():
    """Real field recordings (UrbanSound8K), levels measured as the live loop does (the RMS of the
    last 0.5 s, every 0.25 s): an air conditioner at -35 dBFS throughout, a dog barking over it."""
    import soundfile as sf
    from jsa_rt.live.audio import LEVEL_WINDOW_S, rms_dbfs
    root = Path(os.environ.get("JSA_DATA", REPO.parent / "shared" / "data")) / "urbansound8k"
    rate = 16000

    def mono(path):
        wave, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == rate
        return wave.mean(axis=1)

    def at_db(wave, db):
        return wave * (10 ** (db / 20) / np.sqrt(np.mean(wave.astype(np.float64) ** 2)))

    fan = mono(sorted(root.glob("fold*/*-0-*-*.ogg"))[0])
    fan = at_db(np.tile(fan, int(np.ceil(20 * rate / fan.size)))[:20 * rate], -35)
    dog = mono(sorted(root.glob("fold*/*-3-*-*.ogg"))[0])
    dog = at_db(dog[:2 * rate], -15)
    mix = fan.copy()
    start = 12 * rate
    mix[start:start + dog.size] += dog
    dog_alone = np.zeros_like(mix)
    dog_alone[start:start + dog.size] = dog
    hop, n = int(0.25 * rate), int(LEVEL_WINDOW_S * rate)
    ends = range(n, mix.size + 1, hop)
    loc = Localizer(RenderOptions(persistence_ms=0, noise_margin_db=10))
    heat = np.ones((8, 8), np.float32)
    levels, fan_only, barking = [], [], []
    for e in ends:
        level, t = rms_dbfs(mix[e - n:e]), e / rate
        active = loc.update(Where(heat, 1.0, level), t=t).active
        levels.append(level)
        if t >= 3.0 and not dog_alone[e - n:e].any():
            fan_only.append(active)
        elif rms_dbfs(dog_alone[e - n:e]) >= -22:             # a bark 13 dB over the fan in this half second
            barking.append(active)
    assert min(levels) > -50                                  # the fixed gate alone shows the fan as a source
    assert sum(fan_only) <= 0.1 * len(fan_only), (sum(fan_only), len(fan_only))
    assert len(barking) >= 3 and all(barking), barking
