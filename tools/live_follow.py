"""Live follow over several demo clips, two models paired by clip: the number behind the listening
issue's live target ("the marked source follows the sound in >= 70 % of frames after each switch
settles"), with a 95 % interval and a picture.

    # 1. the same clips for each model (each `demo --out` folder gets a score.json)
    for s in $(seq 0 15); do
        jsa-rt demo --scene real --segments 6 --no-pace --min-confidence 0 --seed $s \\
            --checkpoint A.pt --out live/A/seed$s
    done
    # 2. paired by seed
    python tools/live_follow.py live/A live/B --names A B --json a_vs_b.json --png a_vs_b.png

Each model is a folder of `seed<N>/score.json` (what `demo --out` writes) or a quoted glob of copies
named `*seed<N>.json` (e.g. "demo/M2-384-seed*.json", where several models share a folder).
Clips are paired by seed; the interval is a bootstrap over clips (metrics.paired_bootstrap).
"""
import argparse
import glob
import json
import re
import sys
from pathlib import Path

# this folder would come first on sys.path, where tools/profile.py shadows the standard `profile`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from jsa_rt.atomic import write_json  # noqa: E402
from jsa_rt.errors import InputError  # noqa: E402
from jsa_rt.train.metrics import paired_bootstrap  # noqa: E402

SEED = re.compile(r"seed(\d+)")


def read_clips(source: str) -> dict[int, dict]:
    """{seed: demo score} for every score JSON in `source` (a folder, or a glob) whose path names its seed."""
    folder = Path(source)
    paths = sorted(folder.rglob("*.json")) if folder.is_dir() else sorted(Path(p) for p in glob.glob(source))
    clips = {}
    for path in paths:
        found = SEED.findall(str(path.relative_to(folder)) if folder.is_dir() else path.name)
        if not found:
            continue
        score = json.loads(path.read_text())
        if isinstance(score, dict) and "follow_rate" in score:
            clips[int(found[-1])] = score
    if not clips:
        raise InputError(f"{source}: no demo scores (seed<N>/score.json or *seed<N>.json with a follow_rate); "
                         f"run `jsa-rt demo --seed N --out DIR/seedN` for each clip first")
    return clips


def compare(a: dict[int, dict], b: dict[int, dict], names: tuple[str, str]) -> dict:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise InputError(f"the two folders share no seed ({sorted(a)} against {sorted(b)}); run the same clips for both")
    rates = {name: np.array([100 * clips[s]["follow_rate"] for s in seeds]) for name, clips in zip(names, (a, b))}
    stats = paired_bootstrap(rates[names[0]], rates[names[1]])
    out = {"seeds": seeds, "unpaired": sorted(set(a) ^ set(b)),
           "chance": round(float(np.mean([100 * a[s]["follow_chance"] for s in seeds])), 1)}
    for name, clips in zip(names, (a, b)):
        out[name] = {"follow": [round(float(x), 1) for x in rates[name]], "mean": round(float(rates[name].mean()), 1),
                     "switches": [sum(clips[s]["switches_followed"] for s in seeds), sum(clips[s]["switches"] for s in seeds)]}
    d = rates[names[0]] - rates[names[1]]
    out.update(diff_mean=round(stats["diff"], 1), diff_ci95=[round(stats["lo"], 1), round(stats["hi"], 1)],
               better_clips={names[0]: int((d > 0).sum()), names[1]: int((d < 0).sum())})
    return out


def plot(summary: dict, names: tuple[str, str], png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.arange(len(summary["seeds"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(x) + 1), 3.2))
    for offset, name in ((-0.2, names[0]), (0.2, names[1])):
        ax.bar(x + offset, summary[name]["follow"], 0.4, label=f"{name} (mean {summary[name]['mean']} %)")
    ax.axhline(summary["chance"], color="k", ls="--", lw=1, label=f"chance {summary['chance']} %")
    ax.set_xticks(x, [str(s) for s in summary["seeds"]])
    ax.set(xlabel="clip (seed)", ylabel="follow after a switch settles, %", ylim=(0, 105))
    lo, hi = summary["diff_ci95"]
    ax.set_title(f"live follow, {len(x)} clips: {names[0]} - {names[1]} = {summary['diff_mean']:+.1f} "
                 f"[{lo:+.1f}, {hi:+.1f}]", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="model A's demo runs: a folder, or a quoted glob of *seed<N>.json")
    p.add_argument("b", help="model B's demo runs, the same way")
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"))
    p.add_argument("--json", type=Path, help="summary JSON to write")
    p.add_argument("--png", type=Path, help="bar chart to write")
    args = p.parse_args(argv)
    names = tuple(args.names)
    try:
        summary = compare(read_clips(args.a), read_clips(args.b), names)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lo, hi = summary["diff_ci95"]
    print(f"live follow over {len(summary['seeds'])} clips (chance {summary['chance']} %): "
          f"{names[0]} {summary[names[0]]['mean']} % ({summary[names[0]]['switches'][0]} of {summary[names[0]]['switches'][1]} switches), "
          f"{names[1]} {summary[names[1]]['mean']} %; {names[0]} - {names[1]} = {summary['diff_mean']:+.1f} [{lo:+.1f}, {hi:+.1f}] "
          f"({'a tie' if lo <= 0 <= hi else 'significant'}; better on {summary['better_clips'][names[0]]} clips, "
          f"worse on {summary['better_clips'][names[1]]})")
    if summary["unpaired"]:
        print(f"left out (in one folder only): seeds {summary['unpaired']}")
    if args.json:
        write_json(args.json, summary)
        print(f"wrote {args.json}")
    if args.png:
        plot(summary, names, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
