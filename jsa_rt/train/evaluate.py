"""The evaluation loop behind `jsa-rt eval` (eval_cli.py) and training's validation: run
`model.localize(images, wave)` in batches over a dataset (datasets.py layouts), score every sample
with metrics.py, and sum up: localisation, retrieval, false alarms, pairs, breakdowns by size and
scene condition. The files it leads to are written by eval_report.py.
"""
from __future__ import annotations


import numpy as np

from ..audio_io import camera_frames
from ..errors import DeviceError
from . import metrics
from .datasets import AVDataset, collate
from .progress import progress_bar


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
    """The composed scenes' recorded conditions (scene_compose.py), bucketed for a breakdown of the
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


def _numpy(x) -> np.ndarray:
    """A model's output as float32 numpy: torch tensors from checkpoints, arrays from deployed graphs."""
    return x.float().cpu().numpy() if hasattr(x, "cpu") else np.asarray(x, dtype=np.float32)


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
            heat = _numpy(out["heatmap"])
            other_alphas = _iqr_heatmaps(model, out, alpha, object_prior)
            conf = _numpy(out["confidence"])
            a_slot, v_slot = _numpy(out["audio_slot"]), _numpy(out["image_slot"])
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
                    examples.append({"image": camera_frames(batch["image"][j, None].numpy())[0], "map": m, "gt": gt, "row": row,
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


def torch_device(requested: str | None) -> str:
    """'auto' or None -> cuda when torch sees a GPU, else cpu; 'cuda' without one is a one-line error."""
    import torch
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("torch sees no CUDA GPU: use --device cpu (or check the driver with nvidia-smi)")
    return requested
