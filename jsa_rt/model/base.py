"""What JSA and the EZ-VSL baseline share: the spectrogram front end, the two encoders, the
training-time spectrogram masking, and the map upsampling (with OGL's object-prior fusion).

Subclasses add their own heads, losses and maps, and implement the one model interface:
`loss`, `audio_branch`, `visual_branch`, `localize`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from .encoders import build_audio_encoder, build_image_encoder
from .frontend import LogSpectrogram
from .maps import bicubic_matrix, fuse


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


def count_tokens(encoder: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Tokens an encoder makes from an input of this shape. Runs it in eval mode without
    gradients: a training-mode pass would update the BatchNorm running statistics."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        tokens = encoder(torch.zeros(input_shape)).shape[1]
    encoder.train(was_training)
    return tokens


class FramePreprocess(nn.Module):
    """uint8 (B,S,S,3) RGB HWC -> float (B,3,S,S) ImageNet-normalised, as one multiply-add.
    The one place camera frames become model input (CLI, export graphs, profiling)."""

    def __init__(self):
        super().__init__()
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame.permute(0, 3, 1, 2).to(torch.float32)
        return x * self.scale + self.shift


class AudioVisualModel(nn.Module):
    kind = ""

    def __init__(self, cfg: ModelConfig, pretrained: bool | str = True):
        super().__init__()
        self.cfg = cfg
        self.frame_preprocess = FramePreprocess()
        self.frontend = LogSpectrogram(cfg)
        self.image_encoder = build_image_encoder(cfg, pretrained)
        self.audio_encoder = build_audio_encoder(cfg)
        # a buffer, so it follows .to(device) and no host copy happens in a CUDA graph or a trace
        self.register_buffer("upsample_matrix", bicubic_matrix(cfg.grid, cfg.image_size), persistent=False)

    def audio_tokens(self) -> int:
        return count_tokens(self.audio_encoder, (1, 1, self.cfg.spec_bins, self.cfg.spec_frames))

    def preprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B,S,S,3) RGB frames -> the normalised images `encode_image` takes."""
        return self.frame_preprocess(frames)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) ImageNet-normalised -> (B, g*g, d)."""
        return self.image_encoder(images)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) waveform at cfg.sample_rate -> (B, T', d); spectrogram masking in training."""
        spec = self.frontend(wave)
        if self.training:
            spec = spec_augment(spec)
        return self.audio_encoder(spec)

    def fuse_object_prior(self, out: dict, images, alpha: float | None, object_prior) -> dict:
        """OGL: replace the heatmap by norm(alpha * AUD + (1 - alpha) * OBJ)."""
        if object_prior is None:
            return out
        alpha = self.cfg.iqr_alpha if alpha is None else alpha
        out["obj"] = object_prior(images)
        out["heatmap"] = fuse(out["aud"], out["obj"], alpha, self.cfg.image_size, self.upsample_matrix)
        return out
