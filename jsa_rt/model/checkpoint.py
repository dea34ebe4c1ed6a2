"""jsa-rt checkpoints: weights + the model config (+ training state), written atomically.

A checkpoint alone rebuilds its model. Shipped models (`shipped.SHIPPED`; `shipped.DEFAULT_MODEL` when none
is named) are addressable by name wherever a checkpoint is accepted.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import CheckpointError
from ..shipped import DEFAULT_MODEL, SHIPPED, resolve_checkpoint  # noqa: F401 (re-exported)
from .torch_files import load_torch_file

FORMAT = "jsa-rt"
FORMAT_VERSION = 1


def atomic_torch_save(obj, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash or Ctrl-C leaves
    the previous file intact."""
    from ..atomic import atomic_path
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def check_finite_weights(model, path) -> None:
    """A model with NaN / inf weights (a diverged run) is never saved: the last good file stays."""
    bad = [name for name, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        from ..errors import InputError
        raise InputError(f"the weights are not finite ({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): "
                         f"not saving {path}; lower --lr")


def save_checkpoint(path, model, extra: dict | None = None, half: bool = False) -> None:
    """`half` stores float weights as fp16 (shipped models); they load back as fp32."""
    check_finite_weights(model, path)
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items()}
    atomic_torch_save({
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": model.kind,
        "config": model.cfg.to_dict(), "state_dict": state, "extra": extra or {},
    }, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate the raw checkpoint dict; one-line errors for corrupt or foreign files."""
    path = Path(path)
    ckpt = load_torch_file(path, "checkpoint", "re-download or re-train it")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        if isinstance(ckpt, dict) and looks_official(ckpt):
            raise CheckpointError(f"{path} is an official JSA checkpoint: convert it first with "
                                  f"`jsa-rt convert-official {path} OUT.pt`")
        raise CheckpointError(f"{path} is not a jsa-rt checkpoint (no '{FORMAT}' header); "
                              f"pass a file written by `jsa-rt train` or `convert-official`")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer jsa-rt (format "
                              f"{ckpt['format_version']}); upgrade jsa-rt")
    return ckpt


def looks_official(obj: dict) -> bool:
    state = obj.get("model", obj)
    return isinstance(state, dict) and any(
        isinstance(k, str) and k.replace("module.", "", 1).startswith("slot_attn.") for k in state)


def load_checkpoint(path_or_name=None, device="cpu", kernels: str = "auto"):
    """-> (model in eval mode, meta dict with kind, config, extra, path)."""
    from . import build_model
    path = resolve_checkpoint(path_or_name)
    ckpt = read_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(ckpt["config"])
        model = build_model(cfg, ckpt["kind"], pretrained=False, kernels=kernels)
        state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path} does not match its model ({first}); the file is damaged "
                              f"or from an incompatible jsa-rt version") from None
    model.to(device).eval()
    meta = {"kind": ckpt["kind"], "config": cfg, "extra": ckpt.get("extra", {}), "path": str(path)}
    return model, meta
