"""`jsa-rt train`: train JSA or the EZ-VSL baseline from a preset (+ a JSON config or flags).

AdamW per the method, mixed precision on GPU, worker-process data loading, a progress bar with
the loss terms and throughput, validation metrics every epoch (selection on val, never test),
atomic checkpoints with `--resume` (exact: RNG states and the position in the epoch are saved),
CSV + JSON logs. Multi-GPU / multi-node through torchrun (DDP; gloo on CPU, nccl on GPU).

The flags here; the settings they resolve to in run_settings.py; the pieces around the loop
(RNG states, DDP, the loader that resumes exactly, the run folder's lock and log) in
run_parts.py; the run itself in `Trainer`.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..args import non_negative_float, non_negative_int, positive_int
from ..atomic import write_json
from ..config import MATCH_MODES, PRESETS, VARIANTS
from ..errors import CheckpointError, InputError
from ..model import build_model, count_parameters
from ..model.checkpoint import atomic_torch_save, check_finite_weights, save_checkpoint
from .evaluate import torch_device
from .feature_cache import FeatureCache
from .progress import progress_bar
from .run_parts import (Distributed, EpochSampler, LossModule, batch_to, claim_run_folder, diverged, frame_ids,
                        make_dataset, make_loader, open_log, parameter_groups, rng_state, seed_everything,
                        set_rng_state)
from .run_settings import check_pretrained_weights, resolve_configs, run_folder


# ---- the command -------------------------------------------------------------------------------
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
    p.add_argument("--val-pairs-split", default="val-pairs",
                   help="several-source frames whose follows rate joins the score that picks best.pt, when the "
                        "data folder has this split (make-scenes writes it); '' to leave it out")
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
    p.add_argument("--feature-store", default=None, metavar="DIR",
                   help="with --cache-features: also keep the cached features in DIR (about 0.3 MB per item "
                        "and view) and reuse them when a later run or --resume has the same items, method, views, "
                        "seed and backbone settings (other losses or heads may differ)")
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
            held.enter_context(claim_run_folder(self.out, args.resume))
        seed_everything(self.train_cfg.seed + self.dist.rank)
        self.train_ds, self.val_ds, self.val_pairs_ds = self._datasets()
        # scenes of one frame with different soundtracks: kept in one batch, told to the loss
        self.frames = frame_ids(self.train_ds.samples)
        self.model = self._model(init_model)
        cfg = self.train_cfg
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, cfg.lr, cfg.backbone_lr_scale),
                                           lr=cfg.lr, weight_decay=cfg.weight_decay)
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
        self.log_file, self.has_header = open_log(self.out / "log.csv", self.state["step"] if args.resume else None) \
            if self.dist.main else (None, False)
        self.log = csv.writer(self.log_file) if self.log_file else None
        self.term_names = None

    # ---- set-up ---------------------------------------------------------------------------------
    def _datasets(self):
        args, cfg, world = self.args, self.train_cfg, self.dist.world
        train_ds = make_dataset(args, self.model_cfg, args.train_split, True, args.max_train_items)
        val_ds = make_dataset(args, self.model_cfg, args.val_split, False) if args.val_split else None
        pairs_file = Path(args.data) / "splits" / f"{args.val_pairs_split}.txt"
        val_pairs_ds = make_dataset(args, self.model_cfg, args.val_pairs_split, False) \
            if args.val_split and args.val_pairs_split and pairs_file.is_file() else None
        if len(train_ds) < cfg.batch_size * world:
            raise InputError(f"{len(train_ds)} training items is fewer than one batch of "
                             f"{cfg.batch_size} x {world} processes: lower --batch-size")
        used = len(EpochSampler(len(train_ds), 0, 0, 0, world, cfg.batch_size).indices()) * world
        if used < 0.9 * len(train_ds) and self.dist.main:
            # whole batches per rank only: the rest of each epoch's shuffle is left out
            print(f"warning: each epoch uses {used} of {len(train_ds)} training items (batches of "
                  f"{cfg.batch_size} x {world} processes); a smaller --batch-size uses more")
        return train_ds, val_ds, val_pairs_ds

    def _model(self, init_model):
        args = self.args
        if init_model is not None:
            model = init_model.train().to(self.device)
            model.cfg = self.model_cfg     # --variant / --match may change the losses of the --init model
            if self.dist.main:
                print(f"starting from the weights of {args.init}")
            return model
        check_pretrained_weights(self.model_cfg, args.no_pretrained)
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
                                     show_progress=self.dist.main and not args.no_progress,
                                     store=args.feature_store)
        if self.dist.main and args.feature_store:
            print(f"feature cache: {self.train_ds.reused_views} of {args.cache_features} view(s) read back from "
                  f"{args.feature_store}, the rest computed and stored there")
        return replace(cfg, num_workers=0), self.model.reading_backbone_features    # the cache is in memory

    def _print_plan(self) -> None:
        args, cfg, model = self.args, self.train_cfg, self.model
        print(f"training {args.model} ({self.model_cfg.preset}, {count_parameters(model) / 1e6:.2f} M params) "
              f"on {len(self.train_ds)} items, {self.dist.world} process(es) on {self.device.type}, "
              f"batch {cfg.batch_size}, lr {cfg.lr}, epochs {cfg.epochs}, "
              f"mixed precision {'bf16' if self.amp_dtype else 'off'}, slot kernels "
              f"{model.slots.step.name if hasattr(model, 'slots') else 'n/a'}")
        if self.val_pairs_ds is not None:
            print(f"best.pt by val pointing + cIoU@0.5 + follows on {len(self.val_pairs_ds)} "
                  f"{self.args.val_pairs_split} scenes")

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
                             self.device.type, self.frames)
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
            frames = None if self.frames is None else self.frames[batch["index"]]
            total, terms = self.train_model(images, wave, frames)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        # the norm of all gradients (clipped when asked): a NaN / inf anywhere shows in it
        clip = self.train_cfg.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        bad = "loss" if not torch.isfinite(total.detach()) else \
            "gradients" if not torch.isfinite(grad_norm) else ""
        if self.dist.any_rank(bool(bad)):      # before the step: the weights stay finite
            raise InputError(diverged(bad or "loss or gradients (on another process)",
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
            write_json(self.out / "history.json", state["history"])
            print(f"epoch {state['epoch']}: " + json.dumps(record))
        self.dist.barrier()

    def validate(self) -> dict:
        """Localisation on the val split: pointing game, cIoU@0.5 (median threshold), AUC, and
        retrieval R@1, with the same code as `jsa-rt eval`; with a val-pairs split, also its
        follows rate, which joins the score (a model that points well but ignores the sound is
        not the best one); best.pt when the score is the best yet."""
        from .evaluate import evaluate
        summary, _, _ = evaluate(self.model, self.val_ds, batch_size=self.train_cfg.batch_size,
                                 device=str(self.device), grid=0, progress=False)
        retrieval = summary.get("retrieval") or {}
        val = {"ciou50": summary["ciou50"], "auc": summary["auc"], "pointing": summary["pointing"],
               "r1_a2i": retrieval.get("a2i", {}).get("r1"), "r1_i2a": retrieval.get("i2a", {}).get("r1")}
        if self.val_pairs_ds is not None:
            pairs, _, _ = evaluate(self.model, self.val_pairs_ds, batch_size=self.train_cfg.batch_size,
                                   device=str(self.device), grid=0, progress=False)
            val["pairs_pointing"] = pairs["pointing"]
            val["follows"] = (pairs.get("pairs") or {}).get("follows")
        self.model.train()
        score = (val.get("pointing") or 0.0) + (val.get("ciou50") or 0.0) + (val.get("follows") or 0.0)
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

