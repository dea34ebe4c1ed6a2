"""JSA: encoders -> joint slot attention -> losses (training) or localisation maps (inference).

The audio and visual halves are separate calls (`audio_branch`, `visual_branch`) so a live
loop can refresh the audio at a lower rate than the video.

Variants (`ModelConfig.variant`; method.md is the paper, "listen" is our documented deviation).
The paper's JSA is sound-blind among several objects: its localisation map (the audio target
slot's query against the image keys, `ca_av[:, 0]`) is trained toward the image's own target
map `ia_vv` by the attention-matching loss, which no sound enters, and nothing in training makes
it depend on which sound plays. The "listen" variant (1) adds `loc`, an EZ-VSL-style
multiple-instance contrastive term on the map's own logits (losses.localisation_mil_loss): the
sound must light up some location of its own image more than any location of the other images,
so the map has to use the audio, and `frame` (losses.same_frame_loss), hard negatives from the
same frame: where a frame is in the batch once per sounding object, each sound must beat the
frame's other sounds somewhere in it; (2) drops the matching term that pulls the map toward the
sound-blind `ia_vv` (`match="audio_only"`; "reverse" and "off" are ablations); (3) uses the AUD
map alone at inference (IQR weight 1.0), as the image's own map cannot know which object sounds.
Architecture and weights are the same: only the losses and the IQR weight differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from . import losses
from .base import AudioVisualModel
from .decoders import SpatialBroadcastDecoder
from .maps import fuse
from .slot_attention import JointSlotAttention


class JSA(AudioVisualModel):
    kind = "jsa"

    def __init__(self, cfg: ModelConfig, pretrained: bool | str = True, kernels: str = "auto"):
        super().__init__(cfg, pretrained)
        self.slots = JointSlotAttention(cfg.dim, cfg.num_slots, cfg.iterations, cfg.mlp_hidden,
                                        cfg.attn_eps, cfg.token_mask_prob, kernels)
        self.image_decoder = SpatialBroadcastDecoder(cfg.dim, cfg.decoder_hidden, cfg.grid, cfg.grid)
        self.audio_decoder = SpatialBroadcastDecoder(cfg.dim, cfg.decoder_hidden, 1, self.audio_tokens())

    # ---- training -----------------------------------------------------------------------------
    def forward(self, images, wave) -> dict:
        v, a = self.encode_image(images), self.encode_audio(wave)
        out = self.slots(v, a)
        out.update(image_tokens=v, audio_tokens=a)
        return out

    def loss(self, images, wave, frames: torch.Tensor | None = None):
        """`frames` (B,): which items show one frame with different soundtracks (equal ids >= 0;
        -1 for none); the listen variant's `loc` and `frame` terms use it."""
        cfg = self.cfg
        out = self(images, wave)
        img, aud = out["image"], out["audio"]
        image_targets, audio_targets = losses.whole_batch(img.slots[:, 0], aud.slots[:, 0])   # all ranks
        # k = 20 at the official batch of 256; scaled down with the batch (a batch no bigger
        # than k would otherwise mask every negative and the loss would vanish). At least 2:
        # a neighbourhood includes the item itself, so k = 1 would silently mask nothing.
        k = max(2, cfg.knn_k * image_targets.shape[0] // cfg.knn_reference_batch)
        terms = {
            "cotr": losses.contrastive_loss(image_targets, audio_targets, cfg.tau, k),
            "recon": losses.reconstruction_loss(self.image_decoder(img.slots), out["image_tokens"])
                     + losses.reconstruction_loss(self.audio_decoder(aud.slots), out["audio_tokens"]),
            "div": losses.slot_divergence_loss(img.slots) + losses.slot_divergence_loss(aud.slots),
            "match": losses.attention_matching_loss(out["ca_av"], out["ia_vv"], out["ca_va"], out["ia_aa"],
                                                    cfg.match),
        }
        if cfg.variant == "listen":
            query, keys = losses.whole_batch(aud.query, img.keys)
            if frames is not None:
                frames = losses.whole_batch(frames.to(query.device))[0]
            terms["loc"] = losses.localisation_mil_loss(query, keys, self.slots.scale, cfg.tau_loc, frames)
            if cfg.w_frame and frames is not None:
                terms["frame"] = losses.same_frame_loss(query, keys, self.slots.scale, cfg.tau_loc, frames)
            if cfg.w_own and frames is not None:
                terms["own"] = losses.peak_ownership_loss(query, keys, self.slots.scale, cfg.tau_loc, frames)
        weights = {"cotr": 1.0, "recon": cfg.w_recon, "div": cfg.w_div, "match": cfg.w_match, "loc": cfg.w_loc,
                   "frame": cfg.w_frame, "own": cfg.w_own}
        total = sum(weights[name] * value for name, value in terms.items())
        return total, terms

    # ---- inference ----------------------------------------------------------------------------
    def audio_branch(self, wave: torch.Tensor) -> dict:
        """(B, L) -> last-iteration audio queries (B,S,d) and the normalised audio target slot."""
        state = self.slots.audio(self.encode_audio(wave), self.slots.initial_slots)
        return {"audio_query": state.query, "audio_slot": F.normalize(state.slots[:, 0], dim=-1)}

    def visual_branch(self, images, audio_query, audio_slot, alpha: float | None = None) -> dict:
        state = self.slots.image(self.encode_image(images), self.slots.initial_slots)
        return self._maps(state, audio_query, audio_slot, alpha)

    def target_maps(self, state, audio_query, audio_slot) -> dict:
        """Image slot state + the audio's last queries -> the gamma-sharpened g x g AUD and IMG
        maps of the target slot, the normalised target slots and the confidence."""
        cfg = self.cfg
        g = cfg.grid
        image_slot = F.normalize(state.slots[:, 0], dim=-1)
        return {
            "aud": self.slots.attention(audio_query, state.keys, cfg.gamma)[:, 0].view(-1, g, g),
            "img": self.slots.attention(state.query, state.keys, cfg.gamma)[:, 0].view(-1, g, g),
            "image_slot": image_slot, "audio_slot": audio_slot,
            # does the sound's target slot match the picture's? cosine of the target slots
            "confidence": (image_slot * audio_slot).sum(-1).clamp(0, 1),
        }

    def _maps(self, state, audio_query, audio_slot, alpha: float | None = None) -> dict:
        """The target maps + the heatmap: IQR fusion, upsampled (method.md section 5)."""
        out = self.target_maps(state, audio_query, audio_slot)
        alpha = self.cfg.iqr_alpha if alpha is None else alpha
        out["heatmap"] = fuse(out["aud"], out["img"], alpha, self.cfg.image_size, self.upsample_matrix)
        return out

    def localize(self, images, wave, alpha: float | None = None, object_prior=None) -> dict:
        """The maps of method.md section 5: IQR by default; OGL when `object_prior` (an
        `ogl.ObjectPrior`) is given: the AUD map fused with the object map instead of IMG."""
        img, aud = self.slots.both(self.encode_image(images), self.encode_audio(wave))
        out = self._maps(img, aud.query, F.normalize(aud.slots[:, 0], dim=-1), alpha)
        return self.fuse_object_prior(out, images, alpha, object_prior)
