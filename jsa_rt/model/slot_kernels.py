"""How the slot loop's steps run: the one seam between the slot module and its fast path.

The slot loop (slot_attention.py) reads like the reference: it calls `step.attend(q, k, v, scale,
eps)` (the competition: attention over slots, then each slot's weighted mean of the values),
`step.gru(cell, x, h)` (the GRUCell update), and, for both modalities at once,
`step.both(slots, image_tokens, audio_tokens)`. `step` is chosen once per model:

    SlotKernels         the PyTorch reference, the official code's ops; any device (the default)
    TritonSlotKernels   jsa_rt.kernels: the fused step and GRU tail; at inference both modalities
                        advance together (kernels/joint_loop.py: a third of the launches)
    (export)            `export.trt_plugins.plugin_kernels()`: the reference with its step as the
                        TensorRT plugin's op, for a `--plugins triton` ONNX export

`use_kernels(model, "auto" | "triton" | "torch" | a SlotKernels)` sets it. "auto" is Triton on a
CUDA GPU that can run it and the reference elsewhere, chosen again whenever the module moves to
another device. The choice is not part of the weights: checkpoints do not change.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
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


class SlotKernels:
    """The PyTorch reference: what the official code computes; any device, autograd, autocast."""
    name = "torch"

    def attend(self, q, k, v, scale: float, eps: float):
        """One competition step: attention (B,S,N) and the weighted means U (B,S,D)."""
        attn = slot_attention_map(q, k, scale, eps)
        return attn, torch.matmul(attn.to(v.dtype), v)

    def gru(self, cell, x, h):
        """The slots' GRUCell update: `cell` an nn.GRUCell, x the means and h the slots, (B*S, D)."""
        return cell(x, h)

    def both(self, slots, image_tokens, audio_tokens) -> tuple[SlotState, SlotState]:
        """Both modalities' loops of a JointSlotAttention `slots`: one module after the other."""
        return (slots.image(image_tokens, slots.initial_slots),
                slots.audio(audio_tokens, slots.initial_slots))


class TritonSlotKernels(SlotKernels):
    """The Triton kernels (jsa_rt.kernels), differentiable. Where they cannot run, the first call
    raises DeviceError."""
    name = "triton"

    def attend(self, q, k, v, scale: float, eps: float):
        from ..kernels import slot_attention_step
        updates, attn = slot_attention_step(q, k, v, scale, eps, backend="triton")
        return attn, updates

    def gru(self, cell, x, h):
        from ..kernels import gru_update
        gi = F.linear(x, cell.weight_ih, cell.bias_ih)
        gh = F.linear(h, cell.weight_hh, cell.bias_hh)
        return gru_update(gi, gh, h, backend="triton")

    def both(self, slots, image_tokens, audio_tokens) -> tuple[SlotState, SlotState]:
        """At inference the two loops advance together (kernels/joint_loop.py); in training one
        module after the other, through `attend` and `gru` above."""
        if slots.training:
            return super().both(slots, image_tokens, audio_tokens)
        from ..kernels.joint_loop import joint_slot_iterations
        img, aud = joint_slot_iterations(image_tokens, audio_tokens, slots.initial_slots,
                                         self._packed_weights(slots), slots.image.iterations, slots.scale,
                                         slots.eps, ln_eps=slots.image.norm_input.eps)
        return SlotState(*img), SlotState(*aud)

    @staticmethod
    def _packed_weights(slots) -> dict:
        """Stacked, LayerNorm-folded weights for the joint loop, kept on `slots`; repacked when any
        weight changes."""
        from ..kernels.joint_loop import pack_joint
        from ..kernels.reference import params_from_modules
        params = [params_from_modules(m.norm_input, m.to_q, m.to_k, m.to_v, m.gru, m.mlp,
                                      m.norm_slots, m.norm_pre_ff) for m in (slots.image, slots.audio)]
        key = tuple((p.data_ptr(), p._version) for d in params for p in d.values())
        if getattr(slots, "_packed_key", None) != key:
            slots._packed, slots._packed_key = pack_joint(*params), key
        return slots._packed


REFERENCE, TRITON = SlotKernels(), TritonSlotKernels()


def choose_kernels(kernels, device) -> SlotKernels:
    """The strategy for a setting ("auto", "triton", "torch" or a SlotKernels) on `device`."""
    if isinstance(kernels, SlotKernels):
        return kernels
    if kernels not in ("auto", "triton", "torch"):
        raise ValueError(f"kernels must be 'auto', 'triton' or 'torch', got {kernels!r}")
    if kernels == "auto":
        from ..kernels import triton_available
        device = torch.device(device)
        return TRITON if device.type == "cuda" and triton_available(device) else REFERENCE
    return TRITON if kernels == "triton" else REFERENCE


def use_kernels(model, kernels="auto", device=None) -> SlotKernels | None:
    """Choose how the slot loops of `model` (a JSA model or its JointSlotAttention) run, once;
    returns the strategy, or None for a model without slots (EZ-VSL). `device`: where its tensors
    will be (default: where its weights are)."""
    slots = getattr(model, "slots", model)
    if not hasattr(slots, "initial_slots"):
        return None
    step = choose_kernels(kernels, slots.initial_slots.device if device is None else device)
    slots.kernels = kernels
    slots.step = slots.image.step = slots.audio.step = step
    return step
