"""The settings a training run resolves to: preset (or the --init checkpoint's model; on
--resume the run's own) -> --config JSON -> flags, what a resumed run may change, and its folder."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from ..config import TRAIN_PRESETS, ModelConfig, TrainConfig, get_preset, with_variant
from ..errors import InputError


def check_pretrained_weights(model_cfg, no_pretrained: bool) -> None:
    """Training the paper preset from a random image encoder is not the paper's model: without
    its ImageNet weights, stop and say where they go (elsewhere a warning is enough)."""
    from ..model.encoders import RESNET18_FILE, find_resnet18_weights
    if model_cfg.image_encoder == "resnet18" and not no_pretrained and find_resnet18_weights() is None:
        raise InputError(f"the {model_cfg.preset} preset's image encoder needs ImageNet ResNet-18 weights: "
                         f"set JSA_RESNET18_WEIGHTS=/path/{RESNET18_FILE} (or put it in the torch hub cache), "
                         f"or pass --no-pretrained to train from random weights")


def resolve_configs(args, init_config=None):
    """Preset (or the --init checkpoint's model; on --resume the run's own settings) -> overrides
    from --config JSON ({"model": {...}, "train": {...}}) -> flags. Sets args.model when not given."""
    run = _stored_run(args, init_config) if getattr(args, "resume", False) else None
    if run is not None:
        _refuse_another_model(args, init_config, run)
        model_cfg = run.model
        train_cfg = run.train or TRAIN_PRESETS.get(model_cfg.preset, TrainConfig())
    else:
        model_cfg = init_config or get_preset(args.preset or "edge")
        train_cfg = TRAIN_PRESETS.get(model_cfg.preset, TrainConfig())
    args.model = args.model or (run.kind if run else None) or "jsa"
    overrides = _read_config(args, init_config, model_cfg, train_cfg)
    variant_flags = {"variant": args.variant, "match": args.match}
    if args.model == "ezvsl" and any(variant_flags.values()):
        raise InputError("--variant and --match apply to --model jsa only")
    try:
        # the variant's defaults (match, IQR weight) first, then the JSON settings, then the flags
        variant = args.variant or overrides.get("model", {}).get("variant")
        model_cfg = with_variant(model_cfg, variant) if variant else model_cfg
        model_cfg = model_cfg.with_overrides(**overrides.get("model", {}))
        train_cfg = replace(train_cfg, **overrides.get("train", {}))
    except ValueError as exc:
        raise InputError(f"{args.config}: {exc}" if args.config else str(exc)) from None
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "weight_decay": args.weight_decay, "num_workers": args.workers, "seed": args.seed}
    try:
        model_cfg = model_cfg.with_overrides(**{k: v for k, v in variant_flags.items() if v is not None})
        train_cfg = replace(train_cfg, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.no_amp:
        train_cfg = replace(train_cfg, amp=False)
    if run is not None:
        _check_resume_changes(args, run, model_cfg, train_cfg)
    return model_cfg, train_cfg


def _read_config(args, init_config, model_cfg, train_cfg) -> dict:
    """The --config JSON's {"model": {...}, "train": {...}}, checked for shape and known names."""
    if not args.config:
        return {}
    try:
        overrides = json.loads(Path(args.config).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read config {args.config}: {exc}") from None
    sections = ("model", "train")
    if not isinstance(overrides, dict) or set(overrides) - set(sections) or \
            not all(isinstance(overrides.get(k, {}), dict) for k in sections):
        raise InputError(f"{args.config} must be a JSON object with \"model\" and/or \"train\" settings, "
                         f"e.g. {{\"train\": {{\"lr\": 1e-4}}}}")
    if init_config is not None and overrides.get("model"):
        raise InputError(f"--init fixes the model: {args.config} may hold only \"train\" settings")
    for section, known in zip(sections, (model_cfg.to_dict(), train_cfg.to_dict())):
        unknown = sorted(set(overrides.get(section, {})) - set(known))
        if unknown:
            raise InputError(f"{args.config}: unknown {section} setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(known)}")
    return overrides


def run_folder(args, model_cfg) -> Path:
    return Path(args.out or f"runs/{model_cfg.preset}-{args.model}")


# ---- --resume: the run's own settings, and what a resumed run may change -----------------------
# A resumed run keeps its weights, so what shapes them (or the input they were trained on) cannot
# change: a flag or --config setting that does is refused. The rest (losses, the schedule, the
# loader) may change with a warning per setting, e.g. more --epochs for a run that ended.
SHAPE_FIELDS = ("preset", "image_encoder", "audio_encoder", "image_size", "image_stride", "sample_rate",
                "audio_seconds", "n_fft", "hop_length", "log_offset", "log_scale", "dim", "num_slots",
                "iterations", "mlp_hidden", "decoder_hidden")
VARIANT_FIELDS = ("variant", "match", "w_loc", "tau_loc", "iqr_alpha")      # what --variant sets
TRAIN_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "weight_decay": "--weight-decay",
               "num_workers": "--workers", "seed": "--seed", "amp": "--no-amp"}


@dataclass(frozen=True)
class StoredRun:
    out: Path
    kind: str | None
    model: ModelConfig
    train: TrainConfig | None          # None: a checkpoint without its training settings


def _stored_run(args, init_config) -> StoredRun | None:
    """The settings in the run folder's last.pt; None when there is none or it cannot be read
    (Trainer._resume reports a missing or damaged file)."""
    out = Path(args.out or f"runs/{args.preset or (init_config.preset if init_config else 'edge')}-{args.model or 'jsa'}")
    try:
        ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True, mmap=True)
        model = ModelConfig.from_dict(ckpt["config"])
    except Exception:
        return None
    try:
        known = {f.name for f in fields(TrainConfig)}
        train = TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if k in known})
    except Exception:
        train = None
    kind = ckpt.get("kind")
    return StoredRun(out, kind if isinstance(kind, str) else None, model, train)


def _refuse_another_model(args, init_config, run: StoredRun) -> None:
    what = f"{run.out} holds a {run.model.preset}{' ' + run.kind if run.kind else ''} run"
    if args.preset and args.preset != run.model.preset:
        raise InputError(f"--resume: {what}; --preset {args.preset} cannot continue it: drop --preset "
                         f"(the run's is used), or start a new run in another --out")
    if args.model and run.kind and args.model != run.kind:
        flag = f"--init {args.init} (a {args.model} model)" if init_config is not None else f"--model {args.model}"
        raise InputError(f"--resume: {what}; {flag} cannot continue it: drop it (the run's is used), "
                         f"or start a new run in another --out")
    if init_config is not None:
        changed = [f for f in SHAPE_FIELDS if getattr(init_config, f) != getattr(run.model, f)]
        if changed:
            raise InputError(f"--resume: {what}; --init {args.init} has another {changed[0]} "
                             f"({getattr(init_config, changed[0])!r}, the run's {getattr(run.model, changed[0])!r}): "
                             f"drop --init, or start a new run in another --out")


def _check_resume_changes(args, run: StoredRun, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Refuses a changed model-shape setting; warns (one line each) about any other changed setting."""
    def source(name: str, flag: str | None, given) -> str:
        if flag and given:
            return flag
        return f"{args.config} ({name})" if args.config else "the flags"

    warnings = []
    for f in fields(ModelConfig):
        old, new = getattr(run.model, f.name), getattr(model_cfg, f.name)
        if old == new:
            continue
        if f.name == "match" and args.match:
            by = "--match"
        else:                                           # --variant, or its defaults (match, IQR weight)
            by = source(f"model.{f.name}", "--variant", args.variant and f.name in VARIANT_FIELDS)
        if f.name in SHAPE_FIELDS:
            raise InputError(f"--resume: the run in {run.out} has model {f.name} {old!r} and {by} sets {new!r}, "
                             f"which its weights cannot take: drop it, or start a new run in another --out")
        warnings.append((by, f"model {f.name}", old, new))
    if run.train is not None:
        for f in fields(TrainConfig):
            old, new = getattr(run.train, f.name), getattr(train_cfg, f.name)
            if old != new:
                flag = TRAIN_FLAGS.get(f.name)
                attr = {"num_workers": "workers", "amp": "no_amp"}.get(f.name, f.name)
                given = getattr(args, attr) not in (None, False)
                warnings.append((source(f"train.{f.name}", flag, given), f.name, old, new))
    if os.environ.get("RANK", "0") == "0":             # once, not once per DDP process
        for by, name, old, new in warnings:
            print(f"warning: --resume: {by} sets {name} {new!r}, the run's is {old!r}; using {new!r} from here on",
                  file=sys.stderr)
