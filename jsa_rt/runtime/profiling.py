"""Latency reports: statistics, the report schema, markdown, comparisons and guards.

Every speed claim of jsa-rt is a report made here. A report is one JSON document:

    {"schema": "jsa-rt-profile/1", "mode": "model" | "pipeline", "created": ISO time,
     "machine": "cpu-2core-x86_64", "environment": {...}, "settings": {...},
     "peak": {"fp32_gflops": ..., ...} (model mode),
     "backends": {NAME: {"device": ..., "total": STATS, "stages": {STAGE: STATS},
                         "raw_ms": {"total": [...], "stages": {STAGE: [...]}},
                         "flops": {...}, "pipeline": {...}}},   # the last two per mode
     "skipped": {NAME: "why it was not measured"}}

STATS = {"samples": n, "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms",
"std_ms"} (`samples` is the count; the samples themselves are in `raw_ms`): plain numpy percentiles (linear interpolation) over every sample, no outlier clipping,
because the tail is what a live system feels. In pipeline mode `total` is the capture-to-render
frame age. This module needs numpy only (no torch, no matplotlib).
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
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
    other processes used during the run, profiling_env.CpuContention) and the load average."""
    env = report["environment"]
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


def to_markdown(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    what = "capture-to-render frame age" if report["mode"] == "pipeline" else "one forward pass"
    lines = [f"# jsa-rt {report['mode']} profile: {report['machine']}, preset "
             f"`{settings.get('preset', '?')}`", "",
             f"{report['created']}; {env.get('cpu', '?')} ({env.get('cores', '?')} cores"
             f"{', %s threads' % settings['threads'] if settings.get('threads') else ''}); "
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

    lines += [f"## Total ({what}), ms", "",
              "| backend | device | min | p50 | p90 | p95 | p99 | max | mean | samples | fps at p50 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in report["backends"].items():
        t = b["total"]
        fps = 1000.0 / t["p50_ms"] if t["p50_ms"] > 0 else float("nan")
        lines.append(f"| {name} | {b.get('device', '-')} | " + " | ".join(
            _fmt(t[k]) for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
                                 "mean_ms")) + f" | {t['samples']} | {_fmt(fps, 1)} |")
    lines.append("")
    if report.get("skipped"):
        lines += ["Not measured:", ""]
        lines += [f"- **{name}**: {why}" for name, why in report["skipped"].items()] + [""]

    for name, b in report["backends"].items():
        if not b["stages"]:
            continue
        flops = b.get("flops", {}).get("stages", {})
        lines += [f"## Stages, {name} ({b.get('device', '-')}), ms", "",
                  "| stage | p50 | p95 | p99 | max | mean | share of mean total | GFLOP | GFLOP/s at p50 | % of peak |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for stage, s in b["stages"].items():
            share = s["mean_ms"] / b["total"]["mean_ms"] if b["total"]["mean_ms"] > 0 else None
            gflop = flops.get(stage, {}).get("gflop")
            rate = flops.get(stage, {}).get("gflops_per_s")
            of_peak = flops.get(stage, {}).get("fraction_of_peak")
            lines.append(f"| {stage} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} | "
                         f"{_fmt(s['p99_ms'])} | {_fmt(s['max_ms'])} | {_fmt(s['mean_ms'])} | "
                         f"{'-' if share is None else f'{100 * share:.0f} %'} | "
                         f"{_fmt(gflop, 3)} | {_fmt(rate, 1)} | "
                         f"{'-' if of_peak is None else f'{100 * of_peak:.1f}'} |")
        whole = b.get("flops", {}).get("total")
        if whole:
            lines.append(f"| **whole call (total)** | {_fmt(b['total']['p50_ms'])} | | | | "
                         f"{_fmt(b['total']['mean_ms'])} | 100 % | "
                         f"{_fmt(whole['gflop'], 3)} | {_fmt(whole['gflops_per_s'], 1)} | "
                         f"{100 * whole['fraction_of_peak']:.1f} |")
        lines.append("")
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
            raise InputError(f"--fail-if {text!r}: no measured backend has {metric!r} "
                             f"for {stage!r}; check the name against the report")
    return failures
