"""`jsa-rt devices`, `doctor`, `demo` and the live command's errors, as a user runs them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsa_rt.live.demo import score
from jsa_rt.live.demo_clip import build_clip
from jsa_rt.live.demo_material import find_stamp_root, paste
from jsa_rt.live.demo_scenes import DRIFT

from live_helpers import REPO, alsa_file_mic

DATA = Path(os.environ.get("JSA_DATA", REPO.parent / "shared" / "data"))
DATA_ARG = str(DATA) if DATA.is_dir() else None      # else the demo's own fallback (Debian's stamps)
needs_data = pytest.mark.skipif(find_stamp_root(DATA_ARG) is None,
                                reason=f"no Tux Paint stamps under {DATA} (set JSA_DATA)")


def data_option() -> list[str]:
    return ["--data", DATA_ARG] if DATA_ARG else []


def cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jsa_rt.cli", *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(env or os.environ, PYTHONPATH=str(REPO)))


def test_devices_lists_the_file_backed_microphone(tmp_path):
    raw = tmp_path / "in.raw"
    np.zeros(1600, "<i2").tofile(raw)
    done = cli("devices", env=alsa_file_mic(tmp_path / "home", raw))
    assert done.returncode == 0, done.stderr
    assert "cameras:" in done.stdout and "microphones:" in done.stdout
    line = next(l for l in done.stdout.splitlines() if "testmic" in l)
    assert "16000" in line and "48000" in line             # the plug device resamples: both accepted
    assert done.stdout.strip().splitlines()[-1].startswith("devices: ")


def test_doctor_reports_and_exits_zero_with_things_missing(tmp_path):
    done = cli("doctor", env=dict(os.environ, HOME=str(tmp_path), DISPLAY=""))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("PortAudio", "default microphone", "opencv GUI", "opencv GStreamer", "display",
                 "onnxruntime", "TensorRT", "pycuda"):
        assert name in out
    # every warning comes with a fix
    lines = out.splitlines()
    for i, l in enumerate(lines):
        if l.startswith("[warn]"):
            assert "fix:" in lines[i + 1], l
    assert lines[-1].startswith("doctor: ")


@pytest.mark.parametrize("args, words", [
    (["--camera", "missing.mp4"], "video file not found: missing.mp4"),
    (["--camera", "/dev/video42"], "camera /dev/video42 does not exist"),
    (["--camera", "gopher://x"], "unknown camera URI scheme"),
    (["--audio-hop", "0"], "--audio-hop must be positive"),
])
def test_live_errors_are_one_line(args, words):
    done = cli("live", "--headless", *args)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_live_and_demo_bad_numbers_are_usage_errors():
    for command, flag, value in (("live", "--duration", "-1"), ("live", "--threads", "0"),
                                 ("live", "--overlay-alpha", "2"), ("live", "--input-rate", "0"),
                                 ("demo", "--segments", "0"), ("demo", "--fps", "0"), ("demo", "--seed", "-1"),
                                 ("live", "--noise-margin-db", "0")):
        done = cli(command, "--headless" if command == "live" else "--no-pace", flag, value)
        assert done.returncode == 2 and f"argument {flag}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_demo_data_folder_that_is_not_there_is_an_error(tmp_path):
    for data in (tmp_path / "nope", tmp_path):             # missing, and a folder without stamps
        done = cli("demo", "--data", str(data), "--out", str(tmp_path / "demo"))
        err = done.stderr.strip()
        assert done.returncode == 2 and "--data" in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "demo").exists()


def test_a_log_name_the_file_system_refuses_is_a_one_line_error(tmp_path):
    from live_helpers import write_red_square_clip, write_tone_wav
    write_red_square_clip(tmp_path / "clip.mp4", frames=10)
    write_tone_wav(tmp_path / "tone.wav", 1.0)
    log = tmp_path / ("x" * 300 + ".jsonl")                 # its folder is writable; the name is too long
    done = cli("live", "--camera", str(tmp_path / "clip.mp4"), "--mic", f"file://{tmp_path / 'tone.wav'}",
               "--headless", "--no-pace", "--backend", "onnxruntime", "--model", _runtime_onnx("tiny", shipped=False),
               "--log-json", str(log))
    err = done.stderr.strip()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1] == (f"jsa-rt live: error: --log-json {log}: File name too long; "
                                    f"give another file name"), err


def test_a_log_that_cannot_be_opened_at_its_first_line_is_a_one_line_error(tmp_path):
    from jsa_rt.errors import InputError
    from jsa_rt.live.outputs import JsonLog
    (tmp_path / "taken").write_text("a file where the log's folder should be")   # appeared after the checks
    log = JsonLog(tmp_path / "taken" / "frames.jsonl")
    with pytest.raises(InputError, match=r"^cannot write --log-json .*frames.jsonl: File exists; choose a folder"):
        log.append({"frame": 0})


def test_paste_reports_the_box_of_the_visible_alpha():
    canvas = np.zeros((100, 200, 3), np.float32)
    stamp = np.zeros((30, 40, 4), np.float32)
    stamp[5:25, 10:30] = (1, 1, 1, 1)                      # opaque 20x20 square inside a 40x30 image
    box = paste(canvas, stamp, 150, 80)                    # partly outside the frame (bottom)
    assert box == pytest.approx((160 / 200, 85 / 100, 180 / 200, 100 / 100))
    assert canvas[85:100, 160:180].min() == 1 and canvas.sum() == 15 * 20 * 3


@needs_data
def test_demo_clip_from_real_data(tmp_path):
    truth = build_clip(tmp_path, DATA_ARG, segments=2, seconds=1.0, fps=10, seed=3)
    import cv2
    import soundfile as sf
    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 == len(truth["frames"])
    wave, rate = sf.read(str(tmp_path / "clip.wav"))
    assert rate == 16000 and len(wave) == 2 * 16000
    root = Path(truth["stamp_root"])
    for scene in truth["scenes"]:                          # each sounding stamp has its recording
        assert list(root.rglob(f"{scene['name']}.ogg")) and len(scene["distractors"]) == 2
    for seg in (0, 1):
        boxes = np.array([f["box"] for f in truth["frames"] if f["segment"] == seg])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert 0.05 < area.mean() < 0.4
        shift = abs(boxes[-1, 0] - boxes[0, 0])             # it drifts, slowly (clipped at the edges)
        assert 0 < shift <= DRIFT + 0.01


def test_demo_score_counts_peaks_inside_the_truth_box():
    truth = {"frames": [{"box": [0.0, 0.0, 0.5, 0.5]}, {"box": [0.5, 0.5, 1.0, 1.0]}, {"box": [0, 0, 1, 1]}]}
    recs = [{"frame": 0, "peak": [0.25, 0.25]}, {"frame": 1, "peak": [0.25, 0.25]}, {"frame": 2, "peak": None}]
    s = score(recs, truth)
    assert s["hits"] == 1 and s["rendered_frames"] == 3 and s["frames_with_peak"] == 2
    assert s["chance_rate"] == pytest.approx((0.25 + 0.25 + 1) / 3)


def _runtime_onnx(name_or_preset: str, shipped: bool):
    runtime = pytest.importorskip("jsa_rt.runtime")
    if "onnxruntime" not in runtime.available_backends():
        pytest.skip("onnxruntime is not installed")
    if shipped:
        try:
            return str(runtime.onnx_for(name_or_preset))
        except Exception as exc:
            pytest.skip(f"shipped model {name_or_preset} not available yet: {exc}")
    return str(runtime.onnx_for(None, name_or_preset))


@needs_data
def test_demo_end_to_end_with_onnxruntime(tmp_path):
    model = _runtime_onnx("tiny", shipped=False)
    done = cli("demo", "--out", str(tmp_path), *data_option(), "--segments", "2", "--segment-seconds", "1",
               "--fps", "10", "--no-pace", "--backend", "onnxruntime", "--model", model)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert "the peak fell on the sounding object in" in last and "next:" in last
    s = json.loads((tmp_path / "score.json").read_text())
    assert s["rendered_frames"] == 20 and s["backend"] == "onnxruntime"
    import cv2
    cap = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20


@needs_data
@pytest.mark.slow
def test_demo_with_the_shipped_model_points_at_the_sounding_object(tmp_path):
    model = _runtime_onnx("edge-jsa", shipped=True)
    done = cli("demo", "--out", str(tmp_path), *data_option(), "--scene", "stamps", "--segments", "3",
               "--segment-seconds", "3", "--fps", "10", "--no-pace", "--backend", "onnxruntime", "--model", model,
               timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    s = json.loads((tmp_path / "score.json").read_text())
    # chance = the fraction of the frame the sounding object's box covers (about 0.3 here)
    assert s["hit_rate"] > 0.6 and s["hit_rate"] > s["chance_rate"] + 0.2, s


ffmpeg_needed = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                   reason="needs ffmpeg (tools/setup.sh installs it)")


@ffmpeg_needed
def test_a_video_file_brings_its_own_soundtrack(tmp_path):
    from live_helpers import write_red_square_clip, write_tone_wav
    from jsa_rt.audio_io import load_audio
    from jsa_rt.errors import InputError
    from jsa_rt.live.cli_live import default_mic
    silent, tone, clip = tmp_path / "silent.mp4", tmp_path / "tone.wav", tmp_path / "clip.mp4"
    write_red_square_clip(silent, frames=30, fps=15)
    wave = write_tone_wav(tone, 2.0, rate=44100)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(silent), "-i", str(tone),
                    "-c:v", "copy", "-c:a", "aac", "-shortest", str(clip)], check=True)
    # the soundtrack decodes (through ffmpeg) to the tone: level and pitch survive AAC
    sound = load_audio(clip, 16000)
    assert abs(sound.size - 32000) < 1600
    assert np.sqrt(np.mean(sound[4000:-4000] ** 2)) == pytest.approx(np.sqrt(np.mean(wave ** 2)), rel=0.05)
    assert np.argmax(np.abs(np.fft.rfft(sound[:16000]))) == pytest.approx(440, abs=2)   # 1 Hz bins
    with pytest.raises(InputError, match="has no audio track"):
        load_audio(silent, 16000)
    # live: without --mic a video file is its own microphone; other cameras use the default mic
    assert default_mic(f"file://{clip}") == f"file://{clip}" and default_mic(str(clip)) == f"file://{clip}"
    assert default_mic("0") == "default" and default_mic("rtsp://cam/stream") == "default"
    log = tmp_path / "log.jsonl"
    done = cli("live", "--camera", f"file://{clip}", "--no-pace", "--headless", "--log-json", str(log),
               "--backend", "onnxruntime", "--hfov", "90", "--min-confidence", "0")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    levels = [r["level_db"] for r in records]
    assert len(levels) >= 25 and np.median(levels) == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=1.0)
    # with --hfov each located source also has its bearing: 90 degrees wide, azimuth = atan(2x - 1)
    located = [r for r in records if r["peak"] is not None]
    assert located and all(r["bearing_deg"] is not None for r in located)
    for r in located:
        assert r["bearing_deg"][0] == pytest.approx(np.degrees(np.arctan(2 * r["peak"][0] - 1)), abs=0.05)
    done = cli("live", "--camera", f"file://{silent}", "--no-pace", "--headless")
    assert done.returncode == 2 and "has no audio track; choose the sound with --mic" in done.stderr
    assert "Traceback" not in done.stderr


@ffmpeg_needed
def test_video_soundtracks_decode_like_audio_files(tmp_path, monkeypatch):
    """Stereo mixes as for a wav file, a late-starting soundtrack keeps its place on the
    timeline, and a file name with a colon is a file, not an ffmpeg protocol."""
    import soundfile as sf
    from jsa_rt.audio_io import load_audio
    rate = 16000
    t = np.arange(2 * rate) / rate
    left_only = np.stack([0.4 * np.sin(2 * np.pi * 300 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    wav = tmp_path / "stereo.wav"
    sf.write(wav, left_only, rate)
    mkv = tmp_path / "stereo.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "pcm_f32le", str(mkv)],
                   check=True)
    from_wav, from_mkv = load_audio(wav, rate), load_audio(mkv, rate)
    assert np.sqrt(np.mean(from_mkv ** 2)) == pytest.approx(np.sqrt(np.mean(from_wav ** 2)), rel=0.01)
    # sound that starts 1 s after the picture
    late = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=gray:s=64x48:r=10:d=3", "-itsoffset", "1.0", "-i", str(wav),
                    "-c:v", "mpeg4", "-c:a", "aac", str(late)], check=True)
    sound = load_audio(late, rate)
    onset = np.argmax(np.abs(sound) > 0.05) / rate
    assert onset == pytest.approx(1.0, abs=0.08)
    # "take:2.mkv" given relative to the working folder
    (tmp_path / "take:2.mkv").write_bytes(mkv.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert load_audio("take:2.mkv", rate).size == from_mkv.size


def _flash_and_burst_clip(video, wav, fps, events=(0.8, 2.0, 3.2), seconds=4.0, rate=16000):
    """Dark frames with one white frame at each event (on frame boundaries at 7.5 and 15 fps), and a
    50 ms 1 kHz burst at the same times."""
    import cv2
    import soundfile as sf
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (96, 64))
    flashes = {int(round(e * fps)) for e in events}
    for i in range(int(round(seconds * fps))):
        writer.write(np.full((64, 96, 3), 250 if i in flashes else 30, np.uint8))
    writer.release()
    t = np.arange(int(seconds * rate)) / rate
    sound = np.zeros_like(t)
    for e in events:
        on = (t >= e) & (t < e + 0.05)
        sound[on] = 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    sf.write(str(wav), sound.astype(np.float32), rate)


def _onsets(mp4):
    """(flash times from the frames' timestamps, burst onsets in the sound track), seconds."""
    import io
    import soundfile as sf
    pts = [float(x) for x in subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0",
         str(mp4)], capture_output=True, text=True).stdout.split() if x]
    import cv2
    cap, bright = cv2.VideoCapture(str(mp4)), []
    ok, img = cap.read()
    while ok:
        bright.append(img.mean())
        ok, img = cap.read()
    flashes = [pts[i] for i in range(len(bright)) if bright[i] > 150 and (i == 0 or bright[i - 1] <= 150)]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-map", "0:a:0", "-ac", "1", "-ar", "16000",
                          "-f", "wav", "-"], capture_output=True).stdout
    x, rate = sf.read(io.BytesIO(raw))
    loud = np.abs(x) > 0.1
    bursts = [i / rate for i in range(1, len(x)) if loud[i] and not loud[max(0, i - 400):i].any()]
    return flashes, bursts, len(bright)


@ffmpeg_needed
@pytest.mark.parametrize("fps", [7.5, 15.0])
def test_recorded_sound_is_in_step_with_the_picture(tmp_path, fps):
    clip, wav, out = tmp_path / "sync.mp4", tmp_path / "sync.wav", tmp_path / "out.mp4"
    _flash_and_burst_clip(clip, wav, fps)
    done = cli("live", "--camera", str(clip), "--mic", f"file://{wav}", "--no-pace", "--headless", "--no-hud",
               "--overlay-alpha", "0", "--output", str(out), "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr
    flashes, bursts, frames = _onsets(out)
    assert frames == int(round(4.0 * fps))                      # the sound never cuts the picture short
    assert len(flashes) == len(bursts) == 3
    for f, b in zip(flashes, bursts):
        assert abs(b - f) < 0.02, (flashes, bursts)             # within a 20 ms, not a frame (67-133 ms)


def test_output_paths_are_checked_before_the_run(tmp_path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    for flag in ("--output", "--log-json"):
        done = cli("live", "--camera", "missing.mp4", flag, str(folder))
        assert done.returncode == 2 and f"{flag} {folder} is a folder" in done.stderr
        assert "Traceback" not in done.stderr
    done = cli("live", "--camera", "missing.mp4", "--output", "/proc/version/x.mp4")
    assert done.returncode == 2 and "cannot write in" in done.stderr
    done = cli("live", "--camera", "missing.mp4", "--output", f"file://{folder}")     # file:// names the file
    assert done.returncode == 2 and f"--output {folder} is a folder" in done.stderr


def test_a_file_name_with_an_exclamation_mark_is_a_file(tmp_path):
    from jsa_rt.live.video import parse_video_uri
    from live_helpers import write_red_square_clip
    clip = tmp_path / "take!1.mp4"
    write_red_square_clip(clip, frames=3)
    assert parse_video_uri(str(clip)).kind == "file" and parse_video_uri(f"file://{clip}").kind == "file"
    assert parse_video_uri("videotestsrc ! appsink").kind == "gstreamer"


@ffmpeg_needed
def test_sync_holds_with_a_playback_rate_and_a_looping_soundtrack(tmp_path):
    clip, wav, muxed = tmp_path / "sync.mp4", tmp_path / "sync.wav", tmp_path / "with_sound.mp4"
    _flash_and_burst_clip(clip, wav, 15.0)
    # --input-rate only changes how fast a file plays, not its clock. The tiny model keeps up with
    # 30 fps on an idle machine; on a saturated one a one-frame flash can be dropped for speed
    # (skipped whole, never shifted), so: every flash that made it sits on its own burst
    out = tmp_path / "fast.mp4"
    done = cli("live", "--camera", str(clip), "--mic", f"file://{wav}", "--input-rate", "30", "--headless",
               "--no-hud", "--overlay-alpha", "0", "--output", str(out), "--backend", "onnxruntime",
               "--model", _runtime_onnx("tiny", shipped=False))
    assert done.returncode == 0, done.stderr
    flashes, bursts, _ = _onsets(out)
    assert len(bursts) == 3 and 2 <= len(flashes) <= 3, (flashes, bursts)
    assert all(min(abs(b - f) for b in bursts) < 0.02 for f in flashes), (flashes, bursts)
    # a video's own (AAC, slightly longer) soundtrack loops with its picture: no drift per loop
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-i", str(wav), "-c:v", "copy",
                    "-c:a", "aac", str(muxed)], check=True)
    out = tmp_path / "looped.mp4"
    done = cli("live", "--camera", str(muxed), "--loop", "--duration", "11.9", "--no-pace", "--headless",
               "--no-hud", "--overlay-alpha", "0", "--output", str(out), "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr
    flashes, bursts, _ = _onsets(out)
    assert len(flashes) == len(bursts) == 9, (flashes, bursts)
    assert all(abs(b - f) < 0.03 for f, b in zip(flashes, bursts)), (flashes, bursts)


@ffmpeg_needed
def test_a_variable_frame_rate_file_stays_in_step_with_its_sound(tmp_path):
    """Phones record variable frame rates: 2 s at 5 fps then 2 s at 30 fps, one flash and one
    burst in each part. Frames are timed by their own timestamps, not index / average rate."""
    import cv2
    import soundfile as sf
    listing, n = [], 0
    for fps, flash_at in ((5, 5), (30, 30)):                        # flashes at 1.0 s and 3.0 s
        for i in range(2 * fps):           # a 0.2 s flash, so that it survives a lower recording rate
            image = tmp_path / f"f{n:03d}.png"
            cv2.imwrite(str(image), np.full((64, 96, 3), 250 if flash_at <= i < flash_at + fps // 5 else 30,
                                            np.uint8))
            listing.append(f"file '{image}'\nduration {1 / fps:.6f}\n")
            n += 1
    listing.append(f"file '{image}'\n")
    (tmp_path / "frames.txt").write_text("".join(listing))
    vfr = tmp_path / "vfr.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(tmp_path / "frames.txt"), "-fps_mode", "vfr", "-c:v", "mpeg4", "-q:v", "3", str(vfr)],
                   check=True)
    rate = 16000
    t = np.arange(4 * rate) / rate
    sound = np.zeros_like(t)
    for e in (1.0, 3.0):
        on = (t >= e) & (t < e + 0.05)
        sound[on] = 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    wav = tmp_path / "vfr.wav"
    sf.write(str(wav), sound.astype(np.float32), rate)
    out = tmp_path / "out.mp4"
    done = cli("live", "--camera", str(vfr), "--mic", f"file://{wav}", "--no-pace", "--headless", "--no-hud",
               "--overlay-alpha", "0", "--output", str(out), "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr
    flashes, bursts, _ = _onsets(out)
    assert len(flashes) == len(bursts) == 2, (flashes, bursts)
    assert all(abs(b - f) < 0.1 for f, b in zip(flashes, bursts)), (flashes, bursts)   # index/avg rate: 0.7 s off
