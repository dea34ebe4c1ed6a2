"""Judging reports: report B against report A (`--compare`), and the `--fail-if` guards.

A guard is '[BACKEND.][STAGE.]METRIC OP NUMBER' on one report, or with a baseline a ratio such as
`p95_ratio>1.1` (B / A of p95_ms). Errors in a guard are InputError (one line).
"""
from __future__ import annotations

import operator
import re

from ..errors import InputError

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
    `gflops_per_s`, a figure against the reference backend (`p50_speedup`, `max_abs_diff`),
    or, with --compare, a ratio such as p95_ratio (B / A).
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
    if stage == "total" and metric in ("p50_speedup", "max_abs_diff"):
        return (entry.get("vs_reference") or {}).get(metric)    # model mode, against torch
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
