"""Shared by the export and backend tests: a deterministic model with contrasty maps, and
real-data inputs when ../shared/data (or JSA_DATA) is present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(os.environ.get("JSA_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def contrast_model(preset: str, seed: int = 0, factor: float = 8.0, pretrained: bool = True):
    """Random weights of `preset`, with the slot modules' query/key projections scaled by
    `factor`. Plain random weights give near-uniform 7x7 maps (all ~1/49); min-max
    normalisation of such a map is ill-conditioned (a 1e-9 change moves the heatmap peak), so
    parity on it would test noise. Scaled projections give maps with contrast, like a trained
    model's, and make the softmax saturate during the slot iterations (where eps matters).
    `pretrained` loads the local ImageNet image encoder where the preset has one (edge): a
    random EfficientNet gives near-identical tokens at every position, hence uniform maps."""
    import torch
    from jsa_rt.model import random_model
    model = random_model(preset, seed=seed, pretrained=pretrained)
    with torch.no_grad():
        for branch in (model.slots.image, model.slots.audio):
            for layer in (branch.to_q, branch.to_k):
                layer.weight.mul_(factor)
                layer.bias.mul_(factor)
    return model


def real_inputs(cfg):
    """(frame uint8 (S,S,3), wave float32 (L,)) from a real photo and a real recording."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set JSA_DATA to ../shared/data)")
    from jsa_rt.audio_io import fit_length, load_audio, load_image, resize_image
    frame = resize_image(load_image(DATA / "backgrounds" / "astronaut.png"), cfg.image_size)
    wav = sorted((DATA / "fsdd" / "recordings").glob("3_jackson_*.wav"))[0]
    wave = fit_length(load_audio(wav, cfg.sample_rate), cfg.num_samples)
    return np.ascontiguousarray(frame), wave.astype(np.float32)
