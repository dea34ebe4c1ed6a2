"""PNG figure of a profile report: latency CDF per backend, and stacked per-stage bars.

matplotlib is imported lazily with the Agg backend (no display needed).
"""
from __future__ import annotations

import numpy as np

from .profiling import STACK_ORDERS


def save_plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cdf, ax_bar) = plt.subplots(1, 2, figsize=(12, 4.5))
    _cdf(ax_cdf, report)
    _stacked_stages(ax_bar, report)
    fig.suptitle(f"jsa-rt {report['mode']} profile, {report['machine']}, "
                 f"preset {report['settings'].get('preset', '?')}")
    fig.tight_layout()
    from ..atomic import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _cdf(ax, report: dict) -> None:
    for name, entry in report["backends"].items():
        samples = np.sort(np.asarray(entry["raw_ms"]["total"], dtype=float))
        fraction = np.arange(1, samples.size + 1) / samples.size
        ax.step(samples, fraction, where="post", label=f"{name} (p50 {entry['total']['p50_ms']:.2f})")
    for q in (0.5, 0.95, 0.99):
        ax.axhline(q, color="grey", lw=0.5, ls=":")
    what = "frame age (capture to render)" if report["mode"] == "pipeline" else "forward pass"
    ax.set_xscale("log")
    ax.set_xlabel(f"{what}, ms (log)")
    ax.set_ylabel("fraction of samples")
    ax.set_title("latency CDF, all samples")
    ax.legend(fontsize=8, loc="lower right")


def _stack_order(report: dict, entry: dict) -> tuple[str, ...]:
    """The stages that partition this backend's work: the first complete set it reports."""
    for order in STACK_ORDERS:
        if all(s in entry["stages"] for s in order):
            return order
    return ()


def _stacked_stages(ax, report: dict) -> None:
    names = [n for n, e in report["backends"].items() if _stack_order(report, e)]
    if not names:
        ax.text(0.5, 0.5, "no per-stage timings", ha="center", va="center")
        ax.set_axis_off()
        return
    stages = []
    for n in names:
        stages += [s for s in _stack_order(report, report["backends"][n]) if s not in stages]
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for stage, colour in zip(stages, matplotlib_colours(len(stages))):
        heights = np.array([report["backends"][n]["stages"].get(stage, {}).get("mean_ms", 0.0)
                            if stage in _stack_order(report, report["backends"][n]) else 0.0
                            for n in names])
        if heights.any():
            ax.bar(x, heights, bottom=bottom, label=stage, color=colour)
            bottom += heights
    totals = [report["backends"][n]["total"]["mean_ms"] for n in names]
    ax.scatter(x, totals, marker="_", s=600, color="black", zorder=3, label="total mean")
    ax.set_xticks(x, names)
    ax.set_ylabel("mean, ms")
    ax.set_title("per-stage mean, stacked (means add up; p50s do not)")
    ax.legend(fontsize=8)


def matplotlib_colours(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
