"""What the kernel tests share: the device they run on, NaN-poisoned allocations, comparisons.

By default the kernels run on CPU under the Triton interpreter (TRITON_INTERPRET=1 is set here,
before any kernel module is imported). On a GPU machine, JSA_KERNELS_DEVICE=cuda runs the same
tests compiled (tools/gpu_checks.sh does).
"""
import os

DEVICE = os.environ.get("JSA_KERNELS_DEVICE", "cpu")
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"     # must precede the first import of a kernel module

import pytest  # noqa: E402
import torch  # noqa: E402

FP_TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def skip_unless_runnable(kernel) -> None:
    """Skip the calling test module when its kernels cannot run here as asked."""
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("JSA_KERNELS_DEVICE=cuda but no CUDA device", allow_module_level=True)
    if DEVICE == "cpu" and type(kernel).__name__ != "InterpretedFunction":
        pytest.skip("kernels were imported before TRITON_INTERPRET=1 was set: run this file in its own "
                    "pytest process", allow_module_level=True)


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref|, in float64; NaN anywhere in `got` gives inf."""
    got, ref = got.double().cpu(), ref.double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def poison_empty(monkeypatch) -> None:
    """Every float tensor from torch.empty / empty_like starts as NaN (kernel outputs and
    workspaces), so an element a kernel forgets to write fails the comparison."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def nan_fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(real_empty_like(*a, **k)))


def randn(*shape, dtype=torch.float32, scale=1.0, seed=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return (torch.randn(*shape, generator=g) * scale).to(device=DEVICE, dtype=dtype)
