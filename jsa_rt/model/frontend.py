"""Waveform -> log power spectrogram, as a convolution with a fixed windowed DFT basis.

torch.stft does not map to ONNX/TensorRT; a strided Conv1d with cos/sin rows of the Hann
window does, and gives the same numbers: |STFT|^2 with centre (reflect) padding,
then log(S + offset) / scale (method.md section 1).
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from ..config import ModelConfig


def dft_basis(n_fft: int) -> torch.Tensor:
    """(2F, 1, n_fft) float64: Hann-windowed cos rows, then -sin rows (F = n_fft/2 + 1)."""
    n = torch.arange(n_fft, dtype=torch.float64)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)            # periodic Hann
    phase = 2 * math.pi * freqs[:, None] * n[None, :] / n_fft
    return (torch.cat([torch.cos(phase), -torch.sin(phase)]) * window).unsqueeze(1)


class LogSpectrogram(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        self.log_offset, self.log_scale = cfg.log_offset, cfg.log_scale
        # a buffer, not a parameter: fixed, and exported graphs carry it as a constant
        self.register_buffer("basis", dft_basis(self.n_fft).float(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) float waveform -> (B, 1, n_fft/2+1, L/hop+1) log power spectrogram."""
        if torch.is_autocast_enabled(wave.device.type):
            # mixed-precision training would run the DFT in bf16 and drown quiet bins in rounding
            # (features off by up to 0.7): train on the same fp32 features that eval computes
            with torch.autocast(wave.device.type, enabled=False):
                return self.forward(wave.float())
        x = F.pad(wave.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        basis = self.basis
        if wave.dtype == torch.float64:
            # exact reference path (tests, analysis): the fp32 buffer's rounding (~3e-7
            # relative) would otherwise show up as ~3e-5 in the log of the quietest bins
            basis = dft_basis(self.n_fft).to(wave.device)
        spec = F.conv1d(x, basis.to(wave.dtype), stride=self.hop)       # (B, 2F, T)
        real, imag = spec.chunk(2, dim=1)
        power = real * real + imag * imag
        return (torch.log(power + self.log_offset) / self.log_scale).unsqueeze(1)

    @staticmethod
    def augment(spec: torch.Tensor) -> torch.Tensor:
        """Training-time masking (method.md): one frequency and one time band per sample."""
        return spec_augment(spec)


def spec_augment(spec: torch.Tensor, max_width: int = 10) -> torch.Tensor:
    """One frequency mask and one time mask per sample, width <= max_width, zero fill.
    (Offsets drawn on the right axes; the official code swaps them.)"""
    batch, _, n_freq, n_time = spec.shape
    dev = spec.device

    def mask(n):
        width = torch.randint(0, max_width + 1, (batch, 1), device=dev)
        start = (torch.rand(batch, 1, device=dev) * (n - width + 1)).long()
        pos = torch.arange(n, device=dev).unsqueeze(0)
        return (pos >= start) & (pos < start + width)                      # (B, n)
    keep = ~(mask(n_freq)[:, None, :, None] | mask(n_time)[:, None, None, :])
    return spec * keep


def reference_log_spectrogram(wave: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The same computation through torch.stft (tests compare the two)."""
    window = torch.hann_window(cfg.n_fft, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    return (torch.log(spec.abs() ** 2 + cfg.log_offset) / cfg.log_scale).unsqueeze(1)
