"""The shipped models: the ONNX graphs compute what the checkpoint computes, and it localizes."""
import os
from pathlib import Path

import numpy as np
import pytest

from jsa_rt.audio_io import fit_length, load_audio, load_image, resize_image
from jsa_rt.runtime import load_backend

DATA = Path(os.environ.get("JSA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def stamp_pair(name="rooster"):
    for png in sorted((DATA / "tuxpaint-stamps" / "stamps").rglob(f"{name}*.png")):
        if png.with_suffix(".ogg").is_file():
            return png, png.with_suffix(".ogg")
    pytest.skip(f"no Tux Paint stamp {name!r} with a sound under {DATA} (set JSA_DATA)")


def test_shipped_onnx_matches_shipped_checkpoint():
    png, ogg = stamp_pair()
    ort_b, torch_b = load_backend("onnxruntime", "edge-jsa"), load_backend("torch", "edge-jsa", device="cpu")
    cfg = ort_b.config
    frame = resize_image(load_image(png), cfg.image_size)
    wave = fit_length(load_audio(ogg, cfg.sample_rate), cfg.num_samples)
    a, b = ort_b.run(frame, wave), torch_b.run(frame, wave)
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
