"""`jsa-rt eval`: localisation, retrieval and false-alarm metrics for any checkpoint.

Runs `model.localize(images, wave)` in batches over a dataset (datasets.py layouts), scores
every sample with metrics.py, and writes:
- OUT.json: the summary (keys `n`, `ciou50`, `auc`, `pointing`, `false_alarm`, `retrieval`,
  `by_size`, ... as fractions in [0, 1]; `n` = samples with a box or mask that were scored),
- OUT.csv: one row per sample, OUT.md: a markdown table (x100, as papers report),
- OUT.png: a grid of maps over images with the ground truth outlined.
The last three go to --out-dir (default: beside OUT.json).

Multi-source ("pair") splits, whose scenes carry a `group` (one frame written once per sounding
object), add `pairs` to the JSON (`follows`: share of frames where every soundtrack puts the peak
on its own object, `chance`, `never_moves`, `wrong_object`, ... see `pair_summary`), `ci95.follows`
and `ci95.wrong_object`, the CSV columns `group`, `follows` (the frame's, on each of its rows,
for `jsa-rt compare`) and `wrong_object`, and OUT_pairs.png: a few frames once per sound.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..args import non_negative_int, positive_int
from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..errors import DeviceError, InputError
from . import metrics
from .datasets import FORMATS, AVDataset, collate, guess_format, open_dataset
from .progress import progress_bar


def _threshold(text: str) -> str | float:
    if text == "median":
        return "median"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use 'median' or a number such as 0.6") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a fixed threshold lies in [0, 1]")
    return value


def _finite(x):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else x


def _group(rows: list[dict]) -> dict:
    c50, auc = metrics.ciou50_auc([r["ciou"] for r in rows])
    return {"n": len(rows), "ciou50": _finite(c50), "auc": _finite(auc),
            "pointing": _finite(float(np.mean([r["pointing"] for r in rows])) if rows else float("nan"))}


# factor -> its levels, in reading order
CONDITIONS = {"background": ("photo", "photo_crop", "texture", "synthetic"),
              "distractors": ("0", "1", "2", "3+"),
              "offscreen": ("no", "yes"),
              "snr": ("clean", ">=20 dB", "10-20 dB", "<10 dB")}


def scene_conditions(meta: dict) -> dict:
    """The composed scenes' recorded conditions (scenes.py), bucketed for a breakdown of the
    metrics: what the model struggles with. Empty for datasets without them (VGG-SS, Flickr)."""
    if "background" not in meta:
        return {}
    audio = meta.get("audio") or {}
    distractors = len(meta.get("distractor_boxes") or [])
    snr = audio.get("snr_db")
    return {"background": str(meta["background"]).split(":")[0],      # photo | photo_crop | texture | synthetic
            "distractors": str(distractors) if distractors < 3 else "3+",
            "offscreen": "yes" if "offscreen_db" in audio else "no",
            "snr": "clean" if snr is None else ">=20 dB" if snr >= 20 else "10-20 dB" if snr >= 10 else "<10 dB"}


# method.md 5.4: the IQR weight is 0.4 in the released scripts and 0.6 in the paper; report both
IQR_ALPHAS = (0.4, 0.6)


def other_candidate_boxes(sample) -> list:
    """Boxes of the frame's other sounding-class objects: the candidates that are not the sounding
    one (neither its class nor one of its boxes)."""
    own = [list(map(float, b)) for b in sample.boxes]
    return [c["box"] for c in sample.meta.get("candidates") or []
            if c["class"] != sample.label and c["box"] not in own]


def _picture_groups(samples, count: int = 6) -> set:
    """`count` groups spread over the split, for the pair picture."""
    sizes: dict = {}
    for s in samples:
        if s.meta.get("group") is not None:
            sizes[s.meta["group"]] = sizes.get(s.meta["group"], 0) + 1
    groups = [g for g, n in sizes.items() if n >= 2]
    if not groups or not count:
        return set()
    return {groups[i] for i in np.linspace(0, len(groups) - 1, min(count, len(groups))).astype(int)}


def _iqr_heatmaps(model, out: dict, alpha_used: float | None, object_prior) -> dict:
    """{alpha: heatmaps} for the IQR weights not already in out["heatmap"] (JSA with IQR only:
    EZ-VSL has one map, and OGL fuses another)."""
    if getattr(model, "kind", None) != "jsa" or object_prior is not None:
        return {}
    used = model.cfg.iqr_alpha if alpha_used is None else alpha_used
    from ..model.maps import fuse
    return {a: fuse(out["aud"], out["img"], a, model.cfg.image_size, model.upsample_matrix).float().cpu().numpy()
            for a in IQR_ALPHAS if a != used}


def evaluate(model, dataset: AVDataset, batch_size: int = 16, threshold: str | float = "median",
             alpha: float | None = None, fa_threshold: float | None = None, device: str = "cpu",
             workers: int = 0, grid: int = 16, progress: bool = True,
             object_prior=None) -> tuple[dict, list[dict], list[dict]]:
    """-> (summary, per-sample rows, examples for the picture grid)."""
    import torch
    if fa_threshold is None:      # the model's own "no source" gate
        fa_threshold = model.cfg.no_source_confidence
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    show = set(np.linspace(0, len(dataset) - 1, min(grid, len(dataset))).astype(int).tolist()) if grid else set()
    pictured = _picture_groups(dataset.samples) if grid else set()
    pair_gts = {}                                  # id -> sounding object mask, scenes of a group
    rows, examples, errors = [], [], []
    slots_a, slots_v, slot_labels, retrieval_rows = [], [], [], []
    confidence, no_source = [], []
    mask_iou, f_sum, f_frames = [], None, 0
    bar = progress_bar(len(loader), "eval", "batch", enabled=progress)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            bar.update(1)
            errors += batch["errors"]
            if "image" not in batch:
                continue
            out = model.localize(batch["image"].to(device), batch["audio"].to(device), alpha=alpha,
                                 **({"object_prior": object_prior} if object_prior is not None else {}))
            heat = out["heatmap"].float().cpu().numpy()
            other_alphas = _iqr_heatmaps(model, out, alpha, object_prior)
            conf = out["confidence"].float().cpu().numpy()
            a_slot, v_slot = out["audio_slot"].float().cpu().numpy(), out["image_slot"].float().cpu().numpy()
            for j in range(heat.shape[0]):
                idx, sample = int(batch["index"][j]), dataset.samples[int(batch["index"][j])]
                ns, has_gt = bool(batch["no_source"][j]), bool(batch["has_gt"][j])
                gt = batch["gt"][j].numpy().astype(np.float64)
                m = metrics.eval_map(heat[j])
                row = {"id": sample.id, "label": sample.label, "no_source": ns, "confidence": float(conf[j]),
                       "ciou": None, "pointing": None, "size": None, "gt_area": None,
                       **scene_conditions(sample.meta)}
                group = sample.meta.get("group")
                if group is not None:
                    row.update(group=group, scene_kind=sample.meta.get("kind"))
                if has_gt and gt.any():
                    row.update(ciou=metrics.ciou(m, gt, threshold), pointing=metrics.pointing_hit(m, gt),
                               size=metrics.size_bucket(gt), gt_area=float((gt > 0).mean()))
                    if sample.meta.get("candidates"):
                        row["wrong_object"] = metrics.wrong_object_hit(m, gt, other_candidate_boxes(sample))
                    if group is not None:
                        pair_gts[sample.id] = gt > 0
                    for a, maps in other_alphas.items():
                        other = metrics.eval_map(maps[j])
                        row[f"ciou_iqr{a}"] = metrics.ciou(other, gt, threshold)
                        row[f"pointing_iqr{a}"] = metrics.pointing_hit(other, gt)
                if sample.gt_kind == "mask":
                    row["miou"] = metrics.mask_iou(m, gt)
                    mask_iou.append(row["miou"])
                    curve = metrics.fscore_curve(m, gt)
                    if curve is not None:
                        f_sum = curve if f_sum is None else f_sum + curve
                        f_frames += 1
                rows.append(row)
                confidence.append(float(conf[j]))
                no_source.append(ns)
                if not ns:
                    retrieval_rows.append(row)
                    slots_a.append(a_slot[j])
                    slots_v.append(v_slot[j])
                    slot_labels.append(sample.label)
                if idx in show or group in pictured:
                    examples.append({"image": _denormalise(batch["image"][j].numpy()), "map": m, "gt": gt, "row": row,
                                     "grid": idx in show, "group": group if group in pictured else None,
                                     "others": other_candidate_boxes(sample)})
    bar.close()

    scored = [r for r in rows if r["ciou"] is not None]
    summary = {"n": len(scored), **{k: v for k, v in _group(scored).items() if k != "n"}}
    summary["threshold"] = threshold
    summary["alpha"] = alpha if alpha is not None else getattr(getattr(model, "cfg", None), "iqr_alpha", None)
    if scored and any(f"ciou_iqr{a}" in scored[0] for a in IQR_ALPHAS):      # both IQR weights, one pass
        summary["iqr_alphas"] = {
            str(a): _group(scored) if f"ciou_iqr{a}" not in scored[0] else
            _group([{"ciou": r[f"ciou_iqr{a}"], "pointing": r[f"pointing_iqr{a}"]} for r in scored])
            for a in IQR_ALPHAS}
    summary["n_read"] = len(rows)
    summary["n_no_source"] = int(sum(no_source))
    summary["skipped"] = len(errors) + len(dataset.missing)
    summary["skipped_items"] = [{"id": i, "reason": r} for i, r in list(dataset.missing) + errors]
    summary["false_alarm"] = metrics.false_alarm_rate(confidence, no_source, fa_threshold)
    summary["detection_rate"] = metrics.detection_rate(confidence, no_source, fa_threshold)
    summary["confidence_auroc"] = metrics.confidence_auroc(confidence, no_source)
    summary["fa_threshold"] = fa_threshold
    summary["retrieval"] = None
    if len(slots_a) >= 2:
        a, v = np.stack(slots_a), np.stack(slots_v)
        kinds = {"retrieval": ("", None)}                  # instance level, and class level when labelled
        if any(slot_labels):
            kinds["retrieval_class"] = ("class_", slot_labels)
        for key, (prefix, labels) in kinds.items():
            ranks = metrics.retrieval_ranks(a, v, labels)
            summary[key] = metrics.recall_at(ranks)
            for direction, rank in ranks.items():   # per-sample ranks: paired comparisons need them
                for row, r in zip(retrieval_rows, rank):
                    row[f"{prefix}rank_{direction}"] = int(r)
    pairs = [r for r in scored if r.get("group") is not None]
    if pairs:
        follows = metrics.follows_by_group([r["group"] for r in pairs], [r["pointing"] for r in pairs])
        for r in pairs:                     # the frame's result on each of its rows: compare pairs on it
            r["follows"] = follows.get(r["group"])
        summary["pairs"] = pair_summary(pairs, pair_gts)
    summary["ci95"] = _intervals(scored, retrieval_rows)
    summary["by_size"] = {name: _group([r for r in scored if r["size"] == name]) for name, _, _ in metrics.SIZE_BUCKETS}
    by_condition = {factor: {level: _group([r for r in scored if r.get(factor) == level])
                             for level in levels if any(r.get(factor) == level for r in scored)}
                    for factor, levels in CONDITIONS.items()}
    summary["by_condition"] = {f: levels for f, levels in by_condition.items() if levels}
    if mask_iou:
        summary["avsbench"] = {"miou": float(np.mean(mask_iou)),
                               "fscore": float((f_sum / f_frames).max()) if f_frames else None,
                               "frames": len(mask_iou)}
    return summary, rows, examples


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _follows_by_frame(rows: list[dict]) -> dict:
    """{group: follows} from the rows' per-frame column (groups with one scored scene have none)."""
    return {r["group"]: bool(r["follows"]) for r in rows if r.get("follows") is not None}


def _pair_stats(rows: list[dict], gts: dict) -> dict:
    groups = [r["group"] for r in rows]
    return {"groups": len(_follows_by_frame(rows)), "scenes": len(rows),
            "follows": _mean(_follows_by_frame(rows).values()),
            "chance": _mean(metrics.follows_chance_by_group(groups, [r["gt_area"] for r in rows]).values()),
            "never_moves": _mean(metrics.static_follows_by_group(groups, [gts[r["id"]] for r in rows]).values()),
            "wrong_object": _mean(r["wrong_object"] for r in rows if "wrong_object" in r)}


def pair_summary(rows: list[dict], gts: dict) -> dict:
    """Multi-source scenes (rows with a `group` and their frame's `follows`; `gts`: id -> mask):
    `follows` = share of frames (`groups`, those with >= 2 scored scenes) where every soundtrack
    put the peak on its own object; `chance` = the same for independent uniformly random peaks;
    `never_moves` = the best a map that never moves can do (frames whose sounding objects
    overlap; 0 when disjoint); `wrong_object` = share of scenes whose peak missed the sounding
    object but hit another candidate. Also `by_kind` (cutout, mosaic, coco, ...) when recorded."""
    out = _pair_stats(rows, gts)
    kinds = sorted({r["scene_kind"] for r in rows if r.get("scene_kind")})
    if kinds:
        out["by_kind"] = {k: _pair_stats([r for r in rows if r.get("scene_kind") == k], gts) for k in kinds}
    return out


def _intervals(scored: list[dict], retrieval_rows: list[dict]) -> dict:
    """Wilson 95 % intervals of the success fractions: how far the sample count lets a number move."""
    def interval(hits):
        ci = metrics.wilson_interval(int(sum(hits)), len(hits))
        return list(ci) if ci else None
    out = {"ciou50": interval([r["ciou"] >= 0.5 for r in scored]),
           "pointing": interval([bool(r["pointing"]) for r in scored])}
    for direction in ("a2i", "i2a"):
        out[f"r1_{direction}"] = interval([r[f"rank_{direction}"] == 0 for r in retrieval_rows
                                           if f"rank_{direction}" in r])
    if any(r.get("group") is not None for r in scored):
        out["follows"] = interval(list(_follows_by_frame(scored).values()))      # frames, not scenes
        out["wrong_object"] = interval([bool(r["wrong_object"]) for r in scored
                                        if r.get("group") is not None and "wrong_object" in r])
    return out


def _denormalise(image: np.ndarray) -> np.ndarray:
    rgb = image.transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


# ---- outputs ----------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    from ..atomic import write_text
    write_text(path, text)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = ["id", "label", "no_source", "confidence", "ciou", "pointing", "size", "gt_area",
            *(c for c in CONDITIONS if any(c in r for r in rows))]
    keys += sorted({k for r in rows for k in r} - set(keys))
    from ..atomic import atomic_path
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
    from ..atomic import atomic_path
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


def torch_device(requested: str | None) -> str:
    """'auto' or None -> cuda when torch sees a GPU, else cpu; 'cuda' without one is a one-line error."""
    import torch
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("torch sees no CUDA GPU: use --device cpu (or check the driver with nvidia-smi)")
    return requested


# ---- CLI ------------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="cIoU/AUC, pointing, retrieval, false alarms of a checkpoint on a dataset",
                              description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="edge-jsa", help="checkpoint .pt or shipped name (default edge-jsa)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default="test", help="split for scenes/avsbench (default test)")
    p.add_argument("--annotations", type=Path, default=None,
                   help="VGG-SS JSON / Flickr id list / scenes annotation file (overrides --split)")
    p.add_argument("--format", choices=FORMATS, default=None, help="data layout (default: guessed from the folder)")
    p.add_argument("--threshold", type=_threshold, default="median",
                   help="cIoU binarisation: 'median' (EZ-VSL, default) or a fixed value such as 0.6 (JSA scripts)")
    p.add_argument("--alpha", type=float, default=None, help="IQR weight of the audio map (default: the model's; 0.4 official scripts, 0.6 paper)")
    p.add_argument("--fa-threshold", type=float, default=None,
                   help="confidence above which a no-source scene is a false alarm (default: the model's "
                        "no_source_confidence, 0.3, chosen on val)")
    p.add_argument("--ogl", default=None, metavar="RESNET18_PTH",
                   help="OGL instead of IQR: fuse the audio map with the object map of this ImageNet "
                        "ResNet-18 (torchvision's resnet18-f37072fd.pth)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--workers", type=non_negative_int, default=0, help="data loading processes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="cpu | cuda | auto")
    p.add_argument("--limit", type=non_negative_int, default=0, help="evaluate only the first N samples (quick look)")
    p.add_argument("--grid", type=non_negative_int, default=16, help="examples in the PNG grid (0: none)")
    p.add_argument("--json", required=True, type=Path, help="summary JSON to write")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for the CSV, markdown and PNG (default: beside --json)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import torch
    from ..model.checkpoint import load_checkpoint
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    device = torch_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=device)
    fmt = args.format or guess_format(args.data, args.annotations)
    dataset = open_dataset(fmt, args.data, meta["config"], args.split, args.annotations)
    if args.limit:
        dataset.samples = dataset.samples[:args.limit]
    for sample_id, reason in dataset.missing:
        print(f"skipped {sample_id}: {reason}", file=sys.stderr)
    started = time.monotonic()
    prior = None
    if getattr(args, "ogl", None):
        from ..model.ogl import ObjectPrior
        prior = ObjectPrior(args.ogl).to(device)
    summary, rows, examples = evaluate(model, dataset, args.batch_size, args.threshold, args.alpha,
                                       args.fa_threshold, device, args.workers, args.grid, not args.quiet,
                                       object_prior=prior)
    summary["fusion"] = "ogl" if prior is not None else "iqr"
    for item in summary["skipped_items"][len(dataset.missing):]:
        print(f"skipped {item['id']}: {item['reason']}", file=sys.stderr)
    summary.update(checkpoint=str(args.checkpoint), kind=meta["kind"], preset=meta["config"].preset,
                   data=str(args.data), format=fmt, split=args.split if not args.annotations else str(args.annotations),
                   seconds=round(time.monotonic() - started, 1))
    if summary["n"] == 0 and not summary["n_read"]:     # nothing to report: write no result files
        raise InputError(f"no sample of {args.data} could be read ({summary['skipped']} skipped); see the messages above")
    out_dir = args.out_dir or args.json.parent
    stem = args.json.stem
    _atomic_write(args.json, json.dumps(summary, indent=1))
    write_csv(out_dir / f"{stem}.csv", rows)
    title = f"{meta['kind']} ({meta['config'].preset}) on {args.data.name} / {summary['split']}"
    _atomic_write(out_dir / f"{stem}.md", markdown_table(summary, title))
    write_grid(out_dir / f"{stem}.png", [e for e in examples if e["grid"]])
    pairs = summary.get("pairs")
    if pairs:
        write_pairs(out_dir / f"{stem}_pairs.png", [e for e in examples if e["group"] is not None])

    def pct(x, key=None):
        ci = summary["ci95"].get(key) if key else None
        text = "n/a" if x is None else f"{100 * x:.1f}"
        return f"{text} [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]" if ci and x is not None else text
    ret = summary["retrieval"] or {"a2i": {"r1": None}, "i2a": {"r1": None}}
    print(f"evaluated {summary['n']} samples ({summary['n_read']} read, {summary['skipped']} skipped): "
          f"cIoU@0.5 {pct(summary['ciou50'], 'ciou50')}, AUC {pct(summary['auc'])}, "
          f"pointing {pct(summary['pointing'], 'pointing')}, R@1 a2i {pct(ret['a2i']['r1'], 'r1_a2i')} "
          f"i2a {pct(ret['i2a']['r1'], 'r1_i2a')}, false alarm {pct(summary['false_alarm'])} "
          f"(brackets: 95 % intervals); wrote {args.json} and {stem}.csv/.md/.png in {out_dir}; "
          f"next: jsa-rt compare {out_dir / f'{stem}.csv'} OTHER.csv (another model on the same split)")
    if pairs:
        print(f"pair scenes: follows {pct(pairs['follows'], 'follows')} of {pairs['groups']} frames (chance "
              f"{pct(pairs['chance'])}, a map that never moves {pct(pairs['never_moves'])}); peak on another "
              f"object {pct(pairs['wrong_object'], 'wrong_object')} of {pairs['scenes']} scenes"
              + (f"; wrote {stem}_pairs.png" if args.grid else ""))
    return 0
