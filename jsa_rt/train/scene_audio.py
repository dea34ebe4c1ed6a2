"""Compose one scene soundtrack: the target's sound, maybe an off-screen sound, room and noise.

Most Tux Paint classes have a single recording, so variety comes from augmentation:
a random crop or a loop with random gaps, varispeed (pitch and tempo change together, like tape,
factor 0.85-1.18), gain, a random microphone EQ, a synthetic room (exponentially decaying noise
impulse response, RT60 0.15-0.8 s) and coloured background noise at a chosen SNR (5-30 dB).
Levels: the on-screen source at -20 dBFS RMS +- 6 dB, an off-screen sound 6-18 dB below it.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from ..audio_io import load_audio


@functools.lru_cache(maxsize=512)
def load_clip(path: str, rate: int) -> np.ndarray:
    """A recording at `rate`, trimmed of leading/trailing near-silence, peak-normalised."""
    wave = load_audio(path, rate)
    loud = np.nonzero(np.abs(wave) > 0.02 * (np.abs(wave).max() + 1e-9))[0]
    if loud.size:
        wave = wave[loud[0]:loud[-1] + 1]
    return (wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def varispeed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (higher pitch, shorter) by polyphase resampling."""
    from scipy.signal import resample_poly
    ratio = Fraction(1 / factor).limit_denominator(32)
    if ratio == 1:
        return wave
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def arrange(rng: np.random.Generator, clips: list[np.ndarray], n: int, rate: int,
            max_gap_s: float) -> np.ndarray:
    """Fill n samples: a random crop of a long clip, else clips one after another with random
    gaps (each repetition +-3 dB), starting at a random point so the first one may be cut."""
    if len(clips) == 1 and clips[0].size >= n:
        start = int(rng.integers(0, clips[0].size - n + 1))
        return clips[0][start:start + n].copy()
    out = np.zeros(n, np.float32)
    pos = -int(rng.integers(0, clips[0].size)) if rng.random() < 0.5 else int(rng.integers(0, rate // 2))
    k = 0
    while pos < n:
        clip = clips[k % len(clips)] * np.float32(10 ** (rng.uniform(-3, 3) / 20))
        a, b = max(pos, 0), min(pos + clip.size, n)
        if b > a:
            out[a:b] += clip[a - pos:b - pos]
        pos += clip.size + int(rng.uniform(0.05, max_gap_s) * rate)
        k += 1
    return out


def _mic_eq(rng: np.random.Generator, wave: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import butter, sosfilt
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            sos = butter(2, rng.uniform(60, 300), "highpass", fs=rate, output="sos")
        else:
            sos = butter(2, rng.uniform(2500, 0.45 * rate), "lowpass", fs=rate, output="sos")
        wave = sosfilt(sos, wave).astype(np.float32)
    return wave


def room(rng: np.random.Generator, wave: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """Convolve with a synthetic room response; returns (wet signal, RT60 in s)."""
    from scipy.signal import fftconvolve
    rt60 = rng.uniform(0.15, 0.8)
    t = np.arange(int(rt60 * rate)) / rate
    ir = rng.normal(0, 1, t.size) * np.exp(-6.9 * t / rt60)
    ir[0] = 0
    ir *= rng.uniform(0.1, 0.5) / (np.sqrt(np.sum(ir ** 2)) + 1e-9)   # wet-to-dry energy ratio
    ir[0] = 1.0
    return fftconvolve(wave, ir)[:wave.size].astype(np.float32), float(rt60)


def coloured_noise(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """White, pink (1/f) or brown (1/f^2) noise with unit RMS."""
    kind = str(rng.choice(["white", "pink", "brown"]))
    white = rng.normal(0, 1, n)
    if kind != "white":
        spec = np.fft.rfft(white)
        f = np.maximum(np.arange(spec.size), 1.0)
        spec /= f ** (0.5 if kind == "pink" else 1.0)
        white = np.fft.irfft(spec, n)
    return (white / rms(white)).astype(np.float32), kind


def source_track(rng: np.random.Generator, clips: list[np.ndarray], n: int, rate: int,
                 spoken: bool) -> tuple[np.ndarray, float]:
    """One source, augmented and laid out over the clip at unit RMS; returns (track, speed)."""
    speed = rng.uniform(0.9, 1.1) if spoken else rng.uniform(0.85, 1.18)
    clips = [varispeed(c, speed) for c in clips]
    track = arrange(rng, clips, n, rate, max_gap_s=1.0 if spoken else 0.6)
    track = _mic_eq(rng, track, rate)
    return track / np.float32(rms(track)), float(speed)


def compose_audio(rng: np.random.Generator, n: int, rate: int,
                  target: list[np.ndarray] | None, target_spoken: bool,
                  offscreen: list[np.ndarray] | None) -> tuple[np.ndarray, dict]:
    """Mix a soundtrack. target=None and offscreen=None gives a silent (noise-floor) track.
    Returns the float32 wave and a record of what was done (for the annotation)."""
    info: dict = {}
    mix = np.zeros(n, np.float32)
    level = 10 ** ((-20 + rng.uniform(-6, 6)) / 20)
    if target is not None:
        track, info["speed"] = source_track(rng, target, n, rate, target_spoken)
        mix += level * track
    if offscreen is not None:
        rel_db = rng.uniform(-18, -6) if target is not None else 0.0
        track, _ = source_track(rng, offscreen, n, rate, spoken=False)
        mix += level * np.float32(10 ** (rel_db / 20)) * track
        info["offscreen_db"] = round(float(rel_db), 2)
    if (target is not None or offscreen is not None) and rng.random() < 0.5:
        mix, info["rt60"] = room(rng, mix, rate)
    noise, noise_kind = coloured_noise(rng, n)
    if target is None and offscreen is None:
        floor_db = rng.uniform(-60, -40)               # a silent room: only the noise floor
        mix += np.float32(10 ** (floor_db / 20)) * noise
        info["noise_dbfs"], info["noise"] = round(float(floor_db), 2), noise_kind
    elif rng.random() < 0.6:
        snr = rng.uniform(5, 30)
        mix += np.float32(rms(mix) / 10 ** (snr / 20)) * noise
        info["snr_db"], info["noise"] = round(float(snr), 2), noise_kind
    peak = float(np.abs(mix).max())
    if peak > 0.99:
        mix *= np.float32(0.99 / peak)
    info = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in info.items()}
    return mix.astype(np.float32), info
