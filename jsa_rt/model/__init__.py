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


def on_grid(model, image_size: int, image_stride: int | None = None, map_smoothing: float | None = None):
    """The same weights at another input size or image-encoder output stride: a finer (or coarser)
    token grid, and optionally another smoothing of the maps before upsampling. The encoders are
    convolutional and the maps are computed per token, so only the training-only image decoder's
    grid embeddings change (interpolated along the grid, so that training can go on). Raises
    ValueError for a size or stride the encoder cannot take."""
    import torch.nn.functional as F
    cfg = model.cfg.with_overrides(image_size=image_size, image_stride=image_stride or model.cfg.image_stride,
                                   map_smoothing=model.cfg.map_smoothing if map_smoothing is None else map_smoothing)
    kind = next(name for name, cls in MODEL_KINDS.items() if isinstance(model, cls))
    regridded = build_model(cfg, kind, pretrained=False).to(next(model.parameters()).device)
    state = model.state_dict()
    for name in ("image_decoder.row_embed.weight", "image_decoder.col_embed.weight"):
        if name in state:                    # (grid, d) -> (new grid, d), linear along the grid
            state[name] = F.interpolate(state[name].T[None], size=cfg.grid, mode="linear",
                                        align_corners=True)[0].T.contiguous()
    regridded.load_state_dict(state)
    return regridded.train(model.training)


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


__all__ = ["build_model", "on_grid", "random_model", "JSA", "EZVSL", "MODEL_KINDS", "count_parameters"]
