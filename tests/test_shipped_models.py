"""The shipped models: the ONNX graphs compute what the checkpoint computes, and they localize;
the default one listens (the peak follows the sound between two objects in view)."""
import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from jsa_rt.audio_io import fit_length, load_audio, load_image, resize_image
from jsa_rt.runtime import load_backend
from jsa_rt.shipped import DEFAULT_MODEL

DATA = Path(os.environ.get("JSA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def stamp_pair(name="rooster"):
    for png in sorted((DATA / "tuxpaint-stamps" / "stamps").rglob(f"{name}*.png")):
        if png.with_suffix(".ogg").is_file():
            return png, png.with_suffix(".ogg")
    pytest.skip(f"no Tux Paint stamp {name!r} with a sound under {DATA} (set JSA_DATA)")


@pytest.mark.parametrize("model", ["edge-jsa", "edge-jsa-listen"])
def test_shipped_onnx_matches_shipped_checkpoint(model):
    png, ogg = stamp_pair()
    ort_b, torch_b = load_backend("onnxruntime", model), load_backend("torch", model, device="cpu")
    cfg = ort_b.config
    frame = resize_image(load_image(png), cfg.image_size)
    wave = fit_length(load_audio(ogg, cfg.sample_rate), cfg.num_samples)
    a, b = ort_b.run(frame, wave), torch_b.run(frame, wave)
    if ort_b.precision == "int8":       # the default's CPU graphs: its image encoder in int8 (export/onnx_int8.py)
        # measured on this frame: map correlations 0.991-0.998, slot cosines 0.9993 and 1.0, confidence 2e-4 apart
        for key in ("heatmap", "aud", "img"):
            assert np.corrcoef(getattr(a, key).ravel(), getattr(b, key).ravel())[0, 1] > 0.98, key
        for key in ("image_slot", "audio_slot"):
            assert float(getattr(a, key) @ getattr(b, key)) > 0.998, key
        assert a.heatmap[b.peak] >= 0.9 * a.heatmap.max()       # the checkpoint's peak is a peak of the graph's map
        assert abs(a.confidence - b.confidence) < 0.01
        return
    for key in ("heatmap", "aud", "img", "image_slot", "audio_slot"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), atol=1e-4, err_msg=key)
    assert abs(a.confidence - b.confidence) < 1e-4


def test_shipped_model_points_at_a_lone_sounding_object():
    """A single stamp on a plain background with its own sound: the peak lands on it."""
    png, ogg = stamp_pair()
    backend = load_backend("onnxruntime", "edge-jsa")
    cfg = backend.config
    rgba = load_image(png)
    canvas = np.full((cfg.image_size, cfg.image_size, 3), 90, np.uint8)
    obj = resize_image(rgba, cfg.image_size // 2)
    y0, x0 = cfg.image_size // 2, cfg.image_size // 2          # bottom-right quadrant
    canvas[y0:, x0:] = obj
    wave = fit_length(load_audio(ogg, cfg.sample_rate), cfg.num_samples)
    maps = backend.run(canvas, wave)
    y, x = np.unravel_index(np.argmax(maps.heatmap), maps.heatmap.shape)
    assert y >= y0 - 16 and x >= x0 - 16, (x, y)
    assert maps.confidence > 0.3


# Tux Paint classes heard in training (seed 0's split), one stamp and its own recording each
SOUNDING = ("dog", "cow", "rooster", "duck", "frog", "elephant", "cello", "drumkit", "goat", "hen")


def side_by_side(left, right, size):
    """Two RGBA stamps, each in its own half of a grey frame."""
    canvas = np.full((size, size, 3), 128, np.uint8)
    side = size // 2 - 8
    for i, rgba in enumerate((left, right)):
        obj = resize_image(rgba, side).astype(np.float64)
        alpha = obj[..., 3:] / 255.0 if obj.shape[-1] == 4 else np.ones(obj.shape[:2] + (1,))
        y0, x0 = (size - side) // 2, 4 + i * (size // 2)
        under = canvas[y0:y0 + side, x0:x0 + side]
        canvas[y0:y0 + side, x0:x0 + side] = (alpha * obj[..., :3] + (1 - alpha) * under).astype(np.uint8)
    return canvas


def listening(model, backend_kind="onnxruntime"):
    """Every pair of SOUNDING side by side, each played in turn with its own recording: the share
    of plays whose peak is in the sounding object's half, and of pairs where both plays are."""
    backend = load_backend(backend_kind, model, device="cpu")
    cfg = backend.config
    pairs = {name: stamp_pair(name) for name in SOUNDING}
    hits, follows = [], []
    for a, b in itertools.combinations(SOUNDING, 2):
        frame = side_by_side(load_image(pairs[a][0]), load_image(pairs[b][0]), cfg.image_size)
        right = []
        for side, name in enumerate((a, b)):
            wave = fit_length(load_audio(pairs[name][1], cfg.sample_rate), cfg.num_samples)
            heatmap = backend.run(frame, wave).heatmap
            column = np.unravel_index(np.argmax(heatmap), heatmap.shape)[1]
            right.append((column >= heatmap.shape[1] // 2) == (side == 1))
        hits += right
        follows.append(all(right))
    return np.mean(hits), np.mean(follows)


def test_the_default_model_listens_between_two_objects_in_view():
    """The listening issue's first check, as a user would run it. Measured (45 pairs): the default
    edge-jsa-listen (session 15's weights at output stride 16 with the map smoothed, its int8 CPU
    graphs) points 100 % / follows 100 % (unsmoothed 99 / 98; at stride 32: 97 / 93); the
    sound-blind edge-jsa 50 % / 0 % (it never moves)."""
    pointing, follows = listening(DEFAULT_MODEL)
    assert pointing >= 0.85 and follows >= 0.75, (pointing, follows)


def test_the_ezvsl_baseline_on_the_same_data_listens_too():
    """edge-ezvsl-listen (EZ-VSL on the default's data and budget; it ships without an ONNX graph):
    measured 92 % / 89 % (session 17), so the shipped file is the trained model, not a stand-in."""
    pointing, follows = listening("edge-ezvsl-listen", backend_kind="torch")
    assert pointing >= 0.8 and follows >= 0.7, (pointing, follows)


def test_the_sound_blind_model_is_caught_by_the_same_check():
    pointing, follows = listening("edge-jsa")
    assert follows <= 0.2, (pointing, follows)
