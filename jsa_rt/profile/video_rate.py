"""Will a backend hold a video rate? Per-frame work against the frame budget (1000 / fps ms).

`video_rate` blocks of a report (see report.py): headroom at p50 / p99, the fraction of samples
over the budget, jitter (p99 - p50), and a verdict with a one-line summary. Model mode judges one
whole call per frame (`model_video_rate`); pipeline mode judges what the live pipeline did at the
camera's rate (`pipeline_video_rate`). Needs numpy only.
"""
from __future__ import annotations

import numpy as np

# the frame rate a report is judged against when none is given (pipeline mode: the camera's rate)
DEFAULT_TARGET_FPS = 30.0
# pipeline mode: a rate within 5 % of the target counts as held (file pacing and clock jitter)
RATE_HELD = 0.95
# pipeline mode: a render-to-render interval this many budgets long means a frame was missed
LATE_INTERVAL = 1.5


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


def _judge(v: dict, cases) -> dict:
    """Set the block's `verdict` and `summary` from the first (holds, verdict, template) case
    that holds; the last case is the fallback. Only the chosen template is filled (a figure
    another case names may be None), from the block's figures plus `rate` ("30 fps"), `budget`
    ("33.3 ms") and the fractions as percentages (`over_pct`, `dropped_pct`)."""
    figures = dict(v, rate=f"{v['target_fps']:g} fps", budget=f"{v['budget_ms']:.1f} ms",
                   over_pct=100 * v["over_budget_fraction"],
                   dropped_pct=100 * v.get("dropped_fraction", 0.0))
    *tested, (_, verdict, template) = cases
    for holds, case_verdict, case_template in tested:
        if holds:
            verdict, template = case_verdict, case_template
            break
    v["verdict"], v["summary"] = verdict, template.format(**figures)
    return v


def model_video_rate(total_ms, target_fps: float = DEFAULT_TARGET_FPS) -> dict:
    """Model mode: can one whole call (both branches) per frame keep up with `target_fps`?"""
    v = _work_vs_budget(total_ms, target_fps)
    v["basis"] = "total: one whole call (audio + visual branch) per frame"
    return _judge(v, [
        (v["p99_ms"] <= v["budget_ms"], "holds",
         "holds {rate}: p99 {p99_ms:.1f} ms leaves {headroom_p99_ms:.1f} ms of the {budget} "
         "budget; {over_pct:.1f} % of calls over"),
        (v["p50_ms"] <= v["budget_ms"], "median only",
         "holds {rate} at the median only: p50 {p50_ms:.1f} ms, but {over_pct:.1f} % of calls "
         "exceed the {budget} budget (p99 {p99_ms:.1f} ms)"),
        (True, "no",
         "does not hold {rate}: p50 {p50_ms:.1f} ms is over the {budget} budget "
         "(about {max_fps_p50:.0f} fps at the median)")])


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
    held = fps >= RATE_HELD * target_fps
    return _judge(v, [
        (held and v["p99_ms"] <= v["budget_ms"], "holds",
         "holds {rate} ({fps:.1f} measured): work per frame p99 {p99_ms:.1f} ms leaves "
         "{headroom_p99_ms:.1f} ms of the {budget} budget"),
        (held, "held, tail over budget",
         "held {rate} ({fps:.1f} measured) but without headroom: {over_pct:.1f} % of frames "
         "took more than the {budget} budget (work p99 {p99_ms:.1f} ms)"),
        (True, "no",
         "does not hold {rate}: {fps:.1f} fps measured, work per frame p50 {p50_ms:.1f} ms / "
         "p99 {p99_ms:.1f} ms against the {budget} budget, {dropped_pct:.1f} % of frames "
         "dropped")])
