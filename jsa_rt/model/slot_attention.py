"""Joint slot attention (method.md section 3): one modality-generic slot module, used twice.

Slots compete for tokens (softmax over the slot axis), then each slot takes the weighted mean
of the values it won, then a GRU and a residual MLP update it. "Joint" = the two modalities
share the learned initial slots, and cross-modal maps pair one modality's queries with the
other's keys. Slot 0 is the target slot, slot 1 the off-target slot.

The loop below is the reference's. How its two steps run (the PyTorch reference, or the Triton
kernels) is chosen once per model, outside the loop: slot_kernels.py, `use_kernels`.
"""
from __future__ import annotations

import torch
from torch import nn

from .slot_kernels import REFERENCE, SlotState, slot_attention_map, use_kernels


class SlotAttention(nn.Module):
    """Slot attention over one modality's tokens, starting from given initial slots."""

    def __init__(self, dim: int, iterations: int, mlp_hidden: int, eps: float, token_mask_prob: float = 0.0):
        super().__init__()
        self.iterations, self.eps, self.scale = iterations, eps, dim ** -0.5
        self.token_mask_prob = token_mask_prob
        self.step = REFERENCE           # how `attend` and `gru_step` run (slot_kernels.use_kernels)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_input = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_pre_ff = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.ReLU(inplace=True), nn.Linear(mlp_hidden, dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def mask_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Training only: replace each token with the learned mask token with probability p."""
        if not (self.training and self.token_mask_prob > 0):
            return tokens
        drop = torch.rand(tokens.shape[:2], device=tokens.device) < self.token_mask_prob
        return torch.where(drop.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)

    def attend(self, q, k, v):
        """One competition step: attention (B,S,N) and the weighted means U (B,S,D)."""
        return self.step.attend(q, k, v, self.scale, self.eps)

    def gru_step(self, updates, hidden):
        return self.step.gru(self.gru, updates, hidden)

    def forward(self, tokens: torch.Tensor, initial_slots: torch.Tensor) -> SlotState:
        batch, _, dim = tokens.shape
        x = self.norm_input(self.mask_tokens(tokens))
        k, v = self.to_k(x), self.to_v(x)
        slots = initial_slots.expand(batch, -1, -1)
        for _ in range(self.iterations):
            q = self.to_q(self.norm_slots(slots))
            attn, updates = self.attend(q, k, v)
            slots = self.gru_step(updates.reshape(-1, dim), slots.reshape(-1, dim)).view(batch, -1, dim)
            slots = slots + self.mlp(self.norm_pre_ff(slots))
        return SlotState(slots=slots, query=q, keys=k, attn=attn)


class JointSlotAttention(nn.Module):
    """Image and audio slot modules with shared learned initial slots, and the 4 maps."""

    def __init__(self, dim: int, num_slots: int, iterations: int, mlp_hidden: int, eps: float,
                 token_mask_prob: float = 0.0, kernels: str = "auto"):
        super().__init__()
        self.eps, self.scale = eps, dim ** -0.5
        self.initial_slots = nn.Parameter(torch.randn(1, num_slots, dim) * dim ** -0.5)
        args = (dim, iterations, mlp_hidden, eps, token_mask_prob)
        self.image = SlotAttention(*args)
        self.audio = SlotAttention(*args)
        use_kernels(self, kernels)      # sets self.kernels (the setting) and self.step (what runs)

    def _apply(self, fn, *args, **kwargs):
        """Moving or casting the module (.to, .cuda, .half): "auto" is chosen again for the device."""
        super()._apply(fn, *args, **kwargs)
        if self.kernels == "auto":
            use_kernels(self, "auto")
        return self

    def attention(self, query, keys, gamma: float = 1.0):
        return slot_attention_map(query, keys, self.scale, self.eps, gamma)

    def both(self, image_tokens, audio_tokens) -> tuple[SlotState, SlotState]:
        """Both modalities' loops, as the chosen kernels run them (at inference with the Triton
        kernels they advance together; otherwise one module after the other)."""
        return self.step.both(self, image_tokens, audio_tokens)

    def forward(self, image_tokens, audio_tokens) -> dict:
        img = self.image(image_tokens, self.initial_slots)
        aud = self.audio(audio_tokens, self.initial_slots)
        return {
            "image": img, "audio": aud,
            "ia_vv": self.attention(img.query, img.keys),      # (B,S,Nv)
            "ia_aa": self.attention(aud.query, aud.keys),      # (B,S,Na)
            "ca_va": self.attention(img.query, aud.keys),      # (B,S,Na)
            "ca_av": self.attention(aud.query, img.keys),      # (B,S,Nv): the localisation map
        }
