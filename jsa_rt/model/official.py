"""Import checkpoints saved by the authors' released JSA code (method.md section 9).

The official file is `{"model": state_dict, ...}` or a bare state dict, keys optionally
prefixed with `module.`; its layout maps one-to-one onto our `paper` preset.
"""
from __future__ import annotations

import re
from pathlib import Path


from ..config import get_preset
from ..errors import CheckpointError
from .torch_files import load_torch_file

# (official pattern, ours) in order; the first match wins
_KEY_RULES = [
    (r"^imgnet\.proj\.", "image_encoder.proj."),
    (r"^imgnet\.", "image_encoder.backbone."),
    (r"^audnet\.conv1_1\.", "audio_encoder.backbone.conv1."),
    (r"^audnet\.proj\.0\.", "audio_encoder.proj."),
    (r"^audnet\.", "audio_encoder.backbone."),
    (r"^slot_attn\.slots$", "slots.initial_slots"),
    (r"^slot_attn\.mask_token_img$", "slots.image.mask_token"),
    (r"^slot_attn\.mask_token_aud$", "slots.audio.mask_token"),
    (r"^slot_attn\.img_(to_[qkv]|gru|mlp|norm_input|norm_slots|norm_pre_ff)\.", r"slots.image.\1."),
    (r"^slot_attn\.aud_(to_[qkv]|gru|mlp|norm_input|norm_slots|norm_pre_ff)\.", r"slots.audio.\1."),
    (r"^img_decoder\.pos_emb\.", "image_decoder."),
    (r"^img_decoder\.", "image_decoder."),
    (r"^aud_decoder\.pos_emb\.", "audio_decoder."),
    (r"^aud_decoder\.", "audio_decoder."),
]


def official_key_to_ours(key: str) -> str | None:
    for pattern, repl in _KEY_RULES:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def extract_state_dict(obj) -> dict:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError("not an official JSA checkpoint: expected {'model': state_dict} "
                              "or a state dict (check the file)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def convert_state_dict(official: dict, model) -> tuple[dict, list[str], list[str]]:
    """-> (our state dict, missing keys of ours, unexpected official keys)."""
    ours_expected = model.state_dict()
    converted, unexpected = {}, []
    for key, value in official.items():
        ours = official_key_to_ours(key)
        if ours is None or ours not in ours_expected:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(ours_expected[ours].shape):
            raise CheckpointError(f"official key {key} has shape {tuple(value.shape)}, expected "
                                  f"{tuple(ours_expected[ours].shape)}: not a paper-preset JSA checkpoint")
        converted[ours] = value
    missing = [k for k in ours_expected if k not in converted]
    return converted, missing, unexpected


def convert_official(in_path: str | Path, out_path: str | Path, strict: bool = True) -> dict:
    """Read an official checkpoint, write a jsa-rt `paper` checkpoint; returns a report."""
    from . import build_model
    from .checkpoint import save_checkpoint
    in_path = Path(in_path)
    if not in_path.is_file():
        raise CheckpointError(f"official checkpoint not found: {in_path} (check the path)")
    raw = load_torch_file(in_path, "PyTorch file", "download the authors' checkpoint again")
    if isinstance(raw, dict) and raw.get("format") == "jsa-rt":
        raise CheckpointError(f"{in_path} is already a jsa-rt checkpoint: use it as it is "
                              f"(--checkpoint {in_path}), no conversion needed")
    official = extract_state_dict(raw)
    if not any(k.startswith("slot_attn.") for k in official):
        raise CheckpointError(f"{in_path} has no 'slot_attn.*' weights: not a JSA checkpoint "
                              f"(expected the layout of the authors' released code)")
    model = build_model(get_preset("paper"), "jsa", pretrained=False)
    state, missing, unexpected = convert_state_dict(official, model)
    # BatchNorm step counters are bookkeeping; everything else must be there
    missing_weights = [k for k in missing if not k.endswith("num_batches_tracked")]
    if strict and (missing_weights or unexpected):
        raise CheckpointError(
            f"{in_path}: missing {len(missing_weights)} keys {missing_weights[:6]}, unexpected "
            f"{len(unexpected)} keys {unexpected[:6]} (use --no-strict to convert anyway)")
    model.load_state_dict(state, strict=False)
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    save_checkpoint(out_path, model, extra={"source": "official", "official_file": in_path.name,
                                            "epoch": epoch})
    return {"converted": len(state), "missing": missing_weights, "unexpected": unexpected,
            "epoch": epoch, "out": str(out_path)}
