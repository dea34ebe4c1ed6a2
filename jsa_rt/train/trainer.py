"""`jsa-rt train`: train JSA or the EZ-VSL baseline from a preset (+ a JSON config or flags).

AdamW per the method, mixed precision on GPU, worker-process data loading, a progress bar with
the loss terms and throughput, validation metrics every epoch (selection on val, never test),
atomic checkpoints with `--resume` (exact: RNG states and the position in the epoch are saved),
CSV + JSON logs. Multi-GPU / multi-node through torchrun (DDP; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..args import non_negative_float, non_negative_int, positive_int
from ..config import MATCH_MODES, PRESETS, TRAIN_PRESETS, VARIANTS, ModelConfig, TrainConfig, get_preset, with_variant
from ..errors import CheckpointError, InputError
from ..model import build_model, count_parameters
from ..model.checkpoint import atomic_torch_save, check_finite_weights, save_checkpoint
from .evaluate import torch_device
from .feature_cache import FeatureCache
from .progress import progress_bar


# ---- set-up ------------------------------------------------------------------------------------
def add_parser(sub):
    p = sub.add_parser("train", help="train JSA or EZ-VSL")
    p.add_argument("--preset", default=None, choices=list(PRESETS), help="model preset: paper | edge | tiny (default edge)")
    p.add_argument("--model", default=None, choices=["jsa", "ezvsl"], help="default jsa")
    p.add_argument("--variant", default=None, choices=list(VARIANTS),
                   help="jsa only: paper (the published losses) or listen (+ an audio-conditioned "
                        "localisation loss, no image-side matching, IQR weight 1; see model/jsa.py). "
                        "Default: the preset's / --init checkpoint's; --resume keeps the run's")
    p.add_argument("--match", default=None, choices=MATCH_MODES,
                   help="jsa only, ablations: which attention-matching terms train (default: the variant's)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint's weights (a .pt or a shipped name such as edge-jsa): "
                        "fine-tuning on your data; its preset and model kind are used")
    p.add_argument("--data", required=True, help="dataset root (scenes / VGG-SS / Flickr layout)")
    p.add_argument("--format", default="scenes", help="dataset layout (scenes, vggss, flickr, ...)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>-<model>)")
    p.add_argument("--config", default=None, help="JSON file overriding train/model settings")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=non_negative_float)
    p.add_argument("--weight-decay", type=non_negative_float)
    p.add_argument("--workers", type=non_negative_int)
    p.add_argument("--seed", type=non_negative_int)
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--cache-features", type=positive_int, default=None, metavar="VIEWS",
                   help="with frozen encoder backbones (model setting freeze_encoders): run them once over "
                        "VIEWS augmented passes of the training set and train on their stored outputs "
                        "(much faster on a CPU; see train/feature_cache.py)")
    p.add_argument("--val-every", type=positive_int, default=1, metavar="EPOCHS",
                   help="validate (and keep best.pt) every N epochs and after the last (default 1)")
    p.add_argument("--max-train-items", type=positive_int, default=None, help="use only the first N training items")
    p.add_argument("--save-every", type=positive_int, default=200, help="checkpoint every N steps (and each epoch)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    p.add_argument("--no-pretrained", action="store_true", help="random image encoder init")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_pretrained_weights(model_cfg, no_pretrained: bool) -> None:
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
    (run() reports a missing or damaged file)."""
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """All RNG states as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, torch.tensor(py_state, dtype=torch.int64), py_gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in py_state.tolist()), py_gauss))


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32          # derived from the loader's seeded generator
    np.random.seed(seed)
    random.seed(seed)


class Distributed:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            backend = "nccl" if device == "cuda" else "gloo"
            if device == "cuda":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (a collective: all ranks call it)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any."""
        if self.world == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


# ---- data --------------------------------------------------------------------------------------
def make_dataset(args, cfg, split: str, train: bool, max_items: int | None = None):
    from .datasets import open_dataset
    ds = open_dataset(args.format, Path(args.data), cfg, split, train=train, method=args.model)
    if train:
        # a silent or off-screen-only clip has no visible source: it is no positive pair
        ds.samples = [s for s in ds.samples if not s.no_source]
        if max_items is not None:
            ds.samples = ds.samples[:max_items]
    for item_id, reason in ds.missing[:5]:
        print(f"  skipped {item_id}: {reason}")
    if ds.missing:
        print(f"  {len(ds.missing)} {split} items unreadable or missing (listed above, first 5)")
    return ds


def batch_to(batch, device):
    """Datasets yield dicts with at least "image" (B,3,H,W) and "audio" (B,L)."""
    return batch["image"].to(device, non_blocking=True), batch["audio"].to(device, non_blocking=True)


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, this rank's share of it, starting at `start` batches in
    (so a resumed run sees exactly the samples it would have seen)."""

    def __init__(self, n, seed, epoch, rank, world, batch_size, start_batch=0):
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world, self.batch_size, self.start_batch = rank, world, batch_size, start_batch

    def indices(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.n // self.world
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        usable = len(mine) // self.batch_size * self.batch_size        # drop_last
        return mine[self.start_batch * self.batch_size:usable]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self):
        return len(self.indices())


def make_loader(ds, train_cfg, epoch, dist_info, start_batch, device):
    ds.aug_seed = (train_cfg.seed, epoch)        # augmentation = f(seed, epoch, sample): exact resume, distinct ranks
    sampler = EpochSampler(len(ds), train_cfg.seed, epoch, dist_info.rank, dist_info.world,
                           train_cfg.batch_size, start_batch)
    gen = torch.Generator().manual_seed(train_cfg.seed * 7919 + epoch * 104729 + start_batch)
    from .datasets import collate
    return torch.utils.data.DataLoader(
        ds, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=train_cfg.num_workers,
        collate_fn=collate,
        pin_memory=device == "cuda", drop_last=True, worker_init_fn=_worker_init, generator=gen,
        persistent_workers=False)


# ---- training ----------------------------------------------------------------------------------
def initial_model(args):
    """The --init checkpoint (model, its config), after checking it fits the flags; else (None, None)."""
    if not args.init:
        return None, None
    from ..model.checkpoint import load_checkpoint
    model, meta = load_checkpoint(args.init)            # one-line errors for missing or damaged files
    cfg = meta["config"]
    if args.preset and args.preset != cfg.preset:
        raise InputError(f"--init {args.init} is a {cfg.preset} model, not {args.preset}: drop --preset")
    if args.model and args.model != meta["kind"]:
        raise InputError(f"--init {args.init} is a {meta['kind']} model, not {args.model}: drop --model")
    args.model = meta["kind"]
    return model, cfg


def run(args) -> int:
    with contextlib.ExitStack() as held:            # holds the run folder's lock until the end
        Trainer(args, held).train()
    return 0


class Trainer:
    """One training run: set up (folder, data, model, optimizer, --resume), then epochs of steps,
    each epoch ending with validation and a checkpoint, and final.pt at the end."""

    def __init__(self, args, held: contextlib.ExitStack):
        self.args = args
        init_model, init_config = initial_model(args)
        self.model_cfg, self.train_cfg = resolve_configs(args, init_config)     # sets args.model
        device = torch_device(args.device)
        self.dist = Distributed(device)
        self.device = torch.device("cuda", self.dist.local_rank) if device == "cuda" and self.dist.world > 1 \
            else torch.device(device)
        self.out = run_folder(args, self.model_cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.main:
            held.enter_context(_claim_run_folder(self.out, args.resume))
        seed_everything(self.train_cfg.seed + self.dist.rank)
        self.train_ds, self.val_ds = self._datasets()
        self.model = self._model(init_model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.train_cfg.lr,
                                           weight_decay=self.train_cfg.weight_decay)
        self.state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best": None, "history": []}
        self.last_path = self.out / "last.pt"
        if args.resume:
            self._resume()
        self.loader_cfg, self.reading_features = self._feature_cache()
        self.train_model = LossModule(self.model)
        if self.dist.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.dist.local_rank] if device == "cuda" else None,
                find_unused_parameters=True)
        self.amp_dtype = torch.bfloat16 if device == "cuda" and self.train_cfg.amp else None
        if self.dist.main:
            self._print_plan()
        self.log_file, self.has_header = _open_log(self.out / "log.csv", self.state["step"] if args.resume else None) \
            if self.dist.main else (None, False)
        self.log = csv.writer(self.log_file) if self.log_file else None
        self.term_names = None

    # ---- set-up ---------------------------------------------------------------------------------
    def _datasets(self):
        args, cfg, world = self.args, self.train_cfg, self.dist.world
        train_ds = make_dataset(args, self.model_cfg, args.train_split, True, args.max_train_items)
        val_ds = make_dataset(args, self.model_cfg, args.val_split, False) if args.val_split else None
        if len(train_ds) < cfg.batch_size * world:
            raise InputError(f"{len(train_ds)} training items is fewer than one batch of "
                             f"{cfg.batch_size} x {world} processes: lower --batch-size")
        used = len(EpochSampler(len(train_ds), 0, 0, 0, world, cfg.batch_size).indices()) * world
        if used < 0.9 * len(train_ds) and self.dist.main:
            # whole batches per rank only: the rest of each epoch's shuffle is left out
            print(f"warning: each epoch uses {used} of {len(train_ds)} training items (batches of "
                  f"{cfg.batch_size} x {world} processes); a smaller --batch-size uses more")
        return train_ds, val_ds

    def _model(self, init_model):
        args = self.args
        if init_model is not None:
            model = init_model.train().to(self.device)
            model.cfg = self.model_cfg     # --variant / --match may change the losses of the --init model
            if self.dist.main:
                print(f"starting from the weights of {args.init}")
            return model
        _check_pretrained_weights(self.model_cfg, args.no_pretrained)
        return build_model(self.model_cfg, args.model, pretrained=not args.no_pretrained).to(self.device)

    def _resume(self) -> None:
        """Weights, optimizer, position and RNG states from last.pt."""
        last_path = self.last_path
        if not last_path.is_file():
            raise InputError(f"--resume: no {last_path} yet; drop --resume to start a new run")
        try:
            ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{last_path} is not a readable checkpoint ({type(exc).__name__}): the file "
                                  f"is corrupt or truncated; restore it, or drop --resume to start over") from None
        try:
            self.model.load_state_dict(ckpt["state_dict"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise CheckpointError(f"{last_path} does not fit this run's model ({first}); restore it, or drop "
                                  f"--resume to start over") from None
        self.state = ckpt["train_state"]
        rng = ckpt["rng"]
        if isinstance(rng, list):        # one state per rank; a different world size starts fresh streams
            rng = rng[self.dist.rank] if len(rng) == self.dist.world else None
        if rng is not None:
            set_rng_state(rng)
        else:
            seed_everything(self.train_cfg.seed + self.dist.rank + self.state["step"])
        if self.dist.main:
            print(f"resumed {last_path} at epoch {self.state['epoch']}, step {self.state['step']}")

    def _feature_cache(self):
        """With --cache-features: the training set becomes the cached backbone outputs. Returns
        the loader's settings and the context the model's forward runs in."""
        args, cfg = self.args, self.train_cfg
        if not args.cache_features:
            return cfg, contextlib.nullcontext
        if not self.model_cfg.freeze_encoders:
            raise InputError("--cache-features needs frozen encoder backbones: set \"freeze_encoders\": true "
                             "in the --config JSON's \"model\" settings")
        self.train_ds = FeatureCache(self.train_ds, self.model, args.cache_features, cfg.seed, cfg.batch_size,
                                     cfg.num_workers, self.device,
                                     show_progress=self.dist.main and not args.no_progress)
        return replace(cfg, num_workers=0), self.model.reading_backbone_features    # the cache is in memory

    def _print_plan(self) -> None:
        args, cfg, model = self.args, self.train_cfg, self.model
        print(f"training {args.model} ({self.model_cfg.preset}, {count_parameters(model) / 1e6:.2f} M params) "
              f"on {len(self.train_ds)} items, {self.dist.world} process(es) on {self.device.type}, "
              f"batch {cfg.batch_size}, lr {cfg.lr}, epochs {cfg.epochs}, "
              f"mixed precision {'bf16' if self.amp_dtype else 'off'}, slot kernels "
              f"{model.slots.kernels_in_use(self.device) if hasattr(model, 'slots') else 'n/a'}")

    # ---- the run --------------------------------------------------------------------------------
    def train(self) -> None:
        """Epochs until the last one, or until --max-steps; then final.pt."""
        try:
            while self.state["epoch"] < self.train_cfg.epochs:
                stopped, mid_epoch, loss, rate = self.train_epoch()
                if mid_epoch:
                    # stopped mid-epoch: keep the position so --resume continues exactly here
                    self.checkpoint()
                    break
                self.end_epoch(loss, rate)
                if stopped:
                    break
        finally:
            if self.log_file:
                self.log_file.close()
            self.dist.close()
        if self.dist.main:
            self._save_final()

    def train_epoch(self) -> tuple[bool, bool, float, float]:
        """This epoch's batches from the saved position on. Returns (stopped by --max-steps,
        stopped before the epoch's end, the last loss, samples per second)."""
        args, state, epoch = self.args, self.state, self.state["epoch"]
        loader = make_loader(self.train_ds, self.loader_cfg, epoch, self.dist, state["batch_in_epoch"],
                             self.device.type)
        bar = progress_bar(len(loader), f"epoch {epoch + 1}/{self.train_cfg.epochs}", "batch",
                           enabled=not args.no_progress and self.dist.main)
        self.model.train()
        t0, seen = time.perf_counter(), 0
        rate, values = 0.0, {"loss": float("nan")}     # an epoch resumed at its very end trains no batch
        stopped = False
        for batch in loader:
            step_values = self.train_step(batch, epoch)
            if step_values is None:
                continue
            values = step_values
            seen += batch["image"].shape[0] * self.dist.world
            rate = seen / (time.perf_counter() - t0)
            self._log_step(epoch, values, rate)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | {"it/s": f"{rate:.1f}"})
            bar.update(1)
            if state["step"] % args.save_every == 0:
                self.checkpoint()
            if args.max_steps and state["step"] >= args.max_steps:
                stopped = True
                break
        bar.close()
        mid_epoch = stopped and state["batch_in_epoch"] < len(loader) + loader.sampler.start_batch
        return stopped, mid_epoch, values["loss"], rate

    def train_step(self, batch, epoch: int) -> dict | None:
        """One optimizer step; the loss and its terms, or None for a batch with nothing readable."""
        state = self.state
        if batch["errors"]:
            known = {tuple(e) for e in state.setdefault("unreadable", [])}
            state["unreadable"].extend(e for e in batch["errors"] if tuple(e) not in known)
            print(f"  unreadable training items skipped: {batch['errors']}")
        if self.dist.any_rank("image" not in batch):
            # a batch of nothing readable (on any rank: they must step together) is skipped
            # everywhere, and counted, so --resume continues after it
            state["batch_in_epoch"] += 1
            return None
        images, wave = batch_to(batch, self.device)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None), \
                self.reading_features():
            total, terms = self.train_model(images, wave)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        # the norm of all gradients (clipped when asked): a NaN / inf anywhere shows in it
        clip = self.train_cfg.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        bad = "loss" if not torch.isfinite(total.detach()) else \
            "gradients" if not torch.isfinite(grad_norm) else ""
        if self.dist.any_rank(bool(bad)):      # before the step: the weights stay finite
            raise InputError(_diverged(bad or "loss or gradients (on another process)",
                                       state["step"] + 1, epoch, batch.get("id", []), self.out))
        self.optimizer.step()
        state["step"] += 1
        state["batch_in_epoch"] += 1
        return {"loss": float(total.detach())} | {k: float(v.detach()) for k, v in terms.items()}

    def end_epoch(self, loss: float, rate: float) -> None:
        """Validation when due (best.pt on a better score), the history, a checkpoint."""
        state = self.state
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        record = {"epoch": state["epoch"], "step": state["step"], "samples_per_s": round(rate, 2),
                  "loss": round(loss, 5)}
        due = state["epoch"] % self.args.val_every == 0 or state["epoch"] >= self.train_cfg.epochs
        if self.val_ds is not None and self.dist.main and due:
            record["val"] = self.validate()
        state["history"].append(record)
        self.checkpoint()
        if self.dist.main:
            _write_json(self.out / "history.json", state["history"])
            print(f"epoch {state['epoch']}: " + json.dumps(record))
        self.dist.barrier()

    def validate(self) -> dict:
        """Localisation on the val split: pointing game, cIoU@0.5 (median threshold), AUC, and
        retrieval R@1, with the same code as `jsa-rt eval`; best.pt when the score is the best yet."""
        from .evaluate import evaluate
        summary, _, _ = evaluate(self.model, self.val_ds, batch_size=self.train_cfg.batch_size,
                                 device=str(self.device), grid=0, progress=False)
        self.model.train()
        retrieval = summary.get("retrieval") or {}
        val = {"ciou50": summary["ciou50"], "auc": summary["auc"], "pointing": summary["pointing"],
               "r1_a2i": retrieval.get("a2i", {}).get("r1"), "r1_i2a": retrieval.get("i2a", {}).get("r1")}
        score = (val.get("pointing") or 0.0) + (val.get("ciou50") or 0.0)
        best = self.state["best"]
        if best is None or score > best["score"]:
            self.state["best"] = {"score": score, "epoch": self.state["epoch"]}
            save_checkpoint(self.out / "best.pt", self.model, extra={"val": val, "epoch": self.state["epoch"]})
        return val

    # ---- files ----------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """last.pt with every rank's RNG state (all ranks call this; rank 0 writes)."""
        states = self.dist.gather(rng_state())
        if not self.dist.main:
            return
        check_finite_weights(self.model, self.last_path)
        atomic_torch_save({
            "format": "jsa-rt", "format_version": 1, "kind": self.model.kind,
            "config": self.model_cfg.to_dict(), "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "train_state": self.state,
            "train_config": self.train_cfg.to_dict(),
            "rng": states,
            "extra": {"model": self.args.model, "data": str(self.args.data)},
        }, self.last_path)

    def _log_step(self, epoch: int, values: dict, rate: float) -> None:
        if not self.log:
            return
        if self.term_names is None:
            self.term_names = list(values)
            if not self.has_header:
                self._log_row(["step", "epoch", *self.term_names, "samples_per_s"])
        self._log_row([self.state["step"], epoch, *[f"{values[k]:.6f}" for k in self.term_names], f"{rate:.2f}"])

    def _log_row(self, row) -> None:
        self.log.writerow(row)
        self.log_file.flush()
        os.fsync(self.log_file.fileno())          # a SIGKILL or power cut loses at most this row

    def _save_final(self) -> None:
        out, state, args = self.out, self.state, self.args
        final = out / "final.pt"
        save_checkpoint(final, self.model, extra={"steps": state["step"], "epochs": state["epoch"]})
        best = out / "best.pt" if (out / "best.pt").exists() else final
        print(f"trained {state['step']} steps -> {final} (best on val: {best}); next: "
              f"jsa-rt eval --checkpoint {best} --data {args.data} --split test --json {out}/test.json")


RUN_FILES = ("last.pt", "log.csv", "history.json", "best.pt", "final.pt")


def _claim_run_folder(out: Path, resume: bool):
    """An exclusive lock on OUT/.lock while this run lives (the OS drops it when the process
    ends, even by SIGKILL), and no second run mixed into a folder that holds one (unless
    --resume). Returns the lock's open file."""
    import fcntl
    from ..atomic import open_no_follow
    lock = open_no_follow(out / ".lock", "a+", "the run's lock file")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip()
        lock.close()
        raise InputError(f"{out} is in use by another training run{f' (pid {pid})' if pid else ''}: wait for "
                         f"it to end, or choose another --out") from None
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not resume:
        lock.close()
        raise InputError(f"{out} already holds a training run ({', '.join(found)}): add --resume to continue "
                         f"it, or choose another --out")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _open_log(path: Path, resume_step: int | None):
    """log.csv for appending, and whether it already has its header. A new run starts it empty;
    --resume keeps the header and the rows up to the checkpoint's step (later ones are trained
    again), and drops a row cut short by a kill."""
    kept = []
    if resume_step is not None and path.is_file():
        lines = path.read_text(errors="replace").splitlines()
        if lines and lines[0].startswith("step,"):
            width = len(lines[0].split(","))
            kept = lines[:1] + [r for r in lines[1:] if len(r.split(",")) == width
                                and r.split(",", 1)[0].isdigit() and int(r.split(",", 1)[0]) <= resume_step]
    from ..atomic import open_no_follow, write_text
    write_text(path, "".join(f"{r}\n" for r in kept))        # replaces a link there, never writes through it
    return open_no_follow(path, "a", "the training log", newline=""), bool(kept)


def _diverged(what: str, step: int, epoch: int, ids: list, out: Path) -> str:
    """The one-line error for a non-finite loss or gradient (nothing of that step is saved)."""
    items = ", ".join(map(str, ids[:4])) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
    return (f"training diverged at step {step} (epoch {epoch + 1}): non-finite {what}"
            f"{f' on the batch of {items}' if items else ''}; stopped before that update (any checkpoint "
            f"in {out} is from an earlier, finite step): lower --lr, or check those files")


class LossModule(torch.nn.Module):
    """forward() = the model's loss, so DistributedDataParallel sees (and syncs) the call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, wave):
        return self.model.loss(images, wave)


def _write_json(path: Path, obj) -> None:
    from ..atomic import write_json
    write_json(path, obj)
