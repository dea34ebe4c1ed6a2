"""EZ-VSL baseline (Mo & Morgado, ECCV 2022) on the same encoders: a global audio embedding
against every image location, trained with the multiple-instance contrastive loss.
Same interface as JSA so training, evaluation, export and live treat both alike."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from .base import AudioVisualModel
from .losses import ezvsl_mil_loss, whole_batch
from .maps import min_max, upsample


class EZVSL(AudioVisualModel):
    kind = "ezvsl"

    def __init__(self, cfg: ModelConfig, pretrained: bool | str = True, kernels: str = "auto"):
        super().__init__(cfg, pretrained)        # no slots: `kernels` is accepted and unused

    def audio_embedding(self, wave):
        """Global max pool, as EZ-VSL: of the backbone's features, then projected (the original's
        order, `ezvsl_pool_features`), or of the projected tokens (the shipped edge-ezvsl)."""
        if self.cfg.ezvsl_pool_features:
            return self.audio_encoder.pooled_token(self.audio_features(wave))[:, 0]
        return self.encode_audio(wave).amax(dim=1)

    def forward(self, images, wave) -> dict:
        return {"image_tokens": self.encode_image(images), "audio_emb": self.audio_embedding(wave)}

    def loss(self, images, wave, frames: torch.Tensor | None = None):
        """`frames`: as JSA.loss; two soundtracks of one frame are not each other's negatives."""
        out = self(images, wave)
        if frames is not None:
            frames = whole_batch(frames.to(images.device))[0]
        total = ezvsl_mil_loss(*whole_batch(out["audio_emb"], out["image_tokens"]), self.cfg.tau, frames)   # all ranks
        return total, {"mil": total}

    def audio_branch(self, wave) -> dict:
        emb = F.normalize(self.audio_embedding(wave), dim=-1)
        return {"audio_query": emb.unsqueeze(1), "audio_slot": emb}

    def visual_branch(self, images, audio_query, audio_slot, alpha: float | None = None) -> dict:
        cfg = self.cfg
        v = F.normalize(self.encode_image(images), dim=-1)                 # (B, N, d)
        cos = torch.matmul(v, audio_query[:, 0].unsqueeze(-1)).squeeze(-1)  # (B, N)
        aud = cos.view(-1, cfg.grid, cfg.grid)
        image_slot = F.normalize(v.mean(dim=1), dim=-1)
        return {
            "aud": aud, "img": aud,
            "heatmap": min_max(upsample(aud, cfg.image_size, self.upsample_matrix)),
            "image_slot": image_slot, "audio_slot": audio_slot,
            "confidence": cos.amax(dim=1).clamp(0, 1),
        }

    def localize(self, images, wave, alpha: float | None = None, object_prior=None) -> dict:
        out = self.visual_branch(images, **self.audio_branch(wave))
        return self.fuse_object_prior(out, images, alpha, object_prior)      # EZ-VSL's own OGL
