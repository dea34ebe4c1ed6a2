"""`jsa_rt.SoundLocator`: the embeddable, synchronous form of the live pipeline, with the shipped
default model on onnxruntime (the deployment path), on real scenes where the data exists."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from jsa_rt import SoundLocator
from jsa_rt.audio_io import load_audio
from jsa_rt.errors import InputError
from jsa_rt.shipped import DEFAULT_MODEL
from jsa_rt.live.preprocess import model_input
from jsa_rt.train.scene_catalog import default_data_root

DATA = default_data_root()
needs_data = pytest.mark.skipif(not (DATA / "tuxpaint-stamps").is_dir(),
                                reason=f"needs the shared data folder ({DATA}); set JSA_DATA")


@pytest.fixture(scope="module")
def locator_factory():
    made = []

    def make(**kw):
        loc = SoundLocator(backend="onnxruntime", **kw)
        made.append(loc)
        return loc
    yield make
    for loc in made:
        loc.close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from jsa_rt.train.scenes import generate
    root = tmp_path_factory.mktemp("scenes")
    generate(root, seed=5, counts={"test": 8}, workers=1, no_source_fraction=0.0, progress=False)
    return root, json.loads((root / "annotations" / "test.json").read_text())


def push_in_blocks(loc, wave, rate, block_s=0.02):
    n = max(1, int(block_s * rate))
    for i in range(0, wave.size, n):
        loc.push_audio(wave[i:i + n], rate)


@needs_data
def test_matches_the_backend_on_real_scenes(scenes, locator_factory):
    root, entries = scenes
    loc = locator_factory(audio_hop=0.0)
    resampled = locator_factory(audio_hop=0.0)
    cfg = loc.config
    hits = 0
    for e in entries:
        frame = cv2.imread(str(root / "frames" / f"{e['file']}.jpg"))
        wave = load_audio(root / "audio" / f"{e['file']}.wav", cfg.sample_rate)
        push_in_blocks(loc, wave, cfg.sample_rate)
        where = loc.locate(frame)
        # the reference: one batch call on the same square and the newest window of audio
        ref = loc.backend.run(model_input(frame, cfg.image_size)[0], wave[-cfg.num_samples:])
        assert where.confidence == pytest.approx(ref.confidence, abs=1e-6)
        if not where.active:
            assert where.reason in ("quiet", "low confidence")
            continue
        assert np.abs(where.heatmap - ref.heatmap).max() < 1e-6
        h, w = frame.shape[:2]
        ry, rx = np.unravel_index(np.argmax(ref.heatmap), ref.heatmap.shape)
        assert where.peak_px == (int((rx + 0.5) / cfg.image_size * w), int((ry + 0.5) / cfg.image_size * h))
        x0, y0, x1, y1 = where.box_px
        assert x0 <= where.peak_px[0] < x1 and y0 <= where.peak_px[1] < y1
        bx0, by0, bx1, by1 = e["bbox"][0]
        hits += bx0 * w <= where.peak_px[0] < bx1 * w and by0 * h <= where.peak_px[1] < by1 * h
        # a 48 kHz microphone: resampled in, the same answer to resampling accuracy (a map that
        # listens moves with the sound: up to 0.009 measured for edge-jsa-listen, peaks unmoved)
        push_in_blocks(resampled, load_audio(root / "audio" / f"{e['file']}.wav", 48000), 48000)
        other = resampled.locate(frame)
        assert np.abs(other.heatmap - where.heatmap).max() < 2e-2
        assert abs(other.peak_px[0] - where.peak_px[0]) <= 3 and abs(other.peak_px[1] - where.peak_px[1]) <= 3
        assert where.heatmap_px().shape == frame.shape[:2]
    assert hits >= len(entries) // 2          # the shipped model points at the sounding object (83 % on test)


def test_silence_is_no_source_and_sound_is_gated_on(locator_factory):
    loc = locator_factory(audio_hop=0.0)
    frame = np.full((120, 160, 3), 90, np.uint8)
    cv2.circle(frame, (60, 60), 25, (0, 0, 255), -1)
    first = loc.locate(frame)                               # nothing pushed yet: silence
    assert not first.active and first.reason == "quiet" and first.peak is None and first.box_px is None
    loc.push_audio(np.zeros(16000, np.float32), 16000)
    assert loc.locate(frame).reason == "quiet"
    t = np.arange(32000) / 16000
    loc.push_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    loud = loc.locate(frame)
    assert loud.level_db == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.1)
    assert loud.reason in ("", "low confidence")             # the level gate is open
    loc.render_options.min_confidence = 0.0                  # the level alone decides
    assert loc.locate(frame).active


def test_the_noise_floor_gate_follows_the_pushed_audio(locator_factory):
    """noise_margin_db: steady noise over -50 dBFS is "quiet" once 2 s of it have been heard; a
    tone 20 dB over it is a source. Times are the caller's (`t`), one frame per 0.1 s of audio."""
    loc = locator_factory(audio_hop=0.0, noise_margin_db=10.0, min_confidence=0.0)
    frame = np.full((120, 160, 3), 90, np.uint8)
    noise = np.random.default_rng(0).normal(0, 0.02, 16000 * 4).astype(np.float32)     # about -34 dBFS
    states = []
    for i in range(40):
        loc.push_audio(noise[i * 1600:(i + 1) * 1600], 16000)
        states.append(loc.locate(frame, t=i / 10).reason)
    assert set(states[:20]) == {""} and set(states[25:]) == {"quiet"}
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)  # about -17 dBFS
    loc.push_audio(tone + noise[:8000], 16000)
    assert loc.locate(frame, t=4.5).active


def test_audio_hop_counts_pushed_audio(locator_factory):
    loc = locator_factory(audio_hop=0.25)
    frame = np.zeros((64, 64, 3), np.uint8)
    block = np.random.default_rng(0).normal(0, 0.1, 1600).astype(np.float32)    # 0.1 s at 16 kHz
    refreshes = []
    for _ in range(10):
        loc.push_audio(block, 16000)
        loc.locate(frame)
        refreshes.append(loc.audio_refreshes)
    # the first call runs the audio branch; then refreshes on a 0.25 s grid of pushed audio
    # (due at 0.35, 0.6, 0.85 s: served by the blocks ending at 0.4, 0.6, 0.9 s), 4 in 1 s
    assert refreshes == [1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    before = loc.audio_refreshes
    loc.locate(frame)
    loc.locate(frame)                                        # no new audio: the cached state serves
    assert loc.audio_refreshes == before


def test_int16_stereo_and_rgb_inputs(locator_factory):
    rng = np.random.default_rng(1)
    wave = (0.2 * rng.standard_normal(32000)).clip(-1, 1).astype(np.float32)
    stereo16 = (np.stack([wave, wave], axis=1) * 32767).astype(np.int16)
    bgr = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    a, b, c = locator_factory(), locator_factory(), locator_factory(color="rgb")
    a.push_audio(wave, 16000)
    b.push_audio(stereo16, 16000)
    c.push_audio(wave, 16000)
    wa, wb, wc = a.locate(bgr, t=0.0), b.locate(bgr, t=0.0), c.locate(np.ascontiguousarray(bgr[..., ::-1]), t=0.0)
    assert wb.level_db == pytest.approx(wa.level_db, abs=0.01)
    assert np.abs(wa.heatmap - wb.heatmap).max() < 1e-3
    assert np.array_equal(wa.heatmap, wc.heatmap)


def test_center_crop_maps_back_onto_the_frame(locator_factory):
    loc = locator_factory(crop="center")
    loc.push_audio(np.random.default_rng(2).normal(0, 0.2, 32000).astype(np.float32), 16000)
    where = loc.locate(np.zeros((200, 400, 3), np.uint8))
    assert where.view == (0.25, 0.0, 0.75, 1.0)
    heat = where.heatmap_px()
    assert heat.shape == (200, 400) and not heat[:, :100].any() and not heat[:, 300:].any()
    drawn = loc.draw(np.zeros((200, 400, 3), np.uint8), where)
    assert drawn.shape == (200, 400, 3)


def test_bad_input_is_one_clear_error(locator_factory):
    loc = locator_factory()
    with pytest.raises(InputError, match="uint8 \\(H, W, 3\\)"):
        loc.locate(np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        loc.locate(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        loc.push_audio(np.zeros((2, 2, 2), np.float32), 16000)
    loc.push_audio(np.zeros(100, np.float32), 48000)
    with pytest.raises(InputError, match="sample_rate changed from 48000 to 16000"):
        loc.push_audio(np.zeros(100, np.float32), 16000)
    with pytest.raises(InputError, match="crop"):
        SoundLocator(backend="onnxruntime", crop="zoom")


def test_audio_pushed_from_a_callback_thread(locator_factory):
    """A capture callback pushes 10 ms blocks on its own thread while the main loop locates."""
    import threading
    loc = locator_factory(audio_hop=0.05)
    stop, errors = threading.Event(), []
    block = (0.2 * np.sin(2 * np.pi * 300 * np.arange(480) / 48000)).astype(np.float32)

    def callback_thread():
        try:
            while not stop.is_set():
                loc.push_audio(block, 48000)
                stop.wait(0.002)
        except Exception as exc:        # noqa: BLE001 - surfaced below
            errors.append(exc)
    worker = threading.Thread(target=callback_thread)
    worker.start()
    try:
        frame = np.full((120, 160, 3), 60, np.uint8)
        results = [loc.locate(frame) for _ in range(30)]
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert loc.audio_refreshes >= 5
    assert results[-1].level_db == pytest.approx(20 * np.log10(0.2 / np.sqrt(2)), abs=0.5)


def test_bearing_of_a_point_for_a_pinhole_camera():
    from jsa_rt.live.preprocess import bearing_deg
    assert bearing_deg(0.5, 0.5, 70, 640, 480) == (0.0, 0.0)                 # the optical axis
    az, el = bearing_deg(1.0, 0.5, 70, 640, 480)
    assert az == pytest.approx(35.0) and el == pytest.approx(0.0)            # the right edge: half the FOV
    vfov_half = np.degrees(np.arctan(np.tan(np.radians(35)) * 480 / 640))
    assert bearing_deg(0.5, 0.0, 70, 640, 480) == pytest.approx((0.0, vfov_half))   # top edge: up
    az, el = bearing_deg(0.0, 1.0, 90, 100, 100)                             # bottom-left corner
    assert az == pytest.approx(-45.0) and el == pytest.approx(-np.degrees(np.arctan(1 / np.sqrt(2))))
    with pytest.raises(ValueError, match="field of view"):
        bearing_deg(0.5, 0.5, 180, 10, 10)


def test_where_gives_the_bearing_of_its_peak(locator_factory):
    from jsa_rt.live.preprocess import bearing_deg
    loc = locator_factory(min_confidence=0.0)
    loc.push_audio(np.random.default_rng(4).normal(0, 0.2, 32000).astype(np.float32), 16000)
    where = loc.locate(np.random.default_rng(5).integers(0, 255, (180, 320, 3), dtype=np.uint8))
    assert where.active
    assert where.bearing_deg(90) == bearing_deg(where.peak[0], where.peak[1], 90, 320, 180)
    az, _ = where.bearing_deg(90)
    assert az == pytest.approx(np.degrees(np.arctan(2 * where.peak[0] - 1)))


@pytest.mark.parametrize("model, precision", [("edge-jsa", "fp32"), (DEFAULT_MODEL, "int8")])
def test_torch_and_onnxruntime_backends_agree(locator_factory, model, precision):
    """A shipped checkpoint on torch and its shipped ONNX graph give the same answer: to float
    precision (edge-jsa), or as close as an int8 image encoder allows (the default's CPU graphs)."""
    rng = np.random.default_rng(6)
    wave = (0.2 * rng.standard_normal(48000)).astype(np.float32)
    frame = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    answers = []
    ort_loc = locator_factory(model=model)
    assert ort_loc.backend.precision == precision
    for loc in (ort_loc, SoundLocator(backend="torch", model=model, device="cpu")):
        with loc:
            loc.push_audio(wave, 24000)
            answers.append(loc.locate(frame, t=0.0))
    ort, torch_ = answers
    if precision == "int8":
        # measured on this noise frame: map correlation 0.985, peaks 1 px apart, confidences 0.001 and 0.012
        assert ort.confidence == pytest.approx(torch_.confidence, abs=0.03)
        assert np.corrcoef(ort.heatmap.ravel(), torch_.heatmap.ravel())[0, 1] > 0.95
        assert np.hypot(*np.subtract(ort.peak_px, torch_.peak_px)) <= 8          # half a 16-px token of 384, at 200 px
        return
    assert ort.confidence == pytest.approx(torch_.confidence, abs=1e-4)
    assert np.abs(ort.heatmap - torch_.heatmap).max() < 1e-3 and ort.peak_px == torch_.peak_px


def test_results_pcm_colours_and_shapes(locator_factory):
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    # each result keeps its own map, also with smoothing (the gate updates its buffer in place)
    smooth = locator_factory(persistence_ms=250.0, min_confidence=0.0)
    smooth.push_audio((0.2 * rng.standard_normal(32000)).astype(np.float32), 16000)
    first = smooth.locate(frame, t=0.0)
    kept = first.heatmap.copy()
    smooth.push_audio((0.2 * rng.standard_normal(32000)).astype(np.float32), 16000)
    smooth.locate(np.zeros_like(frame), t=0.1)
    assert np.array_equal(first.heatmap, kept)
    # offset-binary PCM: mid-scale is silence
    for dtype, mid in ((np.uint8, 128), (np.uint16, 32768)):
        loc = locator_factory()
        loc.push_audio(np.full(16000, mid, dtype), 16000)
        assert loc.locate(frame).reason == "quiet"
    # channels-first blocks are refused instead of being averaged over time
    with pytest.raises(InputError, match="channels-first"):
        locator_factory().push_audio(np.zeros((2, 4800), np.float32), 48000)
    # the default gate is the model's own calibrated threshold
    loc = locator_factory()
    assert loc.render_options.min_confidence is None and loc.min_confidence == loc.config.no_source_confidence
    # draw() works in the locator's colour order
    bgr_loc, rgb_loc = locator_factory(min_confidence=0.0), locator_factory(min_confidence=0.0, color="rgb")
    wave = (0.2 * rng.standard_normal(32000)).astype(np.float32)
    bgr_loc.push_audio(wave, 16000)
    rgb_loc.push_audio(wave, 16000)
    rgb = np.ascontiguousarray(frame[..., ::-1])
    drawn_bgr = bgr_loc.draw(frame.copy(), bgr_loc.locate(frame, t=0.0))
    drawn_rgb = rgb_loc.draw(rgb.copy(), rgb_loc.locate(rgb, t=0.0))
    assert np.array_equal(drawn_rgb, drawn_bgr[..., ::-1])


def test_nan_and_inf_pushes_are_zeroed_and_counted(locator_factory):
    loc = locator_factory(audio_hop=0.0)
    frame = np.full((120, 160, 3), 90, np.uint8)
    cv2.circle(frame, (60, 60), 25, (0, 0, 255), -1)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    loc.push_audio(tone, 16000)
    clean = loc.locate(frame)
    burst = tone[:1600].astype(np.float64)
    burst[100:400] = np.nan
    burst[500] = np.inf
    loc.push_audio(burst, 16000)                              # float64 stereo-free block with NaN/inf
    loc.push_audio(np.stack([burst, burst], axis=1), 16000)  # and a stereo one
    where = loc.locate(frame)
    assert loc.nonfinite_samples == 2 * 301
    assert np.isfinite(where.confidence) and np.isfinite(where.level_db)
    assert np.isfinite(where.heatmap).all() and where.reason in ("", "low confidence")
    assert where.level_db == pytest.approx(clean.level_db, abs=1.0)
