"""Print the README's results table from `jsa-rt eval` JSON summaries.

    python tools/results_table.py benchmarks/eval   # expects <dir>/<model>/<split>.json
"""

import json
import sys
from pathlib import Path

SPLITS = ("test", "test-unheard", "digits")


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def main(root="benchmarks/eval"):
    root = Path(root)
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


if __name__ == "__main__":
    main(*sys.argv[1:])
