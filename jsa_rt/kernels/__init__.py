"""Triton kernels of the slot-attention module: the model's fast path, chosen once per model by
jsa_rt/model/slot_kernels.py (`use_kernels`), and the TensorRT plugin's kernel (`aot.py` compiles
it to PTX). They know nothing of the model.

Stable entry points (CUDA tensors with compute capability >= 8.0, or CPU tensors when
TRITON_INTERPRET=1 was set before this package's kernels were first imported):

    slot_attention_step(q, k, v, scale, eps, gamma=1.0) -> (updates, attn)
        q (B,S,D), k/v (B,N,D); softmax over slots (fp32) + eps, renormalised over tokens;
        updates = attn @ v in q's dtype, attn (B,S,N) fp32. gamma sharpens (inference maps).
    gru_update(gi, gh, h) -> h_new
        GRUCell tail; gi/gh (..., 3D) gate pre-activations with biases (order r, z, n).
    gru_cell(x, h, w_ih, w_hh, b_ih, b_hh) -> h_new          whole GRUCell, GEMMs included.
    joint_loop.joint_slot_iterations(...)                    both modalities' loops together (inference).

Each takes `backend="auto" | "triton" | "torch"`: "auto" picks Triton when `triton_available`
says so and the PyTorch reference (`jsa_rt.kernels.reference`) otherwise; "triton" raises
DeviceError where it cannot run. All are differentiable (see each kernel module's Function).
Importing this package needs neither torch nor triton; the kernels load on first use.
Kernel experiments the product does not use live outside the package, in the repository's
top-level `kernels/experiments/` (kernels/README.md).
"""
import os

from ..errors import DeviceError

MIN_CAPABILITY = (8, 0)      # Triton 3.x targets Ampere and newer (Jetson Orin yes, Xavier no)

_triton_import_ok = None


def _have_triton() -> bool:
    global _triton_import_ok
    if _triton_import_ok is None:
        try:
            import triton  # noqa: F401
            _triton_import_ok = True
        except Exception:          # ImportError, or a broken install (missing libcuda bits)
            _triton_import_ok = False
    return _triton_import_ok


def triton_available(device) -> bool:
    """True when the Triton kernels can run on `device` (a torch.device or string)."""
    if not _have_triton():
        return False
    import torch
    device = torch.device(device)
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def resolve_backend(device, backend: str = "auto") -> str:
    """'triton' or 'torch' for this device; raises DeviceError when 'triton' is asked for and impossible."""
    if backend == "torch":
        return "torch"
    if backend not in ("auto", "triton"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    if triton_available(device):
        return "triton"
    if backend == "auto":
        return "torch"
    raise DeviceError(
        f"Triton kernels cannot run on {device}: they need the triton package (pip install "
        f"'jsa-rt[kernels]') and an NVIDIA GPU of compute capability >= 8.0; use kernels='torch'")


def _needs_grad(*tensors) -> bool:
    import torch
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def slot_attention_step(q, k, v, scale: float, eps: float, gamma: float = 1.0, backend: str = "auto"):
    """Fused slot-attention read-out; returns (updates (B,S,D) in q's dtype, attn (B,S,N) fp32)."""
    if resolve_backend(q.device, backend) == "torch":
        from . import reference
        return reference.slot_attention_step(q, k, v, scale, eps, gamma)
    from . import slot_attention
    if _needs_grad(q, k, v):
        return slot_attention.SlotAttentionStep.apply(q, k, v, float(scale), float(eps), float(gamma))
    return slot_attention.forward(q, k, v, scale, eps, gamma)


def gru_update(gi, gh, h, backend: str = "auto"):
    """Fused GRUCell tail: h_new = (1-z) n + z h from gate pre-activations gi, gh (..., 3D), h (..., D)."""
    if resolve_backend(h.device, backend) == "torch":
        from . import reference
        return reference.gru_update(gi, gh, h)
    from . import gru
    if _needs_grad(gi, gh, h):
        return gru.GruUpdate.apply(gi, gh, h)
    return gru.forward(gi, gh, h)


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, backend: str = "auto"):
    """Whole GRUCell (both gate GEMMs + tail) in one launch; x, h (M, D)."""
    if resolve_backend(h.device, backend) == "torch":
        from . import reference
        return reference.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    from . import gru
    if _needs_grad(x, h, w_ih, w_hh, b_ih, b_hh):
        return gru.GruCell.apply(x, h, w_ih, w_hh, b_ih, b_hh)
    return gru.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh)


__all__ = ["triton_available", "resolve_backend", "slot_attention_step", "gru_update", "gru_cell",
           "MIN_CAPABILITY"]
