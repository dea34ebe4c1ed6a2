"""PNG figure of a profile report: latency CDF per backend against the frame budget, and
stacked per-stage bars.

matplotlib is imported lazily with the Agg backend (no display needed).
"""
from __future__ import annotations

import math

import numpy as np

from .report import stack_order


def figure(report: dict):
    """The report's figure (matplotlib Figure): CDF with the frame budget, stacked stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cdf, ax_bar) = plt.subplots(1, 2, figsize=(12, 4.8))
    _cdf(ax_cdf, report)
    _stacked_stages(ax_bar, report)
    fig.suptitle(f"jsa-rt {report['mode']} profile, {report['machine']}, "
                 f"preset {report['settings'].get('preset', '?')}")
    fig.tight_layout()
    return fig


def save_plot(report: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path
    fig = figure(report)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def _cdf(ax, report: dict) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    budget = None
    for name, entry in report["backends"].items():
        samples = np.sort(np.asarray(entry["raw_ms"]["total"], dtype=float))
        fraction = np.arange(1, samples.size + 1) / samples.size
        t = entry["total"]
        label = f"{name}: p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms"
        rate = entry.get("video_rate")
        if rate:
            budget = rate["budget_ms"], rate["target_fps"]
            over = rate.get("age_over_budget_fraction") if report["mode"] == "pipeline" \
                else rate["over_budget_fraction"]      # the curve's own samples against the budget
            if over is not None:
                label += f", {100 * over:.1f} % over budget"
        ax.step(samples, fraction, where="post", label=label)
    if budget:
        ax.axvline(budget[0], color="red", lw=1.2, ls="--",
                   label=f"frame budget {budget[0]:.1f} ms ({budget[1]:g} fps)")
    for q in (0.5, 0.95, 0.99):
        ax.axhline(q, color="grey", lw=0.5, ls=":")
    what = "frame age (capture to render)" if report["mode"] == "pipeline" else "forward pass"
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()            # plain ticks at 1-2-3-5 steps: 20, 30, 50, not 2x10^1
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 3, 5) if lo <= m * 10.0 ** e <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{what}, ms (log scale)")
    ax.set_ylabel("fraction of samples")
    counts = [e["total"]["samples"] for e in report["backends"].values()]
    n = f"{counts[0]}" if len(set(counts)) == 1 else "/".join(map(str, counts))
    ax.set_title(f"latency CDF, {n} timed samples{' each' if len(counts) > 1 else ''} "
                 "(warm-up excluded)")
    ax.legend(fontsize=7, loc="best")


def _stacked_stages(ax, report: dict) -> None:
    names = [n for n, e in report["backends"].items() if stack_order(e)]
    if not names:
        ax.text(0.5, 0.5, "no per-stage timings", ha="center", va="center")
        ax.set_axis_off()
        return
    stages = []
    for n in names:
        stages += [s for s in stack_order(report["backends"][n]) if s not in stages]
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for stage, colour in zip(stages, matplotlib_colours(len(stages))):
        heights = np.array([report["backends"][n]["stages"].get(stage, {}).get("mean_ms", 0.0)
                            if stage in stack_order(report["backends"][n]) else 0.0
                            for n in names])
        if heights.any():
            ax.bar(x, heights, bottom=bottom, label=stage, color=colour)
            bottom += heights
    totals = [report["backends"][n]["total"]["mean_ms"] for n in names]
    ax.scatter(x, totals, marker="_", s=600, color="black", zorder=3, label="total mean")
    budgets = {e["video_rate"]["budget_ms"] for e in report["backends"].values() if e.get("video_rate")}
    if len(budgets) == 1 and max(max(totals), bottom.max()) > 0.3 * next(iter(budgets)):
        ax.axhline(next(iter(budgets)), color="red", lw=1.2, ls="--", label="frame budget")
    ax.set_xticks(x, names)
    ax.set_ylabel("mean, ms")
    ax.set_title("per-stage mean, stacked (means add up; p50s do not)")
    ax.legend(fontsize=7)


def matplotlib_colours(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
