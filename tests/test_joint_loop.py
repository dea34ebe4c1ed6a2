"""Both modalities' slot loops in one launch sequence == each modality's reference loop."""
import os

import pytest
import torch

from jsa_rt.kernels import reference
from jsa_rt.kernels.joint_loop import joint_slot_iterations, pack_joint


def params(dim, hidden, seed):
    gen = torch.Generator().manual_seed(seed)
    return reference.random_params(dim, hidden, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("batch,n_img,n_aud,dim,slots", [(1, 49, 16, 32, 2), (3, 9, 5, 16, 3)])
def test_joint_loop_equals_two_reference_loops(backend, batch, n_img, n_aud, dim, slots):
    torch.manual_seed(0)
    dtype = torch.float64 if backend == "torch" else torch.float32
    p_img, p_aud = params(dim, 2 * dim, 1), params(dim, 2 * dim, 2)
    for p in (p_img, p_aud):                 # non-trivial LayerNorm affines, so the folding matters
        for name in ("norm_slots", "norm_pre_ff", "norm_input"):
            p[f"{name}.weight"] = 1 + 0.2 * torch.randn(dim, dtype=torch.float64)
            p[f"{name}.bias"] = 0.2 * torch.randn(dim, dtype=torch.float64)
    x_img = torch.randn(batch, n_img, dim, dtype=torch.float64)
    x_aud = torch.randn(batch, n_aud, dim, dtype=torch.float64)
    slots0 = torch.randn(slots, dim, dtype=torch.float64)
    scale, eps, iters = dim ** -0.5, 1e-8, 3
    device = os.environ.get("JSA_KERNELS_DEVICE", "cpu")      # cuda in tools/gpu_checks.sh
    want = [reference.slot_iterations(x, slots0, p, iters, scale, eps) for x, p in ((x_img, p_img), (x_aud, p_aud))]
    cast = lambda d: {k: v.to(device, dtype) for k, v in d.items()}           # noqa: E731
    packed = pack_joint(cast(p_img), cast(p_aud))
    got = joint_slot_iterations(x_img.to(device, dtype), x_aud.to(device, dtype), slots0.to(device, dtype),
                                packed, iters, scale, eps, backend=backend)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for g_mod, w_mod in zip(got, want):
        for g, w, name in zip(g_mod, w_mod, ("slots", "q_last", "k", "attn_last")):
            torch.testing.assert_close(g.double().cpu(), w.double(), rtol=tol, atol=tol, msg=name)


def test_model_localize_uses_the_joint_loop_and_matches_the_reference_path():
    from jsa_rt.kernels import triton_available
    from jsa_rt.model import build_model
    from jsa_rt.model.slot_kernels import use_kernels
    device = os.environ.get("JSA_KERNELS_DEVICE", "cpu")
    if not triton_available(device):
        pytest.skip(f"Triton kernels cannot run on {device} (set TRITON_INTERPRET=1 before importing)")
    torch.manual_seed(0)
    model = build_model("tiny", pretrained=False).eval().to(device)
    with torch.no_grad():
        for mod in (model.slots.image, model.slots.audio):
            for norm in (mod.norm_slots, mod.norm_pre_ff):
                norm.weight.normal_(1, 0.2)
                norm.bias.normal_(0, 0.2)
        images = torch.randn(2, 3, 112, 112, device=device)
        wave = torch.randn(2, model.cfg.num_samples, device=device)
        use_kernels(model, "torch")
        want = model.localize(images, wave)
        use_kernels(model, "triton")
        calls = []
        import jsa_rt.kernels.joint_loop as joint
        original = joint.joint_slot_iterations
        joint.joint_slot_iterations = lambda *a, **k: calls.append(1) or original(*a, **k)
        try:
            got = model.localize(images, wave)
        finally:
            joint.joint_slot_iterations = original
    assert calls, "localize did not take the joint loop"
    for key in ("aud", "img", "image_slot", "audio_slot", "confidence"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)
