"""`jsa-rt compare A.csv B.csv`: is model A better than model B on the same samples, or is the
difference within what the sample count allows?

Reads two per-sample CSVs written by `jsa-rt eval` on the same split, pairs their rows by id,
and for each metric prints both values, the difference A - B with a 95 % paired-bootstrap
interval, and a verdict: "A" or "B" when the interval excludes 0, "tie (n.s.)" otherwise.
Metrics: cIoU@0.5, AUC, pointing game (samples with a box), retrieval R@1 in both directions,
instance and class level (samples with a visible source), and on multi-source ("pair") splits
`follows`, paired and resampled by frame (the CSV's `group`, whose rows all carry the frame's
result). Writes JSON with --json.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ..args import at_least, non_negative_int
from ..errors import InputError
from . import metrics


def read_rows(path: Path) -> dict[str, dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}; pass the .csv that `jsa-rt eval` wrote beside its JSON") from None
    except (UnicodeDecodeError, csv.Error):
        raise InputError(f"{path} is not a text CSV; pass the per-sample .csv that `jsa-rt eval` wrote beside its JSON") from None
    if not rows or "id" not in rows[0] or "ciou" not in rows[0]:
        raise InputError(f"{path} is not a per-sample CSV of `jsa-rt eval` (no id/ciou columns)")
    by_id = {r["id"]: r for r in rows}
    if len(by_id) != len(rows):
        raise InputError(f"{path} has {len(rows) - len(by_id)} repeated sample ids: pairing by id needs unique ids")
    return by_id


def _per_sample(rows: list[dict], name: str) -> list[float | None]:
    """One metric's per-sample score (None where it does not apply)."""
    def number(text):
        return None if text in ("", None) else float(text)
    if name in ("ciou50", "auc"):
        c = [number(r["ciou"]) for r in rows]
        if name == "ciou50":
            return [None if x is None else float(x >= 0.5) for x in c]
        return [None if x is None else float(metrics.per_sample_auc([x])[0]) for x in c]
    if name == "pointing":
        return [None if r["pointing"] == "" else float(r["pointing"] == "True") for r in rows]
    rank = [number(r.get(name)) for r in rows]          # rank_a2i, class_rank_i2a, ...
    return [None if x is None else float(x == 0) for x in rank]


def _per_group(a_rows: list[dict], b_rows: list[dict], column: str) -> list[tuple[float, float]]:
    """(A, B) once per group (frame) for a per-frame column repeated on each of its rows; rows are
    paired by id, and a frame is compared when both runs scored it."""
    pairs = {}
    for ra, rb in zip(a_rows, b_rows):
        if ra.get("group") and ra[column] not in ("", None) and rb[column] not in ("", None):
            pairs.setdefault(ra["group"], (float(ra[column] == "True"), float(rb[column] == "True")))
    return list(pairs.values())


METRICS = {"ciou50": "cIoU@0.5", "auc": "AUC", "pointing": "pointing",
           "rank_a2i": "R@1 a2i", "rank_i2a": "R@1 i2a",
           "class_rank_a2i": "R@1 a2i (class)", "class_rank_i2a": "R@1 i2a (class)",
           "follows": "follows (frames)"}
PER_GROUP = ("follows",)         # one score per frame, not per sample: pair splits only


# what `eval` writes about the scene itself (not the model): a paired row must agree on all of them
SCENE_COLUMNS = ("label", "no_source", "group", "scene_kind", "background", "distractors", "offscreen", "snr")


def check_same_scenes(rows_a: dict[str, dict], rows_b: dict[str, dict], ids: list[str]) -> None:
    """One line naming the first id whose scene columns differ: the CSVs come from different sets
    (e.g. one made again with make-scenes into the same folder), and pairing by id would compare
    unrelated scenes."""
    for i in ids:
        ra, rb = rows_a[i], rows_b[i]
        for column in SCENE_COLUMNS:
            if column in ra and column in rb and ra[column] != rb[column]:
                raise InputError(f"sample {i!r} is a different scene in the two CSVs ({column} {ra[column]!r} in A, "
                                 f"{rb[column]!r} in B): evaluate both models on the same scene set")


MIN_RESAMPLES = 1000      # a 95 % interval rests on its 2.5 % tails: 25 draws each at this count


def compare(rows_a: dict[str, dict], rows_b: dict[str, dict], resamples: int = 10000, seed: int = 0) -> dict:
    if resamples < MIN_RESAMPLES:
        raise InputError(f"{resamples} bootstrap resamples is too few for a 95 % interval: use at least "
                         f"{MIN_RESAMPLES} (default 10000)")
    ids = sorted(set(rows_a) & set(rows_b))
    if not ids:
        raise InputError("the two CSVs share no sample id: evaluate both models on the same split")
    check_same_scenes(rows_a, rows_b, ids)
    a_rows, b_rows = [rows_a[i] for i in ids], [rows_b[i] for i in ids]
    out = {"paired": len(ids), "only_a": len(set(rows_a) - set(rows_b)), "only_b": len(set(rows_b) - set(rows_a)),
           "metrics": {}, "not_compared": {}}
    for key in METRICS:
        column = {"ciou50": "ciou", "auc": "ciou"}.get(key, key)
        if key in PER_GROUP and column not in a_rows[0] and column not in b_rows[0]:
            continue                                    # not a pair split: nothing to say
        if column not in a_rows[0] or column not in b_rows[0]:
            out["not_compared"][key] = f"no {column} column in {'A' if column not in a_rows[0] else 'B'}"
            continue                                    # e.g. class ranks of an unlabelled set
        if "rank" in key:
            # a rank is only meaningful within its own gallery: both runs must have ranked the same samples
            gallery_a = {i for i, r in rows_a.items() if r.get(column) not in ("", None)}
            gallery_b = {i for i, r in rows_b.items() if r.get(column) not in ("", None)}
            if gallery_a != gallery_b:
                out["not_compared"][key] = (f"different retrieval galleries ({len(gallery_a)} and "
                                            f"{len(gallery_b)} samples): evaluate both on the same samples")
                continue
        if key in PER_GROUP:
            pairs = _per_group(a_rows, b_rows, column)
        else:
            pairs = [(x, y) for x, y in zip(_per_sample(a_rows, key), _per_sample(b_rows, key))
                     if x is not None and y is not None]
        if not pairs:
            continue
        a, b = np.array(pairs).T
        boot = metrics.paired_bootstrap(a, b, resamples, seed)
        verdict = "A" if boot["lo"] > 0 else "B" if boot["hi"] < 0 else "tie (n.s.)"
        out["metrics"][key] = {"a": float(a.mean()), "b": float(b.mean()), **boot, "better": verdict}
    return out


def markdown(result: dict, name_a: str, name_b: str) -> str:
    lines = [f"| metric | {name_a} | {name_b} | A - B | 95 % interval | better |", "|---|---|---|---|---|---|"]
    for key, m in result["metrics"].items():
        better = {"A": name_a, "B": name_b}.get(m["better"], m["better"])
        label = f"{METRICS[key]}, n={m['n']}" if key in PER_GROUP else METRICS[key]
        lines.append(f"| {label} | {100 * m['a']:.1f} | {100 * m['b']:.1f} | {100 * m['diff']:+.1f} "
                     f"| [{100 * m['lo']:+.1f}, {100 * m['hi']:+.1f}] | {better} |")
    return "\n".join(lines) + "\n"


def shown_metrics(results) -> list[str]:
    """The metrics a table or plot of these comparisons lists: every per-sample one, and follows
    where some split had frames to compare."""
    results = list(results)
    return [k for k in METRICS if k not in PER_GROUP or any(k in r["metrics"] for r in results)]


def plot(panels: dict[str, dict], name_a: str, name_b: str, path: Path) -> None:
    """Forest plot: one panel per comparison (e.g. per split), A - B per metric with its interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), sharey=True, squeeze=False)
    shown = shown_metrics(panels.values())
    rows = {key: len(shown) - 1 - i for i, key in enumerate(shown)}             # same rows in every panel
    for ax, (title, result) in zip(axes[0], panels.items()):
        for key, m in result["metrics"].items():
            y = rows[key]
            colour = {"A": "tab:green", "B": "tab:red"}.get(m["better"], "tab:gray")
            ax.errorbar(100 * m["diff"], y, xerr=[[100 * (m["diff"] - m["lo"])], [100 * (m["hi"] - m["diff"])]],
                        fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks([rows[k] for k in shown], [METRICS[k] for k in shown])
        ax.set_title(f"{title} ({result['paired']} scenes)", fontsize=10)
        ax.set_xlabel(f"{name_a} - {name_b} (points)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{name_a} vs {name_b}: differences with 95 % paired-bootstrap intervals "
                 f"(green: {name_a} better, red: {name_b} better, grey: within noise)", fontsize=9)
    fig.tight_layout()
    from ..atomic import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="paired comparison of two models' per-sample eval CSVs",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="per-sample CSV of model A (from jsa-rt eval)")
    p.add_argument("b", type=Path, help="per-sample CSV of model B, same split")
    p.add_argument("--names", nargs=2, metavar=("A", "B"), default=None, help="labels (default: the CSVs' folder names)")
    p.add_argument("--resamples", type=at_least(MIN_RESAMPLES, "fewer give intervals too rough to call a "
                                                "winner"), default=10000)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the comparison here")
    p.add_argument("--png", type=Path, default=None, help="draw the differences and their intervals here")
    return p


def run(args: argparse.Namespace) -> int:
    name_a, name_b = args.names or (args.a.parent.name or "A", args.b.parent.name or "B")
    result = compare(read_rows(args.a), read_rows(args.b), args.resamples, args.seed)
    result.update(a=str(args.a), b=str(args.b), names=[name_a, name_b])
    print(markdown(result, name_a, name_b), end="")
    if args.json:
        from ..atomic import write_text
        write_text(args.json, json.dumps(result, indent=1))
    if args.png:
        plot({args.a.stem: result}, name_a, name_b, args.png)
    for key, why in result["not_compared"].items():
        print(f"not compared: {METRICS[key]} ({why})")
    if result["only_a"] or result["only_b"]:
        print(f"unpaired samples: {result['only_a']} only in {name_a}, {result['only_b']} only in {name_b}")
    wins = [METRICS[k] for k, m in result["metrics"].items() if m["better"] == "A"]
    losses = [METRICS[k] for k, m in result["metrics"].items() if m["better"] == "B"]
    print(f"{result['paired']} samples paired by id: {name_a} significantly better on {', '.join(wins) or 'nothing'}; "
          f"{name_b} on {', '.join(losses) or 'nothing'}; the rest within noise"
          + "".join(f"; wrote {p}" for p in (args.json, args.png) if p)
          + ("" if args.png else "; next: add --png forest.png for the picture"))
    return 0
