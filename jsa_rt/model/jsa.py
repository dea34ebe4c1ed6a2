"""JSA: encoders -> joint slot attention -> losses (training) or localisation maps (inference).

The audio and visual halves are separate calls (`audio_branch`, `visual_branch`) so a live
loop can refresh the audio at a lower rate than the video.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import ModelConfig
from . import losses
from .decoders import SpatialBroadcastDecoder
from .encoders import build_audio_encoder, build_image_encoder
from .frontend import LogSpectrogram
from .maps import bicubic_matrix, fuse
from .slot_attention import JointSlotAttention


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


class JSA(nn.Module):
    kind = "jsa"

    def __init__(self, cfg: ModelConfig, pretrained: bool | str = True, kernels: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.frontend = LogSpectrogram(cfg)
        self.image_encoder = build_image_encoder(cfg, pretrained)
        self.audio_encoder = build_audio_encoder(cfg)
        self.slots = JointSlotAttention(cfg.dim, cfg.num_slots, cfg.iterations, cfg.mlp_hidden,
                                        cfg.attn_eps, cfg.token_mask_prob, kernels)
        audio_tokens = count_tokens(self.audio_encoder, (1, 1, cfg.spec_bins, cfg.spec_frames))
        self.image_decoder = SpatialBroadcastDecoder(cfg.dim, cfg.decoder_hidden, cfg.grid, cfg.grid)
        self.audio_decoder = SpatialBroadcastDecoder(cfg.dim, cfg.decoder_hidden, 1, audio_tokens)
        self.register_buffer("upsample_matrix", bicubic_matrix(cfg.grid, cfg.image_size), persistent=False)

    # ---- encoders -----------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) ImageNet-normalised -> (B, g*g, d)."""
        return self.image_encoder(images)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) waveform at cfg.sample_rate -> (B, T', d)."""
        spec = self.frontend(wave)
        if self.training:
            spec = spec_augment(spec)
        return self.audio_encoder(spec)

    # ---- training -----------------------------------------------------------------------------
    def forward(self, images, wave) -> dict:
        v, a = self.encode_image(images), self.encode_audio(wave)
        out = self.slots(v, a)
        out.update(image_tokens=v, audio_tokens=a)
        return out

    def loss(self, images, wave):
        cfg = self.cfg
        out = self(images, wave)
        img, aud = out["image"], out["audio"]
        # k = 20 at the official batch of 256; scaled down with the batch (a batch no bigger
        # than k would otherwise mask every negative and the loss would vanish)
        k = max(1, cfg.knn_k * images.shape[0] // cfg.knn_reference_batch)
        terms = {
            "cotr": losses.contrastive_loss(img.slots[:, 0], aud.slots[:, 0], cfg.tau, k),
            "recon": losses.reconstruction_loss(self.image_decoder(img.slots), out["image_tokens"])
                     + losses.reconstruction_loss(self.audio_decoder(aud.slots), out["audio_tokens"]),
            "div": losses.slot_divergence_loss(img.slots) + losses.slot_divergence_loss(aud.slots),
            "match": losses.attention_matching_loss(out["ca_av"], out["ia_vv"], out["ca_va"], out["ia_aa"]),
        }
        total = (terms["cotr"] + cfg.w_recon * terms["recon"] + cfg.w_div * terms["div"]
                 + cfg.w_match * terms["match"])
        return total, terms

    # ---- inference ----------------------------------------------------------------------------
    def audio_branch(self, wave: torch.Tensor) -> dict:
        """(B, L) -> last-iteration audio queries (B,S,d) and the normalised audio target slot."""
        state = self.slots.audio(self.encode_audio(wave), self.slots.initial_slots)
        return {"audio_query": state.query, "audio_slot": F.normalize(state.slots[:, 0], dim=-1)}

    def visual_branch(self, images, audio_query, audio_slot, alpha: float | None = None) -> dict:
        state = self.slots.image(self.encode_image(images), self.slots.initial_slots)
        return self._maps(state, audio_query, audio_slot, alpha)

    def _maps(self, state, audio_query, audio_slot, alpha: float | None = None) -> dict:
        """Image slot state + the audio's last queries -> the maps (method.md section 5)."""
        cfg = self.cfg
        g = cfg.grid
        aud = self.slots.attention(audio_query, state.keys, cfg.gamma)[:, 0].view(-1, g, g)
        img = self.slots.attention(state.query, state.keys, cfg.gamma)[:, 0].view(-1, g, g)
        image_slot = F.normalize(state.slots[:, 0], dim=-1)
        alpha = cfg.iqr_alpha if alpha is None else alpha
        return {
            "aud": aud, "img": img,
            "heatmap": fuse(aud, img, alpha, cfg.image_size, self.upsample_matrix),
            "image_slot": image_slot, "audio_slot": audio_slot,
            # does the sound's target slot match the picture's? cosine of the target slots
            "confidence": (image_slot * audio_slot).sum(-1).clamp(0, 1),
        }

    def localize(self, images, wave, alpha: float | None = None, object_prior=None) -> dict:
        """The maps of method.md section 5: IQR by default; OGL when `object_prior` (an
        `ogl.ObjectPrior`) is given: the AUD map fused with the object map instead of IMG."""
        img, aud = self.slots.both(self.encode_image(images), self.encode_audio(wave))
        out = self._maps(img, aud.query, F.normalize(aud.slots[:, 0], dim=-1), alpha)
        if object_prior is not None:
            alpha = self.cfg.iqr_alpha if alpha is None else alpha
            obj = object_prior(images)
            out["obj"] = obj
            out["heatmap"] = fuse(out["aud"], obj, alpha, self.cfg.image_size, self.upsample_matrix)
        return out
