"""PyTorch models: JSA and the EZ-VSL baseline, with one interface (see `JSA`)."""
from __future__ import annotations

from ..config import ModelConfig, get_preset
from .ezvsl import EZVSL
from .jsa import JSA

MODEL_KINDS = {"jsa": JSA, "ezvsl": EZVSL}


def build_model(cfg: ModelConfig | str, kind: str = "jsa", pretrained=True, kernels: str = "auto"):
    """A model from a preset name or config. `pretrained`: load ImageNet weights for the image
    encoder when available locally (True), from a path (str), or not at all (False). `kernels`:
    how the slot loops run, "auto", "triton" or "torch" (slot_kernels.use_kernels)."""
    if isinstance(cfg, str):
        cfg = get_preset(cfg)
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind](cfg, pretrained=pretrained, kernels=kernels)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_model(preset: str, seed: int = 0, kind: str = "jsa", pretrained: bool = False):
    """Random weights of a preset (timing, tests): deterministic for a given seed.
    `pretrained`: ImageNet weights for the image encoder where available locally."""
    import torch
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_model(preset, kind, pretrained=pretrained).eval()
    finally:
        torch.random.set_rng_state(state)


__all__ = ["build_model", "random_model", "JSA", "EZVSL", "MODEL_KINDS", "count_parameters"]
