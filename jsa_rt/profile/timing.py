"""Inputs and host-side timing shared by the model profilers (model.py, graphs.py)."""
from __future__ import annotations

import time

import numpy as np


def synthetic_inputs(cfg, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random RGB frame and a noise waveform of the model's input sizes."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(cfg.num_samples)).astype(np.float32)
    return frame, audio


def time_host(fn, warmup: int, iterations: int) -> list[float]:
    """Latency of a call that returns host (numpy) results, so it has finished on return."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples
