"""Audio front end: the DFT-basis `LogSpectrogram` against torch.stft, and audio file loading.

Precision note (measured on the shared data): in float64 the two agree to ~1e-10
everywhere. In float32 any 512-term DFT (ours or torch.stft's FFT) carries a rounding error of
about 1e-7 x the frame's amplitude, which the log turns into a large error only in bins holding
a tiny fraction of the frame's power. So float32 is held to 1e-5 where a bin holds at least
1e-5 of its frame's power, and elsewhere to that rounding bound, scaled by sqrt(E / P).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jsa_rt.audio_io import fit_length, load_audio, resample, to_mono
from jsa_rt.config import get_preset
from jsa_rt.errors import InputError
from jsa_rt.model.frontend import LogSpectrogram, reference_log_spectrogram

DATA = Path(os.environ.get("JSA_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
ATOL = 1e-5


def data_path(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real data not found at {path}: set JSA_DATA to the shared data folder")
    return path


def stereo_tuxpaint_ogg() -> Path:
    """A stereo 22.05 kHz Tux Paint recording (exercises down-mix and resampling)."""
    return data_path("tuxpaint-stamps/stamps/seasonal/halloween/ghost.ogg")


def exact_stft(wave: torch.Tensor, cfg) -> torch.Tensor:
    """float64 torch.stft -> (B, F, T) complex: the ground truth."""
    window = torch.hann_window(cfg.n_fft, dtype=torch.float64)
    return torch.stft(wave.double(), cfg.n_fft, cfg.hop_length, window=window, center=True,
                      pad_mode="reflect", return_complex=True)


def assert_matches_stft(wave: torch.Tensor, cfg) -> None:
    """float64 to 1e-5 everywhere; float32 to 1e-5 where fp32 rounding allows (module doc)."""
    frontend = LogSpectrogram(cfg)
    truth = reference_log_spectrogram(wave.double(), cfg)
    ours64 = frontend(wave.double())
    assert ours64.shape == truth.shape == (wave.shape[0], 1, cfg.spec_bins, cfg.spec_frames)
    assert (ours64 - truth).abs().max().item() < ATOL

    ours32 = frontend(wave.float())
    assert ours32.dtype == torch.float32
    err = (ours32.double() - truth).abs()[:, 0]
    power = exact_stft(wave, cfg).abs() ** 2 + cfg.log_offset            # (B, F, T)
    frame_power = power.sum(dim=1, keepdim=True)
    strong = power >= 1e-5 * frame_power
    assert strong.sum() >= 1000, "test signal too quiet to say anything"
    assert err[strong].max().item() < ATOL
    bound = ATOL * torch.sqrt(1e-5 * frame_power / power)                 # = ATOL at the threshold
    assert (err <= torch.maximum(bound, torch.full_like(bound, ATOL))).all()


# ---- against torch.stft ----------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "edge", "paper"])
def test_random_audio_matches_torch_stft(preset):
    cfg = get_preset(preset)
    wave = torch.randn(2, cfg.num_samples, generator=torch.Generator().manual_seed(0)) * 0.3
    assert_matches_stft(wave, cfg)


def test_fsdd_wav_matches_torch_stft():
    cfg = get_preset("paper")
    path = sorted(data_path("fsdd/recordings").glob("*.wav"))[0]
    assert sf.info(str(path)).samplerate == 8000          # so load_audio resamples 8k -> 16k
    wave = fit_length(load_audio(path, cfg.sample_rate), cfg.num_samples)
    assert_matches_stft(torch.from_numpy(wave)[None], cfg)


def test_tuxpaint_ogg_matches_torch_stft():
    path = stereo_tuxpaint_ogg()
    for preset in ("paper", "tiny"):
        cfg = get_preset(preset)
        wave = fit_length(load_audio(path, cfg.sample_rate), cfg.num_samples)
        assert_matches_stft(torch.from_numpy(wave)[None], cfg)


def test_float64_path_uses_an_exact_basis():
    """Converting the module to float64 must not keep the float32-rounded basis."""
    cfg = get_preset("paper")
    frontend = LogSpectrogram(cfg).double()
    t = torch.arange(cfg.num_samples, dtype=torch.float64) / cfg.sample_rate
    wave = (0.5 * torch.sin(2 * math.pi * 440.0 * t) + 1e-4 * torch.sin(2 * math.pi * 5000.0 * t))[None]
    err = (frontend(wave) - reference_log_spectrogram(wave, cfg)).abs().max().item()
    assert err < 1e-8


# ---- known values ----------------------------------------------------------------------------
def test_basis_rows_are_the_periodic_hann_window():
    cfg = get_preset("paper")
    basis = LogSpectrogram(cfg).basis[:, 0]                               # (2F, n_fft)
    assert basis.shape == (2 * cfg.spec_bins, cfg.n_fft)
    window = torch.hann_window(cfg.n_fft, periodic=True)
    assert torch.allclose(basis[0], window, atol=1e-7)                     # cos row, f = 0
    assert basis[cfg.spec_bins].abs().max() == 0                          # -sin row, f = 0


def test_pure_tone_has_the_analytic_power():
    """A cosine of amplitude A on bin k: |X_k| = A/2 * sum(hann) = A*N/4, |X_k+-1| = A*N/8."""
    cfg = get_preset("paper")
    k, amplitude = 32, 0.5                                                # 32/512*16k = 1 kHz
    n = torch.arange(cfg.num_samples, dtype=torch.float64)
    wave = (amplitude * torch.cos(2 * math.pi * k * n / cfg.n_fft))[None]
    spec = LogSpectrogram(cfg)(wave.float())[0, 0, :, 5:-5]               # away from the edges
    expected = {k: (amplitude * cfg.n_fft / 4) ** 2, k - 1: (amplitude * cfg.n_fft / 8) ** 2,
                k + 1: (amplitude * cfg.n_fft / 8) ** 2}
    for bin_index, power in expected.items():
        value = math.log(power + cfg.log_offset) / cfg.log_scale
        assert torch.allclose(spec[bin_index], torch.full_like(spec[bin_index], value), atol=ATOL)
    others = torch.ones(cfg.spec_bins, dtype=torch.bool)
    others[[k - 1, k, k + 1]] = False
    assert spec[others].max() < math.log(1e-3) / cfg.log_scale            # no leakage beyond k+-1


def test_silence_is_the_log_offset():
    cfg = get_preset("tiny")
    spec = LogSpectrogram(cfg)(torch.zeros(1, cfg.num_samples))
    assert torch.allclose(spec, torch.full_like(spec, math.log(cfg.log_offset) / cfg.log_scale))


# ---- audio files -----------------------------------------------------------------------------
def test_load_audio_downmixes_and_resamples_real_stereo_ogg():
    path = stereo_tuxpaint_ogg()
    raw, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert raw.shape[1] == 2 and rate == 22050
    wave = load_audio(path, 16000)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(wave.size - raw.shape[0] * 16000 / rate) <= 1
    # resampling is linear: down-mix then resample == resample each channel then average
    per_channel = np.mean([resample(raw[:, c], rate, 16000) for c in range(2)], axis=0)
    assert np.allclose(wave, per_channel, atol=1e-6)
    assert np.abs(wave).max() > 0.01                                      # real signal, not silence


def test_resampling_keeps_the_frequency(tmp_path):
    rate, freq = 44100, 1000.0
    t = np.arange(rate) / rate
    path = tmp_path / "tone.wav"
    sf.write(str(path), np.stack([0.5 * np.sin(2 * np.pi * freq * t)] * 2, axis=1), rate,
             subtype="FLOAT")
    wave = load_audio(path, 16000)
    assert abs(wave.size - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(wave[2000:-2000]))
    peak_hz = np.argmax(spectrum) * 16000 / (wave.size - 4000)
    assert abs(peak_hz - freq) < 2.0
    assert 0.45 < np.abs(wave[2000:-2000]).max() < 0.55                   # amplitude kept


def test_load_audio_at_the_file_rate_is_not_resampled(tmp_path, monkeypatch):
    import scipy.signal
    original = np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32)
    path = tmp_path / "same_rate.wav"
    sf.write(str(path), original, 16000, subtype="FLOAT")
    monkeypatch.setattr(scipy.signal, "resample_poly",
                        lambda *a, **k: pytest.fail("resampled a file already at the target rate"))
    assert np.array_equal(load_audio(path, 16000), original)


def test_to_mono_and_fit_length():
    stereo = np.array([[1.0, 3.0], [2.0, 4.0]], np.float32)
    assert np.array_equal(to_mono(stereo), [2.0, 3.0])
    short = np.arange(3, dtype=np.float32)
    assert np.array_equal(fit_length(short, 7), [0, 1, 2, 0, 1, 2, 0])   # tiled
    long = np.arange(10, dtype=np.float32)
    assert np.array_equal(fit_length(long, 4), [3, 4, 5, 6])             # centre crop
    assert np.array_equal(fit_length(np.zeros(0, np.float32), 3), [0, 0, 0])


def test_unreadable_audio_is_a_one_line_input_error(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    for path in (text, empty, tmp_path / "missing.ogg"):
        with pytest.raises(InputError) as info:
            load_audio(path, 16000)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_resize_image_shrinks_like_the_training_transform():
    """`localize` frames: shrinking fine texture must not alias. Training resizes with PIL's
    antialiased bicubic; plain cv2 bicubic is ~70 grey levels off it on a 2-px checkerboard."""
    from PIL import Image

    from jsa_rt.audio_io import resize_image
    y, x = np.mgrid[0:720, 0:960]
    board = (((x // 2 + y // 2) % 2) * 255).astype(np.uint8)
    rgb = np.stack([board, 255 - board, board // 2], -1)
    training = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BICUBIC)).astype(float)
    assert np.abs(resize_image(rgb, 224).astype(float) - training).mean() < 5
    small = rgb[:100, :100]
    assert resize_image(small, 224).shape == (224, 224, 3)          # enlarging still works


def test_a_wav_cut_short_is_an_error_but_a_streamed_header_is_not(tmp_path):
    """A copy or recording that stopped early declares more audio than it holds: a one-line
    error, not a silently shorter clip. A streaming writer's placeholder size (0xFFFFFFFF) is fine."""
    import struct
    full = tmp_path / "full.wav"
    sf.write(full, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000,
             subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match="cut short: its header declares 32000 bytes of audio, only 15978"):
        load_audio(cut, 16000)
    streamed = bytearray(data)
    at = streamed.find(b"data")
    streamed[at + 4:at + 8] = streamed[4:8] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert load_audio(tmp_path / "streamed.wav", 16000).shape == (16000,)
    assert load_audio(full, 16000).shape == (16000,)
