"""The slot loop's one seam (model/slot_kernels.py): chosen once per model, again when it moves,
never saved; every strategy computes the reference's numbers."""
import os

import pytest
import torch

from jsa_rt.model import build_model
from jsa_rt.model import slot_kernels
from jsa_rt.model.slot_kernels import REFERENCE, TRITON, SlotKernels, choose_kernels, use_kernels

DEVICE = os.environ.get("JSA_KERNELS_DEVICE", "cpu")      # cuda in tools/gpu_checks.sh


def steps(model) -> set:
    return {id(model.slots.step), id(model.slots.image.step), id(model.slots.audio.step)}


def test_auto_is_the_reference_on_cpu_and_triton_on_a_gpu_that_runs_it(monkeypatch):
    model = build_model("tiny", pretrained=False)
    assert model.slots.kernels == "auto" and steps(model) == {id(REFERENCE)}
    import jsa_rt.kernels
    monkeypatch.setattr(jsa_rt.kernels, "triton_available", lambda device: True)
    assert choose_kernels("auto", "cuda") is TRITON
    assert choose_kernels("auto", "cpu") is REFERENCE          # the interpreter is for tests only
    monkeypatch.setattr(jsa_rt.kernels, "triton_available", lambda device: False)
    assert choose_kernels("auto", "cuda") is REFERENCE
    assert choose_kernels("triton", "cpu") is TRITON and choose_kernels("torch", "cuda") is REFERENCE
    with pytest.raises(ValueError):
        choose_kernels("cuda", "cpu")


def test_moving_the_model_chooses_auto_again_and_keeps_an_explicit_choice(monkeypatch):
    chosen = []
    real = slot_kernels.choose_kernels
    monkeypatch.setattr(slot_kernels, "choose_kernels", lambda k, d: chosen.append((k, str(d))) or real(k, d))
    model = build_model("tiny", pretrained=False)
    model.float()
    assert chosen[-1] == ("auto", "cpu")
    use_kernels(model, "triton")
    count = len(chosen)
    model.double().float()
    assert len(chosen) == count and steps(model) == {id(TRITON)}


def test_the_choice_is_not_in_the_weights():
    model = build_model("tiny", pretrained=False, kernels="triton")
    reference = build_model("tiny", pretrained=False, kernels="torch")
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert not any("step" in k or "kernels" in k for k in model.state_dict())


def test_a_model_without_slots_has_nothing_to_choose():
    assert use_kernels(build_model("tiny", kind="ezvsl", pretrained=False), "triton") is None


def test_a_strategy_of_ones_own_goes_through_the_same_seam():
    calls = []

    class Counting(SlotKernels):
        def attend(self, q, k, v, scale, eps):
            calls.append(q.shape)
            return super().attend(q, k, v, scale, eps)

    torch.manual_seed(0)
    model = build_model("tiny", pretrained=False).eval()
    images, wave = torch.randn(1, 3, 112, 112), torch.randn(1, model.cfg.num_samples)
    with torch.no_grad():
        want = model.localize(images, wave)
        use_kernels(model, Counting())
        got = model.localize(images, wave)
    assert len(calls) == 2 * model.cfg.iterations
    for key in ("aud", "img", "heatmap"):
        assert torch.equal(got[key], want[key]), key


def test_triton_slot_updates_match_the_reference_in_training_mode():
    """The per-modality loop (training: autograd through the kernels) on the Triton kernels."""
    from jsa_rt.kernels import triton_available
    if not triton_available(DEVICE):
        pytest.skip(f"Triton kernels cannot run on {DEVICE} (set TRITON_INTERPRET=1 before importing)")
    torch.manual_seed(0)
    model = build_model("tiny", pretrained=False).to(DEVICE)
    slots = model.slots.train()
    slots.image.token_mask_prob = slots.audio.token_mask_prob = 0.0
    v = torch.randn(2, model.cfg.image_tokens, model.cfg.dim, device=DEVICE, requires_grad=True)
    a = torch.randn(2, 16, model.cfg.dim, device=DEVICE)
    out = {}
    for kernels in ("torch", "triton"):
        use_kernels(model, kernels)
        maps = slots(v, a)
        grad, = torch.autograd.grad(maps["ca_av"].square().sum(), v)
        out[kernels] = [maps[k] for k in ("ia_vv", "ia_aa", "ca_va", "ca_av")] + [grad]
    for got, want in zip(out["triton"], out["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
