"""The files `jsa-rt eval` writes beside its JSON: the per-sample CSV, the markdown table and
the PNG pictures (a grid of maps, and the pair frames once per sound).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from . import metrics
from .evaluate import CONDITIONS


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = ["id", "label", "no_source", "confidence", "ciou", "pointing", "size", "gt_area",
            *(c for c in CONDITIONS if any(c in r for r in rows))]
    keys += sorted({k for r in rows for k in r} - set(keys))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in keys})


def markdown_table(summary: dict, title: str) -> str:
    def pct(x):
        return "—" if x is None else f"{100 * x:.2f}"
    lines = [f"### {title}", "", "| metric | value |", "|---|---|",
             f"| samples scored / read / skipped | {summary['n']} / {summary['n_read']} / {summary['skipped']} |",
             f"| cIoU@0.5 (threshold {summary['threshold']}) | {pct(summary['ciou50'])} |",
             f"| AUC | {pct(summary['auc'])} |",
             f"| pointing game | {pct(summary['pointing'])} |"]
    for a, g in (summary.get("iqr_alphas") or {}).items():
        lines.append(f"| IQR weight {a}: cIoU@0.5 / AUC / pointing | {pct(g['ciou50'])} / {pct(g['auc'])} / {pct(g['pointing'])} |")
    ret = summary.get("retrieval")
    if ret:
        for d in ("a2i", "i2a"):
            lines.append(f"| retrieval {d} R@1 / R@5 / R@10 | {pct(ret[d]['r1'])} / {pct(ret[d]['r5'])} / {pct(ret[d]['r10'])} |")
    lines.append(f"| false alarm (conf >= {summary['fa_threshold']}, {summary['n_no_source']} no-source) | {pct(summary['false_alarm'])} |")
    lines.append(f"| detection rate (source scenes) | {pct(summary['detection_rate'])} |")
    if "avsbench" in summary:
        lines.append(f"| AVSBench mIoU / F-score | {pct(summary['avsbench']['miou'])} / {pct(summary['avsbench']['fscore'])} |")
    pairs = summary.get("pairs")
    if pairs:
        lines.append(f"| follows: every sound's peak on its own object ({pairs['groups']} frames) / chance / "
                     f"a map that never moves | {pct(pairs['follows'])} / {pct(pairs['chance'])} / {pct(pairs['never_moves'])} |")
        lines.append(f"| peak on another candidate object ({pairs['scenes']} scenes) | {pct(pairs['wrong_object'])} |")
        for kind, g in (pairs.get("by_kind") or {}).items():
            lines.append(f"| {kind} frames (n={g['groups']}): follows / chance / another object | "
                         f"{pct(g['follows'])} / {pct(g['chance'])} / {pct(g['wrong_object'])} |")
    ci = summary.get("ci95") or {}
    if ci:
        lines.append("| 95 % intervals (Wilson): " + ", ".join(k for k, v in ci.items() if v) + " | "
                     + ", ".join(f"{pct(v[0])}-{pct(v[1])}" for v in ci.values() if v) + " |")
    for name, g in summary["by_size"].items():
        lines.append(f"| {name} targets (n={g['n']}): cIoU@0.5 / AUC / pointing | "
                     f"{pct(g['ciou50'])} / {pct(g['auc'])} / {pct(g['pointing'])} |")
    for factor, levels in summary.get("by_condition", {}).items():
        for level, g in levels.items():
            lines.append(f"| {factor} = {level} (n={g['n']}): cIoU@0.5 / AUC / pointing | "
                         f"{pct(g['ciou50'])} / {pct(g['auc'])} / {pct(g['pointing'])} |")
    return "\n".join(lines) + "\n"


def _figure(rows: int, cols: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _draw(ax, ex: dict, title: str) -> None:
    """The frame at evaluation size, the map over it, the ground truth outlined in white."""
    import cv2
    image = cv2.resize(ex["image"], (metrics.EVAL_SIZE,) * 2, interpolation=cv2.INTER_AREA)
    ax.imshow(image)
    ax.imshow(ex["map"], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.autoscale(False)                                # boxes drawn later keep the frame's extent
    if ex["gt"].any():
        ax.contour(ex["gt"] > 0, levels=[0.5], colors="white", linewidths=1.5)
    ax.set_title(title, fontsize=8)


def write_grid(path: Path, examples: list[dict]) -> None:
    if not examples:
        return
    cols = min(4, len(examples))
    fig, axes = _figure((len(examples) + cols - 1) // cols, cols)
    for ax, ex in zip(axes.ravel(), examples):
        r = ex["row"]
        score = "no source" if r["no_source"] else (f"cIoU {r['ciou']:.2f}" if r["ciou"] is not None else "")
        _draw(ax, ex, f"{r['id'][:18]}\n{score} conf {r['confidence']:.2f}")
    _save(fig, path)


def write_pairs(path: Path, examples: list[dict]) -> None:
    """One row per frame (group), its scenes side by side: each sound's map, the sounding object
    outlined in white, the other candidates dashed grey, the peak green on the object, else red."""
    frames: dict = {}
    for ex in examples:
        frames.setdefault(ex["group"], []).append(ex)
    if not frames:
        return
    fig, axes = _figure(len(frames), max(len(scenes) for scenes in frames.values()))
    size = metrics.EVAL_SIZE
    for ax_row, (group, scenes) in zip(axes, frames.items()):
        follows = scenes[0]["row"].get("follows")
        for ax, ex in zip(ax_row, scenes):
            r = ex["row"]
            where = ("no box" if r["pointing"] is None else "on its object" if r["pointing"]
                     else "on another object" if r.get("wrong_object") else "off")
            _draw(ax, ex, f"{group[:14]} ({'follows' if follows else 'does not follow'})\n"
                          f"sound {r['label'][:16]}: peak {where}")
            for x0, y0, x1, y1 in ex["others"]:
                ax.plot(np.array([x0, x1, x1, x0, x0]) * size, np.array([y0, y0, y1, y1, y0]) * size,
                        "--", color="lightgrey", linewidth=1)
            y, x = metrics.peak(ex["map"])
            ax.plot(x, y, "x" if not r["pointing"] else "o", color="lime" if r["pointing"] else "red",
                    markersize=9, markeredgewidth=2, fillstyle="none")
    _save(fig, path)
