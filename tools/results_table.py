"""Print the README's results tables from `jsa-rt eval` outputs.

    python tools/results_table.py benchmarks/eval                         # expects <dir>/<model>/<split>.json (+ .csv)
    python tools/results_table.py benchmarks/eval --paired edge-jsa edge-ezvsl --png benchmarks/eval/paired.png
    python tools/results_table.py benchmarks/eval --conditions test    # scores by scene condition
    python tools/results_table.py benchmarks/eval --classes test-unheard  # class-level R@1 hits by class

The first table is every model on every split; multi-source ("pair") splits get a second one:
follows (every sound's peak on its own object, per frame) beside its chance level. With --paired A B, a second table gives A - B
per split and metric with its 95 % paired-bootstrap interval (`jsa-rt compare` on the per-sample
CSVs); a difference whose interval straddles 0 is marked "n.s.".
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from jsa_rt.train import compare  # noqa: E402

PAIR_SPLITS = ("pairs", "pairs-unheard", "real-pairs")
SPLITS = ("test", "test-unheard", "digits", *PAIR_SPLITS)


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def results(root: Path) -> None:
    print("| split | model | n | cIoU@0.5 | AUC | pointing | R@1 a2i | R@1 i2a | R@1 a2i (class) | R@1 i2a (class) | false alarm | no-source AUROC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for split in SPLITS:
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            path = model_dir / f"{split}.json"
            if not path.is_file():
                continue
            s = json.loads(path.read_text())
            r, rc = s.get("retrieval") or {}, s.get("retrieval_class") or {}
            print(f"| {split} | {model_dir.name} | {s['n']} | {pct(s['ciou50'])} | {pct(s['auc'])} | {pct(s['pointing'])} "
                  f"| {pct(r.get('a2i', {}).get('r1'))} | {pct(r.get('i2a', {}).get('r1'))} "
                  f"| {pct(rc.get('a2i', {}).get('r1'))} | {pct(rc.get('i2a', {}).get('r1'))} | {pct(s.get('false_alarm'))} "
                  f"| {pct(s.get('confidence_auroc'))} |")


def pair_results(root: Path) -> None:
    """Pair splits (eval's `pairs`): follows [95 % interval] beside chance and a map that never
    moves, and how often the peak lands on another candidate object. Nothing without them."""
    lines = []
    for split in SPLITS:
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            path = model_dir / f"{split}.json"
            s = json.loads(path.read_text()) if path.is_file() else {}
            p = s.get("pairs")
            if not p:
                continue
            ci = (s.get("ci95") or {}).get("follows")
            interval = f" [{pct(ci[0])}-{pct(ci[1])}]" if ci else ""
            lines.append(f"| {split} | {model_dir.name} | {p['groups']} | {pct(p['follows'])}{interval} | {pct(p['chance'])} "
                         f"| {pct(p.get('never_moves'))} | {pct(s.get('pointing'))} | {pct(p.get('wrong_object'))} |")
    if lines:
        print()
        print("| split | model | frames | follows [95 %] | chance | never moves | pointing | peak on another object |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(lines))


def paired(root: Path, a: str, b: str, png: Path | None = None) -> None:
    panels = {}
    for split in SPLITS:
        csv_a, csv_b = root / a / f"{split}.csv", root / b / f"{split}.csv"
        if csv_a.is_file() and csv_b.is_file():
            panels[split] = compare.compare(compare.read_rows(csv_a), compare.read_rows(csv_b))
    names = compare.shown_metrics(panels.values())
    print(f"| split | {' | '.join(compare.METRICS[k] for k in names)} |")
    print("|---|" + "---|" * len(names))
    for split in panels:
        m = panels[split]["metrics"]
        cells = []
        for k in names:
            if k not in m:
                cells.append("-")
                continue
            mark = "" if m[k]["better"] in ("A", "B") else " n.s."
            cells.append(f"{100 * m[k]['diff']:+.1f} [{100 * m[k]['lo']:+.1f}, {100 * m[k]['hi']:+.1f}]{mark}")
        print(f"| {split} | {' | '.join(cells)} |")
    if png and panels:
        compare.plot(panels, a, b, png)
        print(f"\nwrote {png}")


def conditions(root: Path, split: str) -> None:
    """cIoU@0.5 / pointing of every model by recorded scene condition (eval's by_condition)."""
    summaries = {d.name: json.loads((d / f"{split}.json").read_text())
                 for d in sorted(p for p in root.iterdir() if p.is_dir()) if (d / f"{split}.json").is_file()}
    print(f"| {split}: condition | n | " + " | ".join(f"{m} cIoU@0.5 / pointing" for m in summaries) + " |")
    print("|---|---|" + "---|" * len(summaries))
    first = next(iter(summaries.values()), {})
    for factor, levels in first.get("by_condition", {}).items():
        for level, group in levels.items():
            cells = []
            for s in summaries.values():
                g = s.get("by_condition", {}).get(factor, {}).get(level)
                cells.append("-" if g is None else f"{pct(g['ciou50'])} / {pct(g['pointing'])}")
            print(f"| {factor} = {level} | {group['n']} | " + " | ".join(cells) + " |")


def classes(root: Path, split: str) -> None:
    """Class-level R@1 hits of every model, class by class (the per-sample CSV's class ranks):
    which classes a model retrieves, e.g. the few unheard ones with a close seen relative."""
    import csv
    from collections import defaultdict
    hits = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{split}.csv").is_file()):
        per_class = defaultdict(lambda: [0, 0, 0])              # a2i hits, i2a hits, scenes
        with open(d / f"{split}.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("class_rank_a2i", "") == "":          # no-source scenes are not retrieved
                    continue
                counts = per_class[row["label"]]
                counts[0] += row["class_rank_a2i"] == "0"
                counts[1] += row["class_rank_i2a"] == "0"
                counts[2] += 1
        hits[d.name] = per_class
    labels = sorted({label for per_class in hits.values() for label in per_class})
    print(f"| {split}: class | scenes | " + " | ".join(f"{m} a2i / i2a hits" for m in hits) + " |")
    print("|---|---|" + "---|" * len(hits))
    for label in labels:
        n = next(pc[label][2] for pc in hits.values() if label in pc)
        cells = [f"{pc[label][0]} / {pc[label][1]}" if label in pc else "-" for pc in hits.values()]
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    print(f"| all | | " + " | ".join(f"{sum(c[0] for c in pc.values())} / {sum(c[1] for c in pc.values())}"
                                       for pc in hits.values()) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="benchmarks/eval", type=Path)
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), help="also print A - B with 95 %% intervals")
    p.add_argument("--png", type=Path, default=None, help="with --paired: draw the differences here")
    p.add_argument("--conditions", metavar="SPLIT", default=None,
                   help="also print every model's scores by scene condition on SPLIT (background, distractors, ...)")
    p.add_argument("--classes", metavar="SPLIT", default=None,
                   help="also print every model's class-level R@1 hits class by class on SPLIT")
    args = p.parse_args(argv)
    results(args.root)
    pair_results(args.root)
    if args.paired:
        print()
        paired(args.root, *args.paired, png=args.png)
    if args.conditions:
        print()
        conditions(args.root, args.conditions)
    if args.classes:
        print()
        classes(args.root, args.classes)


if __name__ == "__main__":
    main()
