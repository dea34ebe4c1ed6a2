"""Latency reports: statistics, the report schema, and reading and writing report files.

Every speed claim of jsa-rt is a report made here. A report is one JSON document:

    {"schema": "jsa-rt-profile/1", "mode": "model" | "pipeline", "created": ISO time,
     "machine": "cpu-2core-x86_64", "environment": {...}, "settings": {...},
     "peak": {"fp32_gflops": ..., ...} (model mode),
     "backends": {NAME: {"device": ..., "total": STATS, "stages": {STAGE: STATS},
                         "raw_ms": {"total": [...], "stages": {STAGE: [...]}},
                         "precision": ..., "threads": ...,
                         "stage_sum": {...},     # do the stages add up to the total? if not, why
                         "video_rate": {...},    # the total (or per-frame work) against the frame budget
                         "flops": {...}, "pipeline": {...}}},   # the last two per mode
     "skipped": {NAME: "why it was not measured"}}

STATS = {"samples": n, "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms",
"std_ms"} (`samples` is the count; the samples themselves are in `raw_ms`): plain numpy
percentiles (linear interpolation) over every timed sample, warm-up excluded, no outlier
clipping, because the tail is what a live system feels. In pipeline mode `total` is the
capture-to-render frame age. `video_rate` answers "will this hold N fps?": headroom against the
frame budget (1000 / target_fps ms), the fraction of samples over it, and jitter (p99 - p50);
see video_rate.py. Beside this module: markdown.py renders a report, guards.py compares two
and applies --fail-if. This module needs numpy only (no torch, no matplotlib).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import numpy as np

from ..atomic import write_text
from ..errors import InputError
from .video_rate import DEFAULT_TARGET_FPS, model_video_rate

SCHEMA = "jsa-rt-profile/1"
PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("samples", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms",
             "std_ms")

# Stages that partition one forward pass (model mode) or one video frame (pipeline mode), in order;
# the stacked bars draw their means (means add up). Other stages (the branches, the plain
# forward) are reported but not stacked.
MODEL_STAGES = ("preprocess", "audio_frontend", "audio_encoder", "image_encoder", "slot_attention",
                "maps_fusion", "upsample")
BRANCH_STAGES = ("audio_branch", "visual_branch")
# the live pipeline's per-frame stages (jsa_rt.live.pipeline, `stages_ms` of each frame record):
# they add up to the frame's capture-to-render age. `audio` is 0 on frames that reuse the cached
# audio state; `result_wait` is the hand-off from the inference to the output thread.
PIPELINE_STAGES = ("capture_wait", "preprocess", "audio", "visual", "result_wait", "render")
# what the stacked bars draw for a backend: the first of these sets it reports completely
STACK_ORDERS = (MODEL_STAGES, MODEL_STAGES[1:], PIPELINE_STAGES, ("inference", "after_inference"),
                BRANCH_STAGES)


# ---- statistics ----------------------------------------------------------------------------
def summarize(samples_ms) -> dict:
    """Distribution of latencies in milliseconds: min, percentiles, max, mean; nothing dropped."""
    a = np.asarray(samples_ms, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("no samples to summarise")
    if not np.all(np.isfinite(a)):
        raise ValueError("latency samples must be finite")
    stats = {"samples": int(a.size), "min_ms": float(a.min())}
    for q in PERCENTILES:
        stats[f"p{q}_ms"] = float(np.percentile(a, q))
    stats.update(max_ms=float(a.max()), mean_ms=float(a.mean()), std_ms=float(a.std()))
    return stats


def backend_entry(total_ms, stages_ms: dict | None = None, **extra) -> dict:
    """One `backends.<name>` block from raw samples: statistics plus the raw samples themselves."""
    stages_ms = {k: list(map(float, v)) for k, v in (stages_ms or {}).items() if len(v)}
    entry = {
        "total": summarize(total_ms),
        "stages": {name: summarize(v) for name, v in stages_ms.items()},
        "raw_ms": {"total": [float(x) for x in total_ms], "stages": stages_ms},
    }
    entry.update(extra)
    return entry


def stack_order(entry: dict) -> tuple[str, ...]:
    """The stages that partition this backend's work: the first complete set it reports."""
    for order in STACK_ORDERS:
        if all(s in entry["stages"] for s in order):
            return order
    return ()


def stage_sum(entry: dict, why: str) -> dict | None:
    """Do the partitioning stages add up to the total? Their summed means against the total's
    mean (means add up; percentiles do not), with `why` they may differ. None without stages."""
    order = stack_order(entry)
    if not order:
        return None
    summed = float(sum(entry["stages"][s]["mean_ms"] for s in order))
    total = entry["total"]["mean_ms"]
    return {"stages": list(order), "mean_ms": summed, "total_mean_ms": total,
            "ratio": summed / total if total > 0 else None, "why": why}


# ---- the report ------------------------------------------------------------------------------
def new_report(mode: str, environment: dict, settings: dict) -> dict:
    return {
        "schema": SCHEMA, "mode": mode,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": environment.get("machine", "unknown"),
        "environment": environment, "settings": settings,
        "backends": {}, "skipped": {},
    }


def finish_report(report: dict, contention=None) -> dict:
    """Stamp the end of the run with how busy the machine was: `other_cpu_cores` (CPU that
    other processes used during the run, env.CpuContention) and the load average."""
    env = report["environment"]
    target = report["settings"].get("target_fps") or DEFAULT_TARGET_FPS
    for entry in report["backends"].values():
        if "stage_sum" not in entry:
            entry["stage_sum"] = stage_sum(entry, "stages and total are timed in separate runs")
        if "video_rate" not in entry and report["mode"] == "model":
            entry["video_rate"] = model_video_rate(entry["raw_ms"]["total"], target)
    if contention is not None:
        env["other_cpu_cores"] = contention.others_cores()
    if hasattr(os, "getloadavg"):
        env["load_average_end"] = list(os.getloadavg())
    return report


def validate_report(report: dict) -> None:
    """Raise InputError (one line) when `report` is not a profile report this code can read."""
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise InputError(f"not a jsa-rt profile report (expected schema {SCHEMA!r}); "
                         "make one with `python tools/profile.py model --preset tiny --json OUT`")
    for key in ("mode", "environment", "settings", "backends"):
        if key not in report:
            raise InputError(f"profile report lacks {key!r}; regenerate it with tools/profile.py")
    for name, entry in report["backends"].items():
        blocks = [("total", entry.get("total"))] + list(entry.get("stages", {}).items())
        for where, stats in blocks:
            missing = [k for k in STAT_KEYS if not isinstance(stats, dict) or k not in stats]
            if missing:
                raise InputError(f"profile report: backends.{name}.{where} lacks {missing}; "
                                 "regenerate it with tools/profile.py")


# ---- files -----------------------------------------------------------------------------------
def save_report(report: dict, path: str) -> None:
    validate_report(report)
    write_text(path, json.dumps(report, indent=1, sort_keys=False) + "\n")


def load_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except FileNotFoundError:
        raise InputError(f"profile report {path} not found; make one with "
                         f"`python tools/profile.py model --preset tiny --json {path}`") from None
    except json.JSONDecodeError as e:
        raise InputError(f"profile report {path} is not valid JSON ({e.msg}, line {e.lineno}); "
                         "regenerate it") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise InputError(f"{path} is not a profile report (JSON text); pass the .json that "
                         f"`python tools/profile.py ... --json OUT` wrote") from None
    validate_report(report)
    return report
