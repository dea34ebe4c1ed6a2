"""What JSA and the EZ-VSL baseline share: the audio front end, the two encoders (optionally
with frozen pretrained backbones), and the map upsampling (with OGL's object-prior fusion).

Subclasses add their own heads, losses and maps, and implement the one model interface:
`loss`, `audio_branch`, `visual_branch`, `localize`.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from .encoders import build_audio_encoder, build_audio_frontend, build_image_encoder
from .maps import fuse, upsample_matrix


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
        self.frontend = build_audio_frontend(cfg)
        self.image_encoder = build_image_encoder(cfg, pretrained)
        self.audio_encoder = build_audio_encoder(cfg, pretrained)
        # a plain list: the backbones stay registered under their encoders only
        self.frozen = [self.image_encoder.backbone, self.audio_encoder.backbone] if cfg.freeze_encoders else []
        for backbone in self.frozen:
            backbone.requires_grad_(False)
        if cfg.image_tuned_blocks:        # ... except the image backbone's last blocks (BatchNorm statistics stay)
            for module in self.image_encoder.tune_last(cfg.image_tuned_blocks):
                module.requires_grad_(True)
        self.inputs_are_backbone_features = False        # see reading_backbone_features
        # a buffer, so it follows .to(device) and no host copy happens in a CUDA graph or a trace
        self.register_buffer("upsample_matrix", upsample_matrix(cfg.grid, cfg.image_size, cfg.map_smoothing),
                             persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        for backbone in self.frozen:       # frozen backbones keep their BatchNorm statistics
            backbone.eval()
        return self

    def audio_tokens(self) -> int:
        return count_tokens(nn.Sequential(self.frontend, self.audio_encoder), (1, self.cfg.num_samples))

    def preprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B,S,S,3) RGB frames -> the normalised images `encode_image` takes."""
        return self.frame_preprocess(frames)

    @contextlib.contextmanager
    def reading_backbone_features(self):
        """Inside, `encode_image` / `encode_audio` take what the frozen backbones output (computed
        once by the trainer's feature cache: `backbone_features`) instead of images and waveforms:
        the same heads and losses, without a backbone pass per step."""
        self.inputs_are_backbone_features = True
        try:
            yield self
        finally:
            self.inputs_are_backbone_features = False

    def backbone_features(self, images: torch.Tensor, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a feature cache stores for a batch: the fixed parts of both encoders' outputs."""
        return (self.image_encoder.fixed_features(images),
                self.audio_encoder.fixed_features(self.frontend(wave)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) ImageNet-normalised -> (B, g*g, d)."""
        if self.inputs_are_backbone_features:
            return self.image_encoder.tokens_from_fixed(images)
        return self.image_encoder(images)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) waveform at cfg.sample_rate -> (B, T', d); spectrogram masking in training."""
        return self.audio_encoder.tokens(self.audio_features(wave))

    def audio_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) waveform -> the audio backbone's output, before the projection to d."""
        if self.inputs_are_backbone_features:
            return self.audio_encoder.features_from_fixed(wave)
        spec = self.frontend(wave)
        if self.training:
            spec = self.frontend.augment(spec)
        return self.audio_encoder.backbone(spec)

    def fuse_object_prior(self, out: dict, images, alpha: float | None, object_prior) -> dict:
        """OGL: replace the heatmap by norm(alpha * AUD + (1 - alpha) * OBJ)."""
        if object_prior is None:
            return out
        alpha = self.cfg.iqr_alpha if alpha is None else alpha
        out["obj"] = object_prior(images)
        out["heatmap"] = fuse(out["aud"], out["obj"], alpha, self.cfg.image_size, self.upsample_matrix)
        return out
