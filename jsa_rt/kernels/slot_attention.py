"""Fused slot-attention step: logits, softmax over slots, + eps, renormalise over tokens, U = A V.

One program per batch element; the attention lives in registers between the two contractions,
so the step is one launch instead of the ~6 of the PyTorch reference (`reference.slot_attention_step`).
The softmax, eps and renormalisation run in fp32 whatever the input dtype, and the attention is
returned in fp32 (float16(1e-8) == 0).

Kernel arguments follow the TensorRT AOT-plugin order (platform.md): inputs, int32 scalars,
outputs; float constants (scale * gamma, eps) are constexpr.
"""
import torch
import triton
import triton.language as tl

from . import reference
from ._device import slot_softmax


@triton.jit
def slot_attention_step_kernel(q_ptr, k_ptr, v_ptr, n_tokens, u_ptr, attn_ptr,
                               SCALE: tl.constexpr, EPS: tl.constexpr,
                               S: tl.constexpr, D: tl.constexpr,
                               BS: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    b = tl.program_id(0)
    slot = tl.arange(0, BS)
    tok = tl.arange(0, BN)
    slot_ok = slot < S
    tok_ok = tok < n_tokens
    q_base = q_ptr + b * S * D
    k_base = k_ptr + b * n_tokens * D
    v_base = v_ptr + b * n_tokens * D

    # logits (BS, BN) = q k^T, accumulated over D in fp32
    logits = tl.zeros((BS, BN), tl.float32)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        d_ok = d < D
        q = tl.load(q_base + slot[:, None] * D + d[None, :],
                    mask=slot_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        k = tl.load(k_base + tok[:, None] * D + d[None, :],
                    mask=tok_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        logits += tl.sum(q[:, None, :] * k[None, :, :], axis=2)

    valid = slot_ok[:, None] & tok_ok[None, :]
    attn = slot_softmax(logits, slot_ok, valid, SCALE, EPS)
    tl.store(attn_ptr + b * S * n_tokens + slot[:, None] * n_tokens + tok[None, :], attn, mask=valid)

    # U (BS, D) = A V
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        d_ok = d < D
        v = tl.load(v_base + tok[:, None] * D + d[None, :],
                    mask=tok_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        u = tl.sum(attn[:, :, None] * v[None, :, :], axis=1)
        tl.store(u_ptr + b * S * D + slot[:, None] * D + d[None, :],
                 u.to(u_ptr.dtype.element_ty), mask=slot_ok[:, None] & d_ok[None, :])


def block_sizes(num_slots: int, num_tokens: int, dim: int, budget: int = 8192) -> dict:
    """Power-of-two tiles; the (BS, BN, BD) product bounds the registers of the broadcast products."""
    bs = triton.next_power_of_2(num_slots)
    bn = triton.next_power_of_2(num_tokens)
    bd = max(4, min(64, triton.next_power_of_2(dim), budget // (bs * bn)))
    bd = 1 << (bd.bit_length() - 1)     # round down to a power of two
    return {"BS": bs, "BN": bn, "BD": bd}


def forward(q, k, v, scale: float, eps: float, gamma: float = 1.0):
    """Launch the kernel: returns (updates in q's dtype, attn fp32). Inputs are made contiguous."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, S, D = q.shape
    N = k.shape[1]
    updates = torch.empty_like(q)
    attn = torch.empty((B, S, N), device=q.device, dtype=torch.float32)
    slot_attention_step_kernel[(B,)](
        q, k, v, N, updates, attn,
        SCALE=float(gamma * scale), EPS=float(eps), S=S, D=D, **block_sizes(S, N, D))
    return updates, attn


class SlotAttentionStep(torch.autograd.Function):
    """Triton forward; backward recomputes the PyTorch reference (the step is tiny next to the GEMMs)."""

    @staticmethod
    def forward(ctx, q, k, v, scale, eps, gamma):
        ctx.save_for_backward(q, k, v)
        ctx.consts = (scale, eps, gamma)
        return forward(q, k, v, scale, eps, gamma)

    @staticmethod
    def backward(ctx, grad_updates, grad_attn):
        q, k, v = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
            outs = reference.slot_attention_step(*leaves, *ctx.consts)
            pairs = [(o, g) for o, g in zip(outs, (grad_updates, grad_attn)) if g is not None]
            wanted = [t for t in leaves if t.requires_grad]
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                             allow_unused=True)) if wanted else iter(())
        out = [next(grads) if t.requires_grad else None for t in leaves]
        return (*out, None, None, None)
