"""Latency reports: statistics, the report schema, markdown, comparisons and guards.

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
see `model_video_rate` and `pipeline_video_rate`. This module needs numpy only (no torch, no
matplotlib).
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
import time
from datetime import datetime, timezone

import numpy as np

from ..errors import InputError

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
# the frame rate a report is judged against when none is given (pipeline mode: the camera's rate)
DEFAULT_TARGET_FPS = 30.0
# pipeline mode: a rate within 5 % of the target counts as held (file pacing and clock jitter)
RATE_HELD = 0.95
# pipeline mode: a render-to-render interval this many budgets long means a frame was missed
LATE_INTERVAL = 1.5


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


def _work_vs_budget(samples_ms, target_fps: float) -> dict:
    """Per-frame work against the frame budget: headroom at p50 / p99, how many samples go over
    it, jitter (p99 - p50 and the standard deviation), and the rate the work alone would allow."""
    a = np.asarray(samples_ms, dtype=np.float64).ravel()
    budget = 1000.0 / target_fps
    p50, p99 = (float(np.percentile(a, q)) for q in (50, 99))
    over = int(np.count_nonzero(a > budget))
    return {"target_fps": float(target_fps), "budget_ms": budget, "samples": int(a.size),
            "p50_ms": p50, "p99_ms": p99, "max_ms": float(a.max()),
            "headroom_p50_ms": budget - p50, "headroom_p99_ms": budget - p99,
            "over_budget": over, "over_budget_fraction": over / a.size,
            "jitter_ms": p99 - p50, "std_ms": float(a.std()),
            "max_fps_p50": 1000.0 / p50 if p50 > 0 else None,
            "max_fps_p99": 1000.0 / p99 if p99 > 0 else None}


def model_video_rate(total_ms, target_fps: float = DEFAULT_TARGET_FPS) -> dict:
    """Model mode: can one whole call (both branches) per frame keep up with `target_fps`?"""
    v = _work_vs_budget(total_ms, target_fps)
    v["basis"] = "total: one whole call (audio + visual branch) per frame"
    fps, budget = f"{target_fps:g} fps", f"{v['budget_ms']:.1f} ms"
    if v["p99_ms"] <= v["budget_ms"]:
        v["verdict"] = "holds"
        v["summary"] = (f"holds {fps}: p99 {v['p99_ms']:.1f} ms leaves {v['headroom_p99_ms']:.1f} ms "
                        f"of the {budget} budget; {100 * v['over_budget_fraction']:.1f} % of calls over")
    elif v["p50_ms"] <= v["budget_ms"]:
        v["verdict"] = "median only"
        v["summary"] = (f"holds {fps} at the median only: p50 {v['p50_ms']:.1f} ms, but "
                        f"{100 * v['over_budget_fraction']:.1f} % of calls exceed the {budget} "
                        f"budget (p99 {v['p99_ms']:.1f} ms)")
    else:
        v["verdict"] = "no"
        v["summary"] = (f"does not hold {fps}: p50 {v['p50_ms']:.1f} ms is over the {budget} budget "
                        f"(about {v['max_fps_p50']:.0f} fps at the median)")
    return v


def pipeline_video_rate(work_ms, intervals_ms, ages_ms, dropped: int, frames: int,
                        target_fps: float) -> dict:
    """Pipeline mode: did the live pipeline hold `target_fps` (the camera's rate)?

    `work_ms`: the inference thread's work per frame (preprocess + audio + visual), which bounds
    the rate; `intervals_ms`: render-to-render intervals after the warm-up (the measured fps is
    their count over their sum); `ages_ms`: capture-to-render frame ages; `dropped` of
    `frames + dropped` frames were skipped over the whole run."""
    v = _work_vs_budget(work_ms, target_fps)
    v["basis"] = "work per frame on the inference thread: preprocess + audio + visual"
    iv = np.asarray(intervals_ms, dtype=np.float64).ravel()
    ages = np.asarray(ages_ms, dtype=np.float64).ravel()
    fps = 1000.0 * iv.size / iv.sum() if iv.size and iv.sum() > 0 else 0.0
    late = int(np.count_nonzero(iv > LATE_INTERVAL * v["budget_ms"]))
    iv50, iv99 = (float(np.percentile(iv, q)) for q in (50, 99)) if iv.size else (None, None)
    v.update(
        fps=fps, fps_ratio=fps / target_fps,
        frame_interval_p50_ms=iv50, frame_interval_p99_ms=iv99,
        frame_interval_max_ms=float(iv.max()) if iv.size else None,
        interval_jitter_ms=iv99 - iv50 if iv.size else None,
        late_intervals=late, late_interval_fraction=late / iv.size if iv.size else None,
        dropped_fraction=dropped / (frames + dropped) if frames + dropped else 0.0,
        age_over_budget_fraction=float(np.mean(ages > v["budget_ms"])) if ages.size else None)
    fps_s, budget = f"{target_fps:g} fps", f"{v['budget_ms']:.1f} ms"
    held = fps >= RATE_HELD * target_fps
    if held and v["p99_ms"] <= v["budget_ms"]:
        v["verdict"] = "holds"
        v["summary"] = (f"holds {fps_s} ({fps:.1f} measured): work per frame p99 {v['p99_ms']:.1f} ms "
                        f"leaves {v['headroom_p99_ms']:.1f} ms of the {budget} budget")
    elif held:
        v["verdict"] = "held, tail over budget"
        v["summary"] = (f"held {fps_s} ({fps:.1f} measured) but without headroom: "
                        f"{100 * v['over_budget_fraction']:.1f} % of frames took more than the "
                        f"{budget} budget (work p99 {v['p99_ms']:.1f} ms)")
    else:
        v["verdict"] = "no"
        v["summary"] = (f"does not hold {fps_s}: {fps:.1f} fps measured, work per frame p50 "
                        f"{v['p50_ms']:.1f} ms / p99 {v['p99_ms']:.1f} ms against the {budget} budget, "
                        f"{100 * v['dropped_fraction']:.1f} % of frames dropped")
    return v


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
def _write_atomic(path: str, text: str) -> None:
    from ..atomic import write_text
    write_text(path, text)


def save_report(report: dict, path: str) -> None:
    validate_report(report)
    _write_atomic(path, json.dumps(report, indent=1, sort_keys=False) + "\n")


def save_markdown(report: dict, path: str) -> None:
    _write_atomic(path, to_markdown(report))


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


# ---- markdown ------------------------------------------------------------------------------
def _fmt(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (int, str)):
        return str(x)
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.0f}"


def _pct(x, digits=0) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _threads(n) -> str:
    return "" if not n else f", {n} thread{'s' if n != 1 else ''}"


def _warmup_text(report: dict) -> str:
    settings = report["settings"]
    if report["mode"] == "pipeline":
        frames = {b.get("pipeline", {}).get("warmup_frames") for b in report["backends"].values()}
        n = next(iter(frames)) if len(frames) == 1 else None
        warm = settings.get("warmup_s")
        first = f"the first {warm:g} s" if isinstance(warm, (int, float)) else "the warm-up"
        return first + (f" ({n} frames)" if n is not None else "") + " left out"
    return f"{_fmt(settings.get('warmup'))} untimed warm-up calls first"


def _video_rate_lines(report: dict) -> list[str]:
    rates = {n: b["video_rate"] for n, b in report["backends"].items() if b.get("video_rate")}
    if not rates:
        return []
    first = next(iter(rates.values()))
    lines = [f"## Video rate: {_fmt(first['target_fps'], 1)} fps, a budget of "
             f"{_fmt(first['budget_ms'])} ms per frame", ""]
    if report["mode"] == "pipeline":
        lines += ["| backend | fps after warm-up | of target | frame interval p50 / p99 / max, ms "
                  "| late intervals | dropped (whole run) | work per frame p50 / p99, ms "
                  "| headroom at p99, ms | frames over budget | frame age over budget | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in rates.items():
            lines.append(
                f"| {name} | {_fmt(v['fps'], 1)} | {_pct(v['fps_ratio'])} | "
                f"{_fmt(v['frame_interval_p50_ms'], 1)} / {_fmt(v['frame_interval_p99_ms'], 1)} / "
                f"{_fmt(v['frame_interval_max_ms'], 1)} | {_pct(v['late_interval_fraction'], 1)} | "
                f"{_pct(v['dropped_fraction'], 1)} | {_fmt(v['p50_ms'])} / {_fmt(v['p99_ms'])} | "
                f"{_fmt(v['headroom_p99_ms'])} | {_pct(v['over_budget_fraction'], 1)} | "
                f"{_pct(v['age_over_budget_fraction'], 1)} | {v['verdict']} |")
        lines += ["", f"Work per frame = {first['basis'].split(': ', 1)[-1]} (the inference "
                  "thread's time, which bounds the rate); late intervals: render-to-render gaps "
                  f"over {LATE_INTERVAL:g} budgets (a missed frame); frame age over budget: "
                  "frames shown more than one frame period after capture."]
    else:
        lines += ["| backend | p50 | p99 | headroom at p50 | headroom at p99 | calls over budget "
                  "| jitter (p99 - p50) | std | calls/s at p50 / p99 | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in rates.items():
            lines.append(
                f"| {name} | {_fmt(v['p50_ms'])} | {_fmt(v['p99_ms'])} | "
                f"{_fmt(v['headroom_p50_ms'])} | {_fmt(v['headroom_p99_ms'])} | "
                f"{v['over_budget']} of {v['samples']} ({_pct(v['over_budget_fraction'], 1)}) | "
                f"{_fmt(v['jitter_ms'])} | {_fmt(v['std_ms'])} | "
                f"{_fmt(v['max_fps_p50'], 1)} / {_fmt(v['max_fps_p99'], 1)} | {v['verdict']} |")
        lines += ["", "Times in ms; the basis is the whole call (both branches) on every frame. "
                  "The live pipeline runs the visual branch on every frame and the audio branch "
                  "once per audio hop, so a frame usually costs less (see the branch rows)."]
    lines += [""] + [f"- **{name}**: {v['summary']}" for name, v in rates.items()] + [""]
    return lines


def to_markdown(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    pipeline = report["mode"] == "pipeline"
    what = "capture-to-render frame age" if pipeline else "one forward pass"
    unit = "frames" if pipeline else "timed calls"
    lines = [f"# jsa-rt {report['mode']} profile: {report['machine']}, preset "
             f"`{settings.get('preset', '?')}`", "",
             f"{report['created']}; {env.get('cpu', '?')} ({env.get('cores', '?')} cores"
             f"{_threads(settings.get('threads'))}); "
             f"GPU: {env.get('gpu') or 'none'}; "
             f"torch {env.get('versions', {}).get('torch', '-')}, onnxruntime "
             f"{env.get('versions', {}).get('onnxruntime', '-')}.", "",
             f"Other processes used **{_fmt(env.get('other_cpu_cores'))} cores** on average "
             f"during the run (1-min load average {_fmt((env.get('load_average') or [None])[0])} "
             f"at start, {_fmt((env.get('load_average_end') or [None])[0])} at end): anything "
             "well above 0 means a shared CPU, and the tails and thread scaling suffer first.", ""]
    peak = report.get("peak")
    if peak:
        lines += [f"Measured fp32 matmul peak: **{_fmt(peak['fp32_gflops'], 1)} GFLOP/s** "
                  f"({peak.get('method', '')}).", ""]

    lines += _video_rate_lines(report)
    lines += [f"## Total ({what}), ms", "",
              f"Percentiles over the `samples` {unit} (numpy, linear interpolation; "
              f"{_warmup_text(report)}).", "",
              "| backend | device | precision | threads | min | p50 | p90 | p95 | p99 | max | mean "
              "| std | samples |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in report["backends"].items():
        t = b["total"]
        lines.append(f"| {name} | {b.get('device', '-')} | {_fmt(b.get('precision'))} | "
                     f"{_fmt(b.get('threads'))} | " + " | ".join(
                         _fmt(t[k]) for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                              "max_ms", "mean_ms", "std_ms"))
                     + f" | {t['samples']} |")
    lines.append("")
    if report.get("skipped"):
        lines += ["Not measured:", ""]
        lines += [f"- **{name}**: {why}" for name, why in report["skipped"].items()] + [""]

    for name, b in report["backends"].items():
        if not b["stages"]:
            continue
        flops = b.get("flops", {}).get("stages", {})
        order = stack_order(b)
        parts = sum(b["stages"][s]["mean_ms"] for s in order) if order else 0.0
        total_mean = b["total"]["mean_ms"]
        lines += [f"## Stages, {name} ({b.get('device', '-')}), ms", "",
                  "| stage | p50 | p95 | p99 | max | mean | % of stage sum | % of total mean "
                  "| GFLOP | GFLOP/s at p50 | % of peak |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for stage, s in b["stages"].items():
            of_sum = s["mean_ms"] / parts if stage in order and parts > 0 else None
            of_total = s["mean_ms"] / total_mean if total_mean > 0 else None
            gflop = flops.get(stage, {}).get("gflop")
            rate = flops.get(stage, {}).get("gflops_per_s")
            of_peak = flops.get(stage, {}).get("fraction_of_peak")
            lines.append(f"| {stage} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} | "
                         f"{_fmt(s['p99_ms'])} | {_fmt(s['max_ms'])} | {_fmt(s['mean_ms'])} | "
                         f"{_pct(of_sum)} | {_pct(of_total)} | "
                         f"{_fmt(gflop, 3)} | {_fmt(rate, 1)} | "
                         f"{'-' if of_peak is None else f'{100 * of_peak:.1f}'} |")
        if order:
            lines.append(f"| **sum of stages** ({' + '.join(order)}) | | | | | {_fmt(parts)} | "
                         f"100 % | {_pct(parts / total_mean if total_mean > 0 else None)} "
                         "| | | |")
        whole = b.get("flops", {}).get("total")
        if whole:
            lines.append(f"| **whole call (total)** | {_fmt(b['total']['p50_ms'])} | "
                         f"{_fmt(b['total']['p95_ms'])} | {_fmt(b['total']['p99_ms'])} | "
                         f"{_fmt(b['total']['max_ms'])} | {_fmt(total_mean)} | | 100 % | "
                         f"{_fmt(whole['gflop'], 3)} | {_fmt(whole['gflops_per_s'], 1)} | "
                         f"{_fmt(None if whole['fraction_of_peak'] is None else 100 * whole['fraction_of_peak'], 1)} |")
        lines.append("")
        summed = b.get("stage_sum")
        if summed:
            lines += [f"The stages add up to {_fmt(summed['mean_ms'])} ms, the total's mean is "
                      f"{_fmt(summed['total_mean_ms'])} ms "
                      f"({_pct(summed['ratio'])}): {summed['why']}.", ""]
        if b.get("description") or b.get("timer"):
            lines += [f"Backend: {b.get('description', name)}; timing: {b.get('timer', '-')}.", ""]
        if b.get("notes"):
            lines += [f"- {n}" for n in b["notes"]] + [""]

    pipes = {n: b["pipeline"] for n, b in report["backends"].items() if b.get("pipeline")}
    if pipes:
        keys = sorted({k for p in pipes.values() for k in p})
        lines += ["## Pipeline counters", "", "| backend | " + " | ".join(keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        for name, p in pipes.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(p.get(k)) for k in keys) + " |")
        lines.append("")
    if report.get("notes"):
        lines += [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


# ---- comparison ----------------------------------------------------------------------------
COMPARED = ("p50_ms", "p95_ms", "p99_ms", "mean_ms")


def compare(a: dict, b: dict) -> list[dict]:
    """Rows {backend, stage, metric, a, b, ratio = b / a} for everything both reports measured."""
    rows = []
    for name in a["backends"]:
        if name not in b["backends"]:
            continue
        ea, eb = a["backends"][name], b["backends"][name]
        pairs = [("total", ea["total"], eb["total"])]
        pairs += [(s, ea["stages"][s], eb["stages"][s]) for s in ea["stages"] if s in eb["stages"]]
        for stage, sa, sb in pairs:
            for metric in COMPARED:
                ratio = sb[metric] / sa[metric] if sa[metric] > 0 else float("inf")
                rows.append(dict(backend=name, stage=stage, metric=metric, a=sa[metric],
                                 b=sb[metric], ratio=ratio))
    return rows


def format_compare(rows: list[dict], a_name: str, b_name: str) -> str:
    if not rows:
        return "the two reports share no backend: nothing to compare"
    out = [f"ratio = B / A   (A = {a_name}, B = {b_name}; above 1 means B is slower)",
           f"{'backend':<14} {'stage':<16} " + " ".join(f"{m:>22}" for m in COMPARED)]
    keyed = {}
    for r in rows:
        keyed.setdefault((r["backend"], r["stage"]), {})[r["metric"]] = r
    for (backend, stage), by_metric in keyed.items():
        cells = [f"{by_metric[m]['a']:7.2f}->{by_metric[m]['b']:7.2f} x{by_metric[m]['ratio']:4.2f}"
                 for m in COMPARED]
        out.append(f"{backend:<14} {stage:<16} " + " ".join(f"{c:>22}" for c in cells))
    return "\n".join(out)


# ---- guards (--fail-if) --------------------------------------------------------------------
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_GUARD = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


def parse_guard(text: str) -> tuple[list[str], str, str, float]:
    """'[BACKEND.][STAGE.]METRIC OP NUMBER' -> (selectors, metric, op, value).

    METRIC is a statistic (p95_ms, max_ms, ...), a pipeline counter (fps, dropped_frames, ...),
    a video-rate figure (headroom_p99_ms, over_budget_fraction, jitter_ms, ...),
    `gflops_per_s`, or, with --compare, a ratio such as p95_ratio (B / A).
    """
    m = _GUARD.match(text)
    if not m:
        raise InputError(f"--fail-if {text!r} is not 'METRIC>NUMBER' (e.g. 'p95_ms>50', "
                         "'torch.visual_branch.p99_ms>20', 'fps<25', 'p95_ratio>1.1')")
    path, op, value = m.groups()
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"--fail-if {text!r}: {value!r} is not a number") from None
    *selectors, metric = path.split(".")
    return selectors, metric, op, number


def _match_selectors(selectors, backends: dict, stage_names) -> tuple[list[str], str]:
    """Split selectors into (backend names, stage); the stage defaults to 'total'."""
    names, stage = list(backends), "total"
    for sel in selectors:
        if sel in backends:
            names = [sel]
        elif sel in stage_names or sel == "total":
            stage = sel
        else:
            raise InputError(f"--fail-if: {sel!r} is neither a measured backend "
                             f"({', '.join(backends) or 'none'}) nor a stage "
                             f"({', '.join(sorted(stage_names)) or 'none'})")
    return names, stage


def _metric_value(entry: dict, stage: str, metric: str):
    stats = entry["total"] if stage == "total" else entry["stages"].get(stage)
    if stats is not None and metric in stats:
        return stats[metric]
    if metric in entry.get("pipeline", {}):
        return entry["pipeline"][metric]
    if stage == "total" and metric in (entry.get("video_rate") or {}):
        return entry["video_rate"][metric]        # headroom_p99_ms, over_budget_fraction, ...
    flops = entry.get("flops", {})
    block = flops.get("total") if stage == "total" else flops.get("stages", {}).get(stage)
    if block and metric in block:
        return block[metric]
    return None


def check_guards(guards: list[str], report: dict, baseline: dict | None = None) -> list[str]:
    """Evaluate --fail-if expressions; return one line per violated guard (empty: all passed).

    With `baseline`, a metric named like `p95_ratio` is report / baseline of `p95_ms`.
    """
    failures = []
    for text in guards:
        selectors, metric, op, limit = parse_guard(text)
        stage_names = {s for e in report["backends"].values() for s in e["stages"]}
        names, stage = _match_selectors(selectors, report["backends"], stage_names)
        ratio_of = None
        if metric.endswith("_ratio"):
            if baseline is None:
                raise InputError(f"--fail-if {text!r}: a ratio needs --compare A.json B.json")
            ratio_of = metric[: -len("_ratio")] + "_ms"
        checked = 0
        for name in names:
            if ratio_of:
                if name not in baseline["backends"]:
                    continue
                now = _metric_value(report["backends"][name], stage, ratio_of)
                before = _metric_value(baseline["backends"][name], stage, ratio_of)
                value = None if now is None or before is None else now / before
            else:
                value = _metric_value(report["backends"][name], stage, metric)
            if value is None:
                continue
            checked += 1
            if _OPS[op](value, limit):
                failures.append(f"FAIL {text}: {name} {stage} {metric} = {value:.4g}")
        if checked == 0:
            old = not any(e.get("video_rate") for e in report["backends"].values())
            hint = ("; this report predates the video-rate figures (headroom, over budget, "
                    "jitter): regenerate it with tools/profile.py") if old else ""
            raise InputError(f"--fail-if {text!r}: no measured backend has {metric!r} "
                             f"for {stage!r}; check the name against the report{hint}")
    return failures


# ---- inputs and timing shared by the model profilers ---------------------------------------------
def synthetic_inputs(cfg, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random RGB frame and a noise waveform of the model's input sizes."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(cfg.num_samples)).astype(np.float32)
    return frame, audio


def time_host(fn, warmup: int, iterations: int) -> list[float]:
    """Latency of a call that returns host (numpy) results, so it has finished on return."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples
