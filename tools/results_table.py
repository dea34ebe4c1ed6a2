"""Print the README's results tables from `jsa-rt eval` outputs.

    python tools/results_table.py benchmarks/eval                         # expects <dir>/<model>/<split>.json (+ .csv)
    python tools/results_table.py benchmarks/eval --paired edge-jsa edge-ezvsl --png benchmarks/eval/paired.png
    python tools/results_table.py benchmarks/eval --conditions test    # scores by scene condition

The first table is every model on every split. With --paired A B, a second table gives A - B
per split and metric with its 95 % paired-bootstrap interval (`jsa-rt compare` on the per-sample
CSVs); a difference whose interval straddles 0 is marked "n.s.".
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from jsa_rt.train import compare  # noqa: E402

SPLITS = ("test", "test-unheard", "digits")


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


def paired(root: Path, a: str, b: str, png: Path | None = None) -> None:
    names = list(compare.METRICS)
    print(f"| split | {' | '.join(compare.METRICS[k] for k in names)} |")
    print("|---|" + "---|" * len(names))
    panels = {}
    for split in SPLITS:
        csv_a, csv_b = root / a / f"{split}.csv", root / b / f"{split}.csv"
        if not (csv_a.is_file() and csv_b.is_file()):
            continue
        panels[split] = compare.compare(compare.read_rows(csv_a), compare.read_rows(csv_b))
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="benchmarks/eval", type=Path)
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), help="also print A - B with 95 %% intervals")
    p.add_argument("--png", type=Path, default=None, help="with --paired: draw the differences here")
    p.add_argument("--conditions", metavar="SPLIT", default=None,
                   help="also print every model's scores by scene condition on SPLIT (background, distractors, ...)")
    args = p.parse_args(argv)
    results(args.root)
    if args.paired:
        print()
        paired(args.root, *args.paired, png=args.png)
    if args.conditions:
        print()
        conditions(args.root, args.conditions)


if __name__ == "__main__":
    main()
