"""Joint slot attention (method.md section 3): one modality-generic slot module, used twice.

Slots compete for tokens (softmax over the slot axis), then each slot takes the weighted mean
of the values it won, then a GRU and a residual MLP update it. "Joint" = the two modalities
share the learned initial slots, and cross-modal maps pair one modality's queries with the
other's keys. Slot 0 is the target slot, slot 1 the off-target slot.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F


def slot_attention_map(q: torch.Tensor, k: torch.Tensor, scale: float, eps: float,
                       gamma: float = 1.0) -> torch.Tensor:
    """(B,S,D) queries x (B,N,D) keys -> (B,S,N): softmax over slots, + eps, renormalised over
    tokens. Computed in fp32 whatever the input dtype (fp16 would flush eps=1e-8 to 0), also
    under mixed-precision training (autocast would run the product in bf16)."""
    if torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return slot_attention_map(q, k, scale, eps, gamma)
    logits = torch.matmul(q.float(), k.float().transpose(1, 2)) * (scale * gamma)
    attn = logits.softmax(dim=1) + eps
    return attn / attn.sum(dim=2, keepdim=True)


@dataclass
class SlotState:
    slots: torch.Tensor    # (B, S, D) after the last update
    query: torch.Tensor    # (B, S, D) queries of the last iteration (from the slots before it)
    keys: torch.Tensor     # (B, N, D)
    attn: torch.Tensor     # (B, S, N) intra-modal attention of the last iteration


class SlotAttention(nn.Module):
    """Slot attention over one modality's tokens, starting from given initial slots."""

    def __init__(self, dim: int, iterations: int, mlp_hidden: int, eps: float,
                 token_mask_prob: float = 0.0, kernels: str = "auto"):
        super().__init__()
        self.iterations, self.eps, self.scale = iterations, eps, dim ** -0.5
        self.token_mask_prob = token_mask_prob
        self.kernels = kernels          # "auto" (Triton on CUDA GPUs), "triton" or "torch" (reference)
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

    def uses_triton(self, device: torch.device) -> bool:
        if self.kernels == "torch" or (self.kernels == "auto" and device.type != "cuda"):
            return False
        if self.kernels == "triton":
            return True
        from ..kernels import triton_available
        return triton_available(device)

    def attend(self, q, k, v, triton: bool):
        """One competition step: attention (B,S,N) and the weighted means U (B,S,D)."""
        if triton:
            from ..kernels import slot_attention_step
            updates, attn = slot_attention_step(q, k, v, self.scale, self.eps, backend="triton")
            return attn, updates
        attn = slot_attention_map(q, k, self.scale, self.eps)
        return attn, torch.matmul(attn.to(v.dtype), v)

    def gru_step(self, updates, hidden, triton: bool):
        if triton:
            from ..kernels import gru_update
            gi = F.linear(updates, self.gru.weight_ih, self.gru.bias_ih)
            gh = F.linear(hidden, self.gru.weight_hh, self.gru.bias_hh)
            return gru_update(gi, gh, hidden, backend="triton")
        return self.gru(updates, hidden)

    def forward(self, tokens: torch.Tensor, initial_slots: torch.Tensor) -> SlotState:
        batch, _, dim = tokens.shape
        x = self.norm_input(self.mask_tokens(tokens))
        k, v = self.to_k(x), self.to_v(x)
        slots = initial_slots.expand(batch, -1, -1)
        triton = self.uses_triton(tokens.device)
        for _ in range(self.iterations):
            q = self.to_q(self.norm_slots(slots))
            attn, updates = self.attend(q, k, v, triton)
            slots = self.gru_step(updates.reshape(-1, dim), slots.reshape(-1, dim), triton).view(batch, -1, dim)
            slots = slots + self.mlp(self.norm_pre_ff(slots))
        return SlotState(slots=slots, query=q, keys=k, attn=attn)


class JointSlotAttention(nn.Module):
    """Image and audio slot modules with shared learned initial slots, and the 4 maps."""

    def __init__(self, dim: int, num_slots: int, iterations: int, mlp_hidden: int, eps: float,
                 token_mask_prob: float = 0.0, kernels: str = "auto"):
        super().__init__()
        self.eps, self.scale = eps, dim ** -0.5
        self.initial_slots = nn.Parameter(torch.randn(1, num_slots, dim) * dim ** -0.5)
        args = (dim, iterations, mlp_hidden, eps, token_mask_prob, kernels)
        self.image = SlotAttention(*args)
        self.audio = SlotAttention(*args)

    def set_kernels(self, kernels: str) -> None:
        self.image.kernels = self.audio.kernels = kernels

    def kernels_in_use(self, device) -> str:
        """"triton" or "torch": what the slot updates run on for tensors on `device` (for logs)."""
        return "triton" if self.image.uses_triton(torch.device(device)) else "torch"

    def attention(self, query, keys, gamma: float = 1.0):
        return slot_attention_map(query, keys, self.scale, self.eps, gamma)

    def both(self, image_tokens, audio_tokens) -> tuple[SlotState, SlotState]:
        """Both modalities' loops. At inference with the Triton kernels they advance together
        (kernels/joint_loop.py: a third of the launches); otherwise one module after the other."""
        if self.training or not self.image.uses_triton(image_tokens.device):
            return (self.image(image_tokens, self.initial_slots),
                    self.audio(audio_tokens, self.initial_slots))
        from ..kernels.joint_loop import joint_slot_iterations
        img, aud = joint_slot_iterations(image_tokens, audio_tokens, self.initial_slots,
                                         self._packed_weights(), self.image.iterations, self.scale,
                                         self.eps, ln_eps=self.image.norm_input.eps)
        return SlotState(*img), SlotState(*aud)

    def _packed_weights(self) -> dict:
        """Stacked, LayerNorm-folded weights for the joint loop; repacked when any weight changes."""
        from ..kernels.joint_loop import pack_joint
        from ..kernels.reference import params_from_modules
        params = [params_from_modules(m.norm_input, m.to_q, m.to_k, m.to_v, m.gru, m.mlp,
                                      m.norm_slots, m.norm_pre_ff) for m in (self.image, self.audio)]
        key = tuple((p.data_ptr(), p._version) for d in params for p in d.values())
        if getattr(self, "_packed_key", None) != key:
            self._packed, self._packed_key = pack_joint(*params), key
        return self._packed

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
