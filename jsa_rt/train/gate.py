"""`jsa-rt calibrate-gate`: choose a model's "no source" confidence gate on val and store it in
the checkpoint, where `live`, `demo` and `SoundLocator` read it.

Input: the per-sample CSV that `jsa-rt eval` wrote for the val split (its `confidence` and
`no_source` columns). The gate is the lowest threshold whose false-alarm rate on the scenes
without a visible source is at most `--false-alarm`. A model whose confidence does not tell
the two kinds of scene apart (detection no better than false alarms by `MIN_SEPARATION`) gets
gate 0: the audio level alone decides, which is better than a gate that hides every source.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from ..args import unit_interval
from ..errors import InputError
from .compare import read_rows
from .metrics import detection_rate, false_alarm_rate

MIN_NO_SOURCE = 10         # fewer scenes without a source cannot estimate a false-alarm rate
MIN_SEPARATION = 0.2       # detection must beat false alarms by this much for the gate to be worth it


def choose_gate(confidence, no_source, max_false_alarm: float) -> dict:
    """The gate and what it does on these scenes: threshold, detection, false alarm, and why."""
    c, ns = np.asarray(confidence, dtype=np.float64), np.asarray(no_source, dtype=bool)
    if ns.sum() < MIN_NO_SOURCE or (~ns).sum() == 0:
        raise InputError(f"the CSV has {int(ns.sum())} scenes without a source and {int((~ns).sum())} with "
                         f"one; calibrating needs at least {MIN_NO_SOURCE} and 1 (use the val split of "
                         f"`jsa-rt make-scenes`, which has both)")
    # candidates: just above each no-source confidence, so that one fewer false alarm passes
    candidates = np.unique(np.concatenate([[0.0], np.nextafter(c[ns], np.inf)]))
    ok = [t for t in candidates if false_alarm_rate(c, ns, t) <= max_false_alarm]
    threshold = float(min(ok))
    detect, false = detection_rate(c, ns, threshold), false_alarm_rate(c, ns, threshold)
    if detect - false < MIN_SEPARATION:
        return {"threshold": 0.0, "detection": 1.0, "false_alarm": 1.0, "reason":
                f"the confidence does not separate scenes with and without a source (at {threshold:.3f}: "
                f"{detect:.0%} detected, {false:.0%} false alarms): gate 0, the audio level alone decides"}
    return {"threshold": threshold, "detection": detect, "false_alarm": false,
            "reason": f"{detect:.0%} of sourced scenes pass at {false:.0%} false alarms"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("calibrate-gate", help="choose a model's no-source gate on val; store it in the checkpoint",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the model (.pt or shipped name)")
    p.add_argument("--csv", type=Path, required=True, help="`jsa-rt eval --split val` per-sample CSV of that model")
    p.add_argument("--false-alarm", type=unit_interval, default=0.15,
                   help="highest false-alarm rate on scenes without a source (default 0.15)")
    p.add_argument("--out", type=Path, required=True, help="the checkpoint to write (may be the same .pt)")
    return p


def run(args: argparse.Namespace) -> int:
    import torch
    from ..model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
    rows = list(read_rows(args.csv).values())
    if "confidence" not in rows[0] or "no_source" not in rows[0]:
        raise InputError(f"{args.csv} has no confidence / no_source columns: write it with a current `jsa-rt eval`")
    gate = choose_gate([float(r["confidence"]) for r in rows], [r["no_source"] == "True" for r in rows],
                       args.false_alarm)
    model, meta = load_checkpoint(args.checkpoint)
    old = model.cfg.no_source_confidence
    model.cfg = dataclasses.replace(model.cfg, no_source_confidence=gate["threshold"])
    extra = dict(meta.get("extra") or {}, no_source_gate={**gate, "csv": str(args.csv)})
    # keep the file's storage: shipped models hold fp16 weights
    stored = read_checkpoint(meta["path"])["state_dict"].values()
    half = any(v.is_floating_point() and v.dtype == torch.float16 for v in stored)
    save_checkpoint(args.out, model, extra=extra, half=half)
    print(f"gate {old:g} -> {gate['threshold']:.4f}: {gate['reason']} ({len(rows)} val scenes); wrote "
          f"{args.out}; next: jsa-rt live --checkpoint {args.out}")
    return 0
