"""Evaluation metrics for sound source localisation, exactly as the field computes them.

numpy only (OpenCV for resizing a map that is not already 224x224). See method.md section 7.

- cIoU (EZ-VSL / LVS code): the map is min-max normalised at 224x224 and binarised at
  `threshold`: "median" = the value at index N//2 of the sorted map (EZ-VSL's "top half",
  compared with `>=`), or a fixed number (JSA's scripts use 0.6, also `>=`).
  cIoU = sum(P*G) / (sum(G) + sum(P*[G==0])).
- Ground truth: Flickr-SoundNet sums every annotator's box (coordinates x224/256, truncated to
  int), halves the sum and clips at 1 (a consensus map of 0, 0.5, 1); VGG-SS (and our scenes)
  takes the binary union of its boxes (normalised coordinates clipped to [0,1], x224, truncated).
- cIoU@0.5 = fraction of samples with cIoU >= 0.5; AUC = trapezoid area of the success rate
  over thresholds 0, 0.05, ..., 1.0.
- Pointing game: the map's peak (first argmax) falls on a pixel with G > 0.
- AVSBench: mIoU with the map binarised at 0.5 (a frame with an empty mask scores the IoU of the
  empty prediction, as AVSBench's `mask_iou`); F-score = max over 255 thresholds
  (linspace(0, 1-1e-10)) of the mean F_beta, beta^2 = 0.3, frames with empty masks skipped.
- Retrieval: cosine of the L2-normalised target slots; a query's rank counts every candidate
  scoring at least as high as the true pair (ties count against the model, so a constant
  embedding scores chance, not 100 %).
- Multi-source ("pair") scenes: one frame with several objects of sounding classes, written once
  per object with that object's sound (the scenes of one "group"). A group *follows* when every
  soundtrack puts the peak on its own object (pointing hit on each scene). Its chance level is
  the probability that independent uniform peaks all hit: the product of the sounding boxes'
  area fractions. A map that never moves follows only where the boxes overlap (0 when they are
  disjoint). *Wrong object*: the peak misses the sounding object but lands on another candidate.
- Uncertainty: Wilson 95 % intervals for success fractions; two models on the same samples are
  compared with a paired bootstrap of their per-sample scores (`jsa-rt compare`).
- False-alarm rate: the fraction of no-source scenes whose confidence is >= the threshold
  (eval passes the model's `no_source_confidence`, 0.3 for the shipped models); detection rate:
  the same over scenes with a visible source.
"""
from __future__ import annotations

import numpy as np

EVAL_SIZE = 224
AUC_THRESHOLDS = np.array([0.05 * i for i in range(21)])
SIZE_BUCKETS = (("small", 0.0, 0.25), ("medium", 0.25, 0.5), ("large", 0.5, 1.01))


# ---- maps -----------------------------------------------------------------------------------------
def normalize_map(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def eval_map(m: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """A model map at evaluation resolution: bicubic to size x size, then min-max normalised."""
    m = np.asarray(m, dtype=np.float32)
    if m.shape != (size, size):
        import cv2
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    return normalize_map(m)


def binarize(m: np.ndarray, threshold: str | float = "median") -> np.ndarray:
    if threshold == "median":
        flat = np.sort(m, axis=None)
        thr = flat[flat.size // 2]
    else:
        thr = float(threshold)
    return (m >= thr).astype(np.float64)


# ---- ground truth -----------------------------------------------------------------------------------
def gt_map_flickr(boxes_256: list, size: int = EVAL_SIZE) -> np.ndarray:
    """Flickr-SoundNet consensus: boxes in 256x256 pixel coordinates, one per annotator."""
    gt = np.zeros((size, size))
    for box in boxes_256:
        x0, y0, x1, y1 = (int(size * int(v) / 256) for v in box)
        temp = np.zeros((size, size))
        temp[y0:y1, x0:x1] = 1
        gt += temp
    gt /= 2
    gt[gt > 1] = 1
    return gt


def gt_map_vggss(boxes_norm: list, size: int = EVAL_SIZE) -> np.ndarray:
    """VGG-SS: binary union of boxes given as [x0, y0, x1, y1] in [0, 1]."""
    gt = np.zeros((size, size))
    for box in boxes_norm:
        x0, y0, x1, y1 = (np.clip(np.asarray(box, dtype=np.float64), 0, 1) * size).astype(int)
        gt[y0:y1, x0:x1] = 1
    return gt


# ---- localisation ---------------------------------------------------------------------------------------
def ciou(pred_map: np.ndarray, gt: np.ndarray, threshold: str | float = "median") -> float:
    p = binarize(pred_map, threshold)
    return float(np.sum(p * gt) / (np.sum(gt) + np.sum(p * (gt == 0))))


def success_curve(cious) -> np.ndarray:
    c = np.asarray(cious, dtype=np.float64)
    return np.array([(c >= t).mean() for t in AUC_THRESHOLDS]) if c.size else np.zeros(len(AUC_THRESHOLDS))


def ciou50_auc(cious) -> tuple[float, float]:
    """(fraction with cIoU >= 0.5, AUC of the success curve) as fractions in [0, 1]."""
    c = np.asarray(cious, dtype=np.float64)
    if c.size == 0:
        return float("nan"), float("nan")
    curve = success_curve(c)
    auc = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(AUC_THRESHOLDS)))
    return float((c >= 0.5).mean()), auc


def per_sample_auc(cious) -> np.ndarray:
    """Each sample's share of the AUC: the trapezoid area of its own 0/1 success curve. Their mean
    is `ciou50_auc`'s AUC (the trapezoid rule is linear), so two models' AUCs can be compared
    sample by sample."""
    c = np.asarray(cious, dtype=np.float64)
    success = (c[:, None] >= AUC_THRESHOLDS[None, :]).astype(np.float64)
    return np.sum((success[:, 1:] + success[:, :-1]) / 2 * np.diff(AUC_THRESHOLDS), axis=1)


def peak(pred_map: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's first maximum."""
    y, x = np.unravel_index(int(np.argmax(pred_map)), np.shape(pred_map))
    return int(y), int(x)


def pointing_hit(pred_map: np.ndarray, gt: np.ndarray) -> bool:
    return bool(gt[peak(pred_map)] > 0)


def size_bucket(gt: np.ndarray) -> str:
    """small / medium / large by the fraction of the frame the ground truth covers."""
    area = float((gt > 0).mean())
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= area < hi:
            return name
    return SIZE_BUCKETS[-1][0]


# ---- multi-source ("pair") scenes: one frame, one scene per sounding object ----------------------------
def _by_group(groups, values) -> dict:
    """{group: [values of its scenes]} for groups with at least two scenes (one scene cannot show
    whether the map follows the sound); scenes without a group (None or "") are left out."""
    out: dict = {}
    for g, v in zip(groups, values):
        if g not in (None, ""):
            out.setdefault(g, []).append(v)
    return {g: v for g, v in out.items() if len(v) >= 2}


def follows_by_group(groups, hits) -> dict:
    """{group: True when every scene of the group has its peak on its own object} from each scene's
    group and pointing hit."""
    return {g: all(map(bool, scene_hits)) for g, scene_hits in _by_group(groups, hits).items()}


def follows_chance_by_group(groups, areas) -> dict:
    """{group: probability that independent uniformly random peaks follow}: the product over its
    scenes of the sounding object's area fraction (of the union of its boxes, as `gt_area`)."""
    return {g: float(np.prod(a)) for g, a in _by_group(groups, areas).items()}


def static_follows_by_group(groups, gts) -> dict:
    """{group: whether a map that never moves could follow}: one pixel on every scene's object,
    i.e. the sounding objects overlap. False for disjoint boxes, so such a map scores 0."""
    return {g: bool(np.logical_and.reduce([np.asarray(m) > 0 for m in ms]).any())
            for g, ms in _by_group(groups, gts).items()}


def wrong_object_hit(pred_map: np.ndarray, gt: np.ndarray, other_boxes: list) -> bool:
    """The peak misses the sounding object (`gt`) but lands on another candidate object's box
    (normalised [x0, y0, x1, y1]): the map found an object, the wrong one."""
    return bool(other_boxes) and not pointing_hit(pred_map, gt) and pointing_hit(pred_map, gt_map_vggss(other_boxes))


# ---- AVSBench ------------------------------------------------------------------------------------------
def mask_iou(pred_map: np.ndarray, mask: np.ndarray, threshold: float = 0.5, eps: float = 1e-7) -> float:
    """AVSBench's per-frame Jaccard; an empty mask scores how empty the prediction is."""
    p = np.asarray(pred_map) > threshold
    g = np.asarray(mask) > 0
    if not g.any():
        return float((~p).sum() / (p.size + eps))
    return float((p & g).sum() / ((p | g).sum() + eps))


def fscore_curve(pred_map: np.ndarray, mask: np.ndarray, beta2: float = 0.3, num: int = 255) -> np.ndarray | None:
    """F_beta at each of `num` thresholds linspace(0, 1-1e-10); None for an empty mask (skipped)."""
    g = np.asarray(mask) > 0
    if not g.any():
        return None
    m = np.asarray(pred_map, dtype=np.float64).ravel()
    g = g.ravel()
    thresholds = np.linspace(0, 1 - 1e-10, num)
    pred = m[None] >= thresholds[:, None]                   # (num, pixels)
    tp = (pred & g[None]).sum(axis=1)
    prec = tp / (pred.sum(axis=1) + 1e-20)
    rec = tp / (g.sum() + 1e-20)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
    return np.nan_to_num(f, nan=0.0)


def avsbench_miou(maps, masks, threshold: float = 0.5) -> float:
    """maps, masks: sequences of (H, W); maps in [0, 1], masks binary."""
    return float(np.mean([mask_iou(m, g, threshold) for m, g in zip(maps, masks)]))


def avsbench_fscore(maps, masks, beta2: float = 0.3, num: int = 255) -> float:
    """Max over thresholds of the mean F_beta over frames with a non-empty mask."""
    curves = [c for c in (fscore_curve(m, g, beta2, num) for m, g in zip(maps, masks)) if c is not None]
    return float(np.mean(curves, axis=0).max()) if curves else float("nan")


# ---- retrieval and confidence ------------------------------------------------------------------------------
def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_ranks(audio_slots: np.ndarray, image_slots: np.ndarray, labels: list | None = None) -> dict:
    """0-based rank of each query's first correct item, audio->image ("a2i") and image->audio ("i2a").
    Row i of each is a pair. Without `labels` the correct item is the pair, and every candidate
    scoring at least as high counts ahead of it; with `labels` it is any item of the query's label
    (candidates in descending score order, ties in index order)."""
    a, v = _l2(audio_slots), _l2(image_slots)
    sim = a @ v.T                                       # sim[i, j] = <audio i, image j>
    out = {}
    for name, s in (("a2i", sim), ("i2a", sim.T)):
        if labels is None:
            rank = (s >= np.diag(s)[:, None]).sum(axis=1) - 1         # minus itself
            scored = np.isfinite(np.diag(s))
        else:
            lab = np.asarray(labels)
            order = np.argsort(-s, axis=1, kind="stable")             # NaN candidates sort last
            rank = np.argmax(lab[order] == lab[:, None], axis=1)      # the query's own pair always matches
            scored = np.isfinite(s).any(axis=1)                       # the query's own embedding is finite
        # a non-finite embedding (a diverged model) retrieves nothing: last place, never a hit
        out[name] = np.where(scored, rank, s.shape[1] - 1)
    return out


def retrieval_recall(audio_slots: np.ndarray, image_slots: np.ndarray, ks=(1, 5, 10),
                     labels: list | None = None) -> dict:
    """Recall@k for audio->image ("a2i") and image->audio ("i2a"); row i of each is a pair.
    With `labels`, a hit is any retrieved item of the query's label (class-level retrieval)."""
    return recall_at(retrieval_ranks(audio_slots, image_slots, labels), ks)


def recall_at(ranks: dict, ks=(1, 5, 10)) -> dict:
    """{"a2i": ranks, ...} -> {"a2i": {"r1": ..., "r5": ..., "r10": ..., "n": ...}, ...}"""
    return {name: {**{f"r{k}": float((np.asarray(r) < k).mean()) for k in ks}, "n": int(np.size(r))}
            for name, r in ranks.items()}


# ---- uncertainty --------------------------------------------------------------------------------------------
def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % (z = 1.96) Wilson score interval of a success fraction; sane at 0 or n hits, unlike
    the normal approximation. None when n = 0."""
    if n <= 0:
        return None
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n hits one bound is exactly 0 or 1; say so rather than 1 - 1e-16
    return (0.0 if hits == 0 else float(centre - half)), (1.0 if hits == n else float(centre + half))


def paired_bootstrap(a, b, resamples: int = 10000, seed: int = 0) -> dict:
    """Mean of per-sample scores a - b (same samples, same order) with a 95 % percentile
    interval from resampling the samples; `p_le_0` is the bootstrap fraction with a - b <= 0
    (how often B is at least as good). Scores can be hits (0/1) or any per-sample value."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired samples")
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, d.size, size=(min(1000, resamples - start), d.size))].mean(axis=1)
                            for start in range(0, resamples, 1000)])         # in chunks: bounded memory
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi),
            "p_le_0": float((means <= 0).mean()), "n": int(d.size)}


def false_alarm_rate(confidence, no_source, threshold: float = 0.5) -> float | None:
    c, ns = np.asarray(confidence, dtype=np.float64), np.asarray(no_source, dtype=bool)
    return float((c[ns] >= threshold).mean()) if ns.any() else None


def detection_rate(confidence, no_source, threshold: float = 0.5) -> float | None:
    c, ns = np.asarray(confidence, dtype=np.float64), np.asarray(no_source, dtype=bool)
    return float((c[~ns] >= threshold).mean()) if (~ns).any() else None


def confidence_auroc(confidence, no_source) -> float | None:
    """Probability that a source scene gets a higher confidence than a no-source one (ties 1/2)."""
    c, ns = np.asarray(confidence, dtype=np.float64), np.asarray(no_source, dtype=bool)
    pos, neg = c[~ns], c[ns]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)
