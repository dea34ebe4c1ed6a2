"""Both modalities' slot loops as ONE sequence of launches (inference path).

At batch 1 the slot module is ~170 tiny launches (16 per iteration per modality); their cost is
the launch, not the arithmetic. Here the image and audio loops advance together: each dense step
is one batched matmul over a stacked (modality, ...) weight tensor, the LayerNorm affines are
folded into the following Linear (W diag(g), b + W beta: the same function), the competition
step is the fused Triton kernel, and the GRU tail the fused Triton kernel. About 13 launches per
iteration for both modalities, so a CUDA graph of it replays far fewer nodes.

    packed = pack_joint(image_params, audio_params)          # once per weights (dicts, PARAM_NAMES)
    img, aud = joint_slot_iterations(x_img, x_aud, slots0, packed, iters, scale, eps)
    # each: (slots (B,S,D), q_last (B,S,D), k (B,N,D), attn_last (B,S,N) fp32)

`backend="torch"` runs the same batched sequence with the PyTorch references (CPU tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import reference


def _fold_norm(weight, bias, norm_weight, norm_bias):
    """Linear(LayerNorm_affine(x)) == Linear'(LayerNorm_plain(x)) with W' = W diag(g), b' = b + W beta."""
    return weight * norm_weight.unsqueeze(0), bias + weight @ norm_bias


@torch.no_grad()
def pack_joint(image: dict, audio: dict) -> dict:
    """Stack the two modalities' loop weights (modality axis first), LayerNorm affines folded."""
    packed = {}
    for name, (w, b, g, beta) in {
        "q": ("to_q.weight", "to_q.bias", "norm_slots.weight", "norm_slots.bias"),
        "mlp1": ("mlp.0.weight", "mlp.0.bias", "norm_pre_ff.weight", "norm_pre_ff.bias"),
    }.items():
        folded = [_fold_norm(p[w], p[b], p[g], p[beta]) for p in (image, audio)]
        packed[f"{name}_wt"] = torch.stack([f[0].T for f in folded]).contiguous()    # (M, in, out)
        packed[f"{name}_b"] = torch.stack([f[1] for f in folded]).unsqueeze(1)       # (M, 1, out)
    for name, (w, b) in {"gi": ("gru.weight_ih", "gru.bias_ih"), "gh": ("gru.weight_hh", "gru.bias_hh"),
                         "mlp2": ("mlp.2.weight", "mlp.2.bias")}.items():
        packed[f"{name}_wt"] = torch.stack([p[w].T for p in (image, audio)]).contiguous()
        packed[f"{name}_b"] = torch.stack([p[b] for p in (image, audio)]).unsqueeze(1)
    packed["inputs"] = (image, audio)            # LN_in and k/v run once, per modality
    return packed


def _keys_values(x, p, ln_eps):
    xn = F.layer_norm(x, (x.shape[-1],), p["norm_input.weight"], p["norm_input.bias"], ln_eps)
    return F.linear(xn, p["to_k.weight"], p["to_k.bias"]), F.linear(xn, p["to_v.weight"], p["to_v.bias"])


def joint_slot_iterations(x_img, x_aud, slots0, packed: dict, iters: int, scale: float, eps: float,
                          ln_eps: float = 1e-5, backend: str = "triton"):
    """The two modalities' loops advanced together; returns (image, audio) tuples like
    `reference.slot_iterations`. Inference only (no autograd through the Triton kernels here)."""
    from . import gru_update, slot_attention_step
    batch, dim = x_img.shape[0], x_img.shape[-1]
    k_img, v_img = _keys_values(x_img, packed["inputs"][0], ln_eps)
    k_aud, v_aud = _keys_values(x_aud, packed["inputs"][1], ln_eps)
    s0 = slots0 if slots0.dim() == 2 else slots0[0]
    num_slots = s0.shape[0]
    rows = batch * num_slots
    slots = s0.unsqueeze(0).expand(2 * batch, -1, -1).reshape(2, rows, dim).contiguous()   # (M, B*S, D)
    for _ in range(iters):
        q = torch.baddbmm(packed["q_b"], F.layer_norm(slots, (dim,), eps=ln_eps), packed["q_wt"])
        q_img, q_aud = q[0].view(batch, num_slots, dim), q[1].view(batch, num_slots, dim)
        if backend == "triton":
            u_img, a_img = slot_attention_step(q_img, k_img, v_img, scale, eps, backend="triton")
            u_aud, a_aud = slot_attention_step(q_aud, k_aud, v_aud, scale, eps, backend="triton")
        else:
            u_img, a_img = reference.slot_attention_step(q_img, k_img, v_img, scale, eps)
            u_aud, a_aud = reference.slot_attention_step(q_aud, k_aud, v_aud, scale, eps)
        updates = torch.stack([u_img.reshape(rows, dim), u_aud.reshape(rows, dim)])
        gi = torch.baddbmm(packed["gi_b"], updates, packed["gi_wt"])
        gh = torch.baddbmm(packed["gh_b"], slots, packed["gh_wt"])
        if backend == "triton":
            slots = gru_update(gi, gh, slots, backend="triton")
        else:
            slots = reference.gru_update(gi, gh, slots)
        hidden = torch.relu_(torch.baddbmm(packed["mlp1_b"], F.layer_norm(slots, (dim,), eps=ln_eps),
                                           packed["mlp1_wt"]))
        slots = torch.baddbmm(slots + packed["mlp2_b"], hidden, packed["mlp2_wt"])
    out_img = (slots[0].view(batch, num_slots, dim), q_img, k_img, a_img)
    out_aud = (slots[1].view(batch, num_slots, dim), q_aud, k_aud, a_aud)
    return out_img, out_aud
