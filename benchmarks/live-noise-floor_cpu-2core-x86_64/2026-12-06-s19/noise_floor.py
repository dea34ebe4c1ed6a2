"""The live gate under steady background noise: `--noise-margin-db` against the fixed level gate.

For each seed, `jsa-rt demo --scene real` composes a clip (real photos; held-out real recordings
switching source, a second of silence between), then an UrbanSound8K air-conditioner recording
is mixed under its whole soundtrack at --fan-db dBFS (above the fixed gate's -50), and
`jsa-rt live` runs the clip with that soundtrack: with the fixed gate only, and with
--noise-margin-db at each margin given. Each run is scored as the demo scores itself (jsa_rt.live.demo.score).

  .venv/bin/python benchmarks/live-noise-floor_cpu-2core-x86_64/2026-12-06-s19/noise_floor.py --out /tmp/noise --seeds 0-7
Writes noise_floor.json, noise_floor.md and noise_floor.png (the first clip's levels and gates) into --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from jsa_rt.audio_io import load_audio
from jsa_rt.live.demo import score
from jsa_rt.train.scene_catalog import default_data_root

JSA = [sys.executable, "-m", "jsa_rt.cli"]
COMMON = ["--scene", "real", "--segments", "6", "--no-pace", "--min-confidence", "0", "--backend", "onnxruntime"]


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")


def fan_under(clip_wav: Path, fan_files: list[Path], seed: int, fan_db: float, out: Path) -> None:
    wave, rate = sf.read(clip_wav, dtype="float32")
    fan = load_audio(fan_files[seed % len(fan_files)], rate)
    fan = np.tile(fan, int(np.ceil(wave.size / fan.size)))[:wave.size]
    fan *= 10 ** (fan_db / 20) / np.sqrt(np.mean(fan.astype(np.float64) ** 2))
    sf.write(out, np.clip(wave + fan, -1, 1), rate)


def read_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def live(clip: Path, wav: Path, log: Path, extra: list[str]) -> list[dict]:
    run(JSA + ["live", "--camera", str(clip), "--mic", f"file://{wav}", "--headless", "--no-pace",
               "--min-confidence", "0", "--backend", "onnxruntime", "--log-json", str(log), *extra])
    return read_log(log)


def picture(seed_dir: Path, truth: dict, margins: list[float], path: Path) -> None:
    """The first clip under the fan (run1: the fixed gate's run): its level, the fixed gate, and each margin's gate over time
    (replayed through the Localizer on the logged levels), with the sounding segments shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jsa_rt.live.render import Localizer, RenderOptions
    from jsa_rt.live.where import Where
    records = read_log(seed_dir / "run1.jsonl")
    t = [r["t"] for r in records]
    level = [r["level_db"] for r in records]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    fps = float(truth.get("fps", 30.0))
    for f in truth["frames"]:
        if f.get("box") is not None:
            ax.axvspan(f["frame"] / fps, (f["frame"] + 1) / fps, color="#dde8f5", lw=0)
    ax.plot(t, level, color="black", lw=1, label="audio level, clip + air conditioner at -35 dBFS")
    ax.axhline(-50, color="grey", ls=":", label="fixed gate (-50 dBFS): the fan shows a source")
    heat = np.ones((4, 4), np.float32)
    for margin, colour in zip(margins, ("tab:green", "tab:red", "tab:purple")):
        loc = Localizer(RenderOptions(persistence_ms=0, noise_margin_db=margin))
        gates = []
        for ti, lv in zip(t, level):
            loc.update(Where(heat, 1.0, lv), t=ti)
            gates.append(loc.level_gate_db)
        ax.plot(t, gates, color=colour, lw=1.5, label=f"--noise-margin-db {margin:g}")
    ax.set_xlabel("seconds (shaded: a source sounds)")
    ax.set_ylabel("dBFS")
    ax.set_ylim(-60, 0)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--fan-db", type=float, default=-35.0)
    p.add_argument("--margin-db", type=float, nargs="+", default=[6.0, 10.0])
    args = p.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    fans = sorted((default_data_root() / "urbansound8k").glob("fold*/*-0-*-*.ogg"))   # classID 0: air_conditioner
    rows = []
    for seed in seeds:
        d = args.out / f"seed{seed}"
        run(JSA + ["demo", *COMMON, "--seed", str(seed), "--out", str(d)])
        truth = json.loads((d / "truth.json").read_text())
        fan_under(d / "clip.wav", fans, seed, args.fan_db, d / "with_fan.wav")
        row = {"seed": seed, "fan": str(fans[seed % len(fans)].name)}
        runs = [("clean, fixed gate", None), ("fan, fixed gate", [])]
        runs += [(f"fan, --noise-margin-db {m:g}", ["--noise-margin-db", str(m)]) for m in args.margin_db]
        for i, (name, extra) in enumerate(runs):
            if extra is None:
                records = read_log(d / "frames.jsonl")
            else:
                records = live(d / "clip.mp4", d / "with_fan.wav", d / f"run{i}.jsonl", extra)
            s = score(records, truth)
            row[name] = {k: s[k] for k in ("follow_rate", "hit_rate", "no_source_rate", "shown_in_silence",
                                           "shown_after_release", "switches", "switches_followed")}
        rows.append(row)
        print(f"seed {seed}: " + "; ".join(f"{k}: follow {v['follow_rate']:.2f}, silent shown {v['shown_after_release']:.2f}"
                                         for k, v in row.items() if isinstance(v, dict)), flush=True)
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    summary = {n: {k: float(np.mean([r[n][k] for r in rows])) for k in rows[0][n]} for n in names}
    (args.out / "noise_floor.json").write_text(json.dumps({"fan_db": args.fan_db, "margins_db": args.margin_db,
                                                           "rows": rows, "mean": summary}, indent=1))
    lines = [f"Air conditioner under the soundtrack at {args.fan_db:g} dBFS; seeds {args.seeds}; means over clips.", "",
             "| run | follow (settled sounding frames) | sounding frames with no source shown | silent frames shown (from 0.75 s after the sound) | switches followed |",
             "|---|---|---|---|---|"]
    for n in names:
        m = summary[n]
        lines.append(f"| {n} | {100 * m['follow_rate']:.1f} % | {100 * m['no_source_rate']:.1f} % | "
                     f"{100 * m['shown_after_release']:.1f} % | {sum(r[n]['switches_followed'] for r in rows)} of "
                     f"{sum(r[n]['switches'] for r in rows)} |")
    (args.out / "noise_floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
