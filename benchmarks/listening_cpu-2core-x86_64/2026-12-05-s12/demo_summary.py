"""Live real-demo follow rate of two models over the same clips, paired by seed.

Each clip is `jsa-rt demo --scene real --segments 6 --no-pace --min-confidence 0 --seed S`
(deterministic for a seed). Reads NAME-seedS.json (the demo's score.json) from demo/, prints
the mean follow rate after each switch settles, switches followed, and the paired difference
with a 95 % bootstrap interval over clips; writes demo_follow_A_vs_B.png and demo/summary_A_vs_B.json.

    python demo_summary.py A B              # e.g. V25 C10
    python demo_summary.py A B --dir DIR    # another session's folder (DIR/demo/, pictures in DIR)
"""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def load(name: str) -> dict[int, dict]:
    scores: dict[int, dict] = {}
    for path in sorted((HERE / "demo").glob(f"{name}-seed*.json")):
        scores[int(path.stem.split("-seed")[1])] = json.loads(path.read_text())
    return scores


def main(a: str, b: str) -> None:
    sa, sb = load(a), load(b)
    seeds = sorted(set(sa) & set(sb))
    fa = np.array([100 * sa[s]["follow_rate"] for s in seeds])
    fb = np.array([100 * sb[s]["follow_rate"] for s in seeds])
    chance = np.mean([100 * sa[s]["follow_chance"] for s in seeds])
    diff = fa - fb
    rng = np.random.default_rng(0)
    boot = diff[rng.integers(0, len(diff), (10000, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    sw = {n: (sum(d[s]["switches_followed"] for s in seeds), sum(d[s]["switches"] for s in seeds))
          for n, d in ((a, sa), (b, sb))}
    summary = {"seeds": seeds, "chance": round(chance, 1),
               a: {"follow": fa.round(1).tolist(), "mean": round(fa.mean(), 1), "switches": sw[a]},
               b: {"follow": fb.round(1).tolist(), "mean": round(fb.mean(), 1), "switches": sw[b]},
               "diff_mean": round(diff.mean(), 1), "diff_ci95": [round(lo, 1), round(hi, 1)],
               f"{a}_better_clips": int((diff > 0).sum()), f"{b}_better_clips": int((diff < 0).sum())}
    (HERE / "demo" / f"summary_{a}_vs_{b}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(seeds)} clips (seeds {seeds[0]}-{seeds[-1]}), chance {chance:.1f} %")
    for n, f in ((a, fa), (b, fb)):
        print(f"  {n}: follow {f.mean():.1f} %, {sw[n][0]} of {sw[n][1]} switches followed")
    print(f"  {a} - {b}: {diff.mean():+.1f} [{lo:+.1f}, {hi:+.1f}] (bootstrap over clips); "
          f"{a} better on {(diff > 0).sum()} clips, {b} on {(diff < 0).sum()}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.arange(len(seeds))
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.bar(x - 0.2, fa, 0.4, label=f"{a} (mean {fa.mean():.0f} %)")
    ax.bar(x + 0.2, fb, 0.4, label=f"{b} (mean {fb.mean():.0f} %)")
    ax.axhline(chance, color="gray", ls=":", label=f"chance {chance:.0f} %")
    ax.axhline(70, color="red", ls="--", lw=0.8, label="target 70 %")
    ax.set_xticks(x, [str(s) for s in seeds])
    ax.set_xlabel("clip (demo --seed)")
    ax.set_ylabel("follow after switch settles, %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / f"demo_follow_{a}_vs_{b}.png", dpi=110)


if __name__ == "__main__":
    if "--dir" in sys.argv:
        HERE = Path(sys.argv[sys.argv.index("--dir") + 1])
    main(*sys.argv[1:3])
