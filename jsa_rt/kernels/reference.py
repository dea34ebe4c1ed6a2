"""PyTorch references for every Triton kernel in this package (and the fallback on CPU).

Each function computes exactly what its kernel computes, in plain PyTorch, with the numerically
fragile part (the softmax over slots, its eps and the renormalisation) in fp32 whatever the input
dtype (platform.md, fp16 hazards). The tests compare the kernels against these; the model uses
them directly when `kernels="torch"`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Names of one modality's slot-attention parameters, in the order `slot_iterations` takes them.
# They follow the model's per-modality modules: LayerNorms, q/k/v Linears, a GRUCell and the
# residual MLP (Linear D->H, ReLU, Linear H->D).
PARAM_NAMES = (
    "norm_input.weight", "norm_input.bias",
    "to_q.weight", "to_q.bias", "to_k.weight", "to_k.bias", "to_v.weight", "to_v.bias",
    "gru.weight_ih", "gru.weight_hh", "gru.bias_ih", "gru.bias_hh",
    "norm_slots.weight", "norm_slots.bias", "norm_pre_ff.weight", "norm_pre_ff.bias",
    "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
)


def _compute_dtype(t):
    """fp32 for half types, float64 stays float64 (the float64 references of the tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def slot_attention_step(q, k, v, scale: float, eps: float, gamma: float = 1.0):
    """One slot-attention read-out.

    q (B,S,D), k and v (B,N,D). logits = gamma * scale * q k^T; softmax over the S slots (fp32);
    + eps; renormalise over the N tokens; U = A v. Returns (U in q's dtype, A (B,S,N) in fp32, or float64 for float64 inputs).
    """
    dt = _compute_dtype(q)
    logits = torch.matmul(q.to(dt), k.to(dt).transpose(1, 2)) * (gamma * scale)
    attn = torch.softmax(logits, dim=1) + eps
    attn = attn / attn.sum(dim=2, keepdim=True)
    updates = torch.matmul(attn, v.to(dt))
    return updates.to(q.dtype), attn


def gru_update(gi, gh, h):
    """GRUCell tail: gi, gh (..., 3D) gate pre-activations with biases, order r, z, n; h (..., D)."""
    dt = _compute_dtype(h)
    gi_r, gi_z, gi_n = gi.to(dt).chunk(3, dim=-1)
    gh_r, gh_z, gh_n = gh.to(dt).chunk(3, dim=-1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    return ((1.0 - z) * n + z * h.to(dt)).to(h.dtype)


def gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """torch.nn.GRUCell written out: the two gate GEMMs, then `gru_update`."""
    return gru_update(F.linear(x, weight_ih, bias_ih), F.linear(h, weight_hh, bias_hh), h)


def slot_iterations(x, slots0, params: dict, iters: int, scale: float, eps: float,
                    ln_eps: float = 1e-5):
    """The whole slot loop of one modality (method.md section 3), eval path (no token masking).

    x: tokens (B,N,D) BEFORE the input LayerNorm; slots0: (S,D) or (B,S,D); params: dict keyed by
    PARAM_NAMES. Returns (slots (B,S,D), q_last (B,S,D), k (B,N,D), attn_last (B,S,N) fp32), where
    q_last / attn_last come from the last iteration (the queries computed from the slots before
    the last update), as the maps of method.md need.
    """
    p = params
    B, _, D = x.shape
    xn = F.layer_norm(x, (D,), p["norm_input.weight"], p["norm_input.bias"], ln_eps)
    k = F.linear(xn, p["to_k.weight"], p["to_k.bias"])
    v = F.linear(xn, p["to_v.weight"], p["to_v.bias"])
    slots = slots0.expand(B, -1, -1) if slots0.dim() == 3 else slots0.unsqueeze(0).expand(B, -1, -1)
    S = slots.shape[1]
    q = attn = None
    for _ in range(iters):
        sn = F.layer_norm(slots, (D,), p["norm_slots.weight"], p["norm_slots.bias"], ln_eps)
        q = F.linear(sn, p["to_q.weight"], p["to_q.bias"])
        updates, attn = slot_attention_step(q, k, v, scale, eps)
        h = gru_cell(updates.reshape(B * S, D), slots.reshape(B * S, D),
                     p["gru.weight_ih"], p["gru.weight_hh"], p["gru.bias_ih"], p["gru.bias_hh"])
        slots = h.reshape(B, S, D)
        hidden = F.layer_norm(slots, (D,), p["norm_pre_ff.weight"], p["norm_pre_ff.bias"], ln_eps)
        hidden = F.relu(F.linear(hidden, p["mlp.0.weight"], p["mlp.0.bias"]))
        slots = slots + F.linear(hidden, p["mlp.2.weight"], p["mlp.2.bias"])
    return slots, q, k, attn


def random_params(dim: int, hidden: int, device="cpu", dtype=torch.float32, generator=None) -> dict:
    """Random parameters shaped like one modality's slot module (for tests and benchmarks)."""
    def rnd(*shape, std):
        return (torch.randn(*shape, generator=generator) * std).to(device=device, dtype=dtype)

    D, H = dim, hidden
    w = D ** -0.5
    return {
        "norm_input.weight": 1 + rnd(D, std=0.1), "norm_input.bias": rnd(D, std=0.1),
        "to_q.weight": rnd(D, D, std=w), "to_q.bias": rnd(D, std=0.1),
        "to_k.weight": rnd(D, D, std=w), "to_k.bias": rnd(D, std=0.1),
        "to_v.weight": rnd(D, D, std=w), "to_v.bias": rnd(D, std=0.1),
        "gru.weight_ih": rnd(3 * D, D, std=w), "gru.weight_hh": rnd(3 * D, D, std=w),
        "gru.bias_ih": rnd(3 * D, std=0.1), "gru.bias_hh": rnd(3 * D, std=0.1),
        "norm_slots.weight": 1 + rnd(D, std=0.1), "norm_slots.bias": rnd(D, std=0.1),
        "norm_pre_ff.weight": 1 + rnd(D, std=0.1), "norm_pre_ff.bias": rnd(D, std=0.1),
        "mlp.0.weight": rnd(H, D, std=w), "mlp.0.bias": rnd(H, std=0.1),
        "mlp.2.weight": rnd(D, H, std=H ** -0.5), "mlp.2.bias": rnd(D, std=0.1),
    }


def params_from_modules(norm_input, to_q, to_k, to_v, gru, mlp, norm_slots, norm_pre_ff) -> dict:
    """Collect one modality's parameters from its modules (LayerNorm, Linear, GRUCell, Sequential)."""
    return {
        "norm_input.weight": norm_input.weight, "norm_input.bias": norm_input.bias,
        "to_q.weight": to_q.weight, "to_q.bias": to_q.bias,
        "to_k.weight": to_k.weight, "to_k.bias": to_k.bias,
        "to_v.weight": to_v.weight, "to_v.bias": to_v.bias,
        "gru.weight_ih": gru.weight_ih, "gru.weight_hh": gru.weight_hh,
        "gru.bias_ih": gru.bias_ih, "gru.bias_hh": gru.bias_hh,
        "norm_slots.weight": norm_slots.weight, "norm_slots.bias": norm_slots.bias,
        "norm_pre_ff.weight": norm_pre_ff.weight, "norm_pre_ff.bias": norm_pre_ff.bias,
        "mlp.0.weight": mlp[0].weight, "mlp.0.bias": mlp[0].bias,
        "mlp.2.weight": mlp[2].weight, "mlp.2.bias": mlp[2].bias,
    }
