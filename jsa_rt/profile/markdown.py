"""A report as markdown: the video-rate verdicts, the totals, the stages of each backend.

What `jsa-rt profile` prints and writes beside the JSON (`save_markdown`). Reads reports only.
"""
from __future__ import annotations

import math

from ..atomic import write_text
from .report import stack_order
from .video_rate import LATE_INTERVAL


def save_markdown(report: dict, path: str) -> None:
    write_text(path, to_markdown(report))


def _fmt(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (int, str)):
        return str(x)
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.0f}"


def _pct(x, digits=0) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _fmt_small(x) -> str:
    return "-" if x is None else f"{x:.2e}"


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


def _reference_lines(report: dict) -> list[str]:
    """Model mode: each backend's speedup over the reference and how far its maps are from it."""
    vs = {n: b["vs_reference"] for n, b in report["backends"].items() if b.get("vs_reference")}
    if not vs:
        return []
    ref = next(iter(vs.values()))["reference"]
    lines = [f"## Against {ref} (same inputs)", "",
             f"| backend | speedup at p50 ({ref} p50 / p50) | max abs diff, all maps | largest in |",
             "|---|---|---|---|"]
    for name, v in vs.items():
        by_output = v.get("max_abs_diff_by_output") or {}
        worst = max(by_output, key=by_output.get) if by_output else None
        lines.append(f"| {name} | x{_fmt(v['p50_speedup'])} | {_fmt_small(v.get('max_abs_diff'))} | "
                     f"{worst or '-'} |")
    return lines + ["", "Max abs diff: the largest difference of any output (heatmap, maps, slots, "
                    "confidence) from one call on the same inputs; '-' where a backend is not "
                    "called through the runtime interface.", ""]



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
    lines += _reference_lines(report)
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
