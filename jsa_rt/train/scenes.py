"""`jsa-rt make-scenes`: an offline audio-visual localisation benchmark built from real data.

A scene pastes one sounding object (a Tux Paint stamp with its recording, or a digit with a
spoken FSDD take) and 0-3 silent distractors (about half of them from the target's own
category) onto a background: a whole photograph, a zoomed photo crop, a tinted texture or a
synthetic gradient. Scale, position, rotation, lighting, shadows, blur, sensor noise, JPEG
quality and occlusion (a distractor in front hides at most a quarter of the target) vary.
The soundtrack is the target's sound, augmented (scene_audio.py), plus in some scenes an
off-screen sound and background noise. In the evaluation splits 10 % of the scenes have no
visible source: half a silent room (noise floor only), half an off-screen sound only.

Splits (VGG-SS layout, see `write_split`):
- train / val / test: the seen classes (80 % of the sounding stamps + the digits spoken by the
  training speakers).
- test-unheard: the other 20 % of the stamp classes, which never appear in train/val/test,
  neither as image nor as sound.
- digits: digits spoken by held-out FSDD speakers (2 of the 5).
- pairs, pairs-unheard, real, real-pairs: several sounding objects per frame, real photos
  (scene_plan.py); val-pairs: the real-pairs form on the val material, which training uses
  to choose best.pt by how well the map follows the sound.

Target boxes: 85 % of the scenes draw a box area of 25-60 % of the frame (a median-threshold
map marks half the frame, so cIoU >= 0.5 needs a box of at least 25 %); 15 % draw 8-25 %
(the "small" bucket). Very elongated stamps and rotation move the realised area a little; the
manifest `scenes.json` records the realised distribution per split.

Frames are 256x256 JPEG (so training's resize-246/random-crop-224 has room; evaluation resizes
the whole frame, and boxes are normalised so they scale with it); audio 16 kHz mono 16-bit,
5.0 s by default. Each scene depends only on (seed, split, index): the same seed gives the same
bytes, whatever the number of worker processes.

The plan (which scenes) is scene_plan.py, one scene's pixels and sound scene_compose.py; this
module makes the whole set and is the `make-scenes` command.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..args import non_negative_int, positive_float, positive_int, unit_interval
from ..atomic import disk_full, write_text
from ..errors import InputError
from .classmap import build_real_catalog
from .progress import progress_bar
from .scene_catalog import build_catalog
from .scene_compose import SAMPLE_RATE, init_worker, make_scene
from .scene_plan import DEFAULT_COUNTS, SMALL_COUNTS, parse_counts, plan_classes, plan_scenes, read_plan

FORMAT_VERSION = 2          # 2: no silent copies of sounding stamps, one class per recording, FSDD takes split

SET_FOLDERS = ("frames", "audio", "annotations", "splits")


def _empty_set(out: Path) -> None:
    """Removes a scene set's folders and manifest (what --force replaces); nothing else in `out`."""
    import shutil
    try:
        (out / "scenes.json").unlink(missing_ok=True)
        for sub in SET_FOLDERS:
            if (out / sub).is_dir() and not (out / sub).is_symlink():
                shutil.rmtree(out / sub)
            else:
                (out / sub).unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"cannot empty the old scene set in {out}: {exc.strerror or exc}; "
                         f"remove it yourself or choose a new folder") from None


def generate(out: Path, seed: int = 0, counts: dict[str, int] | None = None, source: Path | None = None,
             fsdd: Path | None = None, backgrounds: Path | None = None, image_size: int = 256,
             seconds: float = 5.0, workers: int = 2, no_source_fraction: float = 0.1,
             progress: bool = True, real_data: Path | None = None, plan_from: Path | None = None,
             force: bool = False) -> dict:
    """Generate the scene set under `out`; returns the manifest (also written as scenes.json).

    An `out` that already holds a scene set is refused unless `force`, which empties it first:
    writing over it would leave its old files while its ids named different scenes."""
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose a folder for the scene set")
    existing = [n for n in (*SET_FOLDERS, "scenes.json") if (out / n).exists()] if out.is_dir() else []
    if out.exists() and any(out.iterdir()) and not existing:
        raise InputError(f"{out} is not empty and holds no scene set: choose a new folder")
    if existing and not force:
        raise InputError(f"{out} already holds a scene set ({', '.join(existing)}): its ids would name different "
                         f"scenes; choose a new folder, or pass --force to empty it and write a new set")
    catalog = build_catalog(source, fsdd, backgrounds)
    plan = plan_classes(catalog, seed) if plan_from is None else read_plan(plan_from, catalog)
    # only seen Tux classes lend their recording to a real class, and a real class that is (or
    # shows) an unheard Tux class is left out: the unheard classes are never seen nor heard
    real = build_real_catalog(real_data, {c.name: c.sound for c in catalog.classes if c.name in plan.seen})
    if not any(c.photos for c in real.classes.values()):
        real = None                         # no real photos here: cut-out scenes only
    blocked = set(plan.unheard)
    allowed = {n for n, c in real.classes.items() if n not in blocked and not blocked & set(c.tux)} if real else set()
    plan = replace(plan, real={s: tuple(n for n in real.usable(s) if n in allowed)
                               for s in ("train", "val", "test")} if real else {})
    specs = plan_scenes(plan, counts, seed, no_source_fraction, {c.name: c.sound_key for c in catalog.classes})
    if existing:                            # --force, and the new set is ready to be made: empty the old one
        _empty_set(out)
    for sub in SET_FOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    options = {"out": str(out), "image_size": image_size, "seconds": seconds}

    entries: list[dict] = []
    started = time.monotonic()
    bar = progress_bar(len(specs), "scenes", "scene", enabled=progress)
    try:
        if workers <= 1:
            init_worker(catalog, real, plan, options)
            for made in map(make_scene, specs):
                entries.append(made)
                bar.update(1)
        else:
            import multiprocessing as mp
            with mp.get_context("spawn").Pool(workers, init_worker, (catalog, real, plan, options)) as pool:
                for made in pool.imap(make_scene, specs, chunksize=4):
                    entries.append(made)
                    bar.update(1)
    except BaseException as exc:
        full = isinstance(exc, Exception) and disk_full(exc, out)       # before the temp files free room
        for tmp in (out / "audio").glob("*.tmp.wav"):                    # a sound cut off mid-write
            tmp.unlink(missing_ok=True)
        if full:
            raise InputError(f"cannot write the scene set in {out}: the disk is full (or your quota is used up); "
                             f"free some space and run again with --force") from None
        raise
    finally:
        bar.close()

    by_split: dict[str, list[dict]] = {}
    for spec, made in zip(specs, entries):
        by_split.setdefault(spec.split, []).extend(made)
    stats = {}
    for split, items in by_split.items():
        write_text(out / "annotations" / f"{split}.json", json.dumps(items, indent=1, sort_keys=True))
        write_text(out / "splits" / f"{split}.txt", "".join(e["file"] + "\n" for e in items))
        areas = np.array([e["target_area"] for e in items if not e["no_source"]])
        stats[split] = {
            "n": len(items),
            "no_source": sum(e["no_source"] for e in items),
            "classes": len({e["class"] for e in items if not e["no_source"]}),
            "target_area_quantiles_10_50_90": [round(float(q), 3) for q in np.quantile(areas, [0.1, 0.5, 0.9])] if areas.size else [],
            "target_area_at_least_0.25": round(float((areas >= 0.25).mean()), 3) if areas.size else None,
            "kinds": {k: sum(e.get("kind", "cutout") == k for e in items)
                      for k in sorted({e.get("kind", "cutout") for e in items})},
            "groups": len({e["group"] for e in items if e.get("group")}),
        }
    manifest = {
        "format": "vggss-scenes", "version": FORMAT_VERSION, "seed": seed,
        "image_size": image_size, "sample_rate": SAMPLE_RATE, "seconds": seconds,
        "counts": {s: len(v) for s, v in by_split.items()},
        "classes_seen": list(plan.seen), "classes_unheard": list(plan.unheard),
        "digit_speakers_train": list(plan.train_speakers), "digit_speakers_heldout": list(plan.heldout_speakers),
        "skipped_classes": dict(sorted(catalog.skipped.items())),
        "real_sources": real.summary() if real else {}, "real_missing": real.missing if real else ["all"],
        "splits": stats,
        "layout": {"frames": "frames/<id>.jpg", "audio": "audio/<id>.wav",
                   "annotations": "annotations/<split>.json", "ids": "splits/<split>.txt"},
    }
    write_text(out / "scenes.json", json.dumps(manifest, indent=1, sort_keys=True))
    manifest["elapsed_s"] = round(time.monotonic() - started, 1)
    return manifest


# ---- CLI ----------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("make-scenes", help="compose the offline audio-visual benchmark from real images and sounds",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--source", type=Path, default=None,
                   help="Tux Paint stamps folder (default $JSA_DATA/tuxpaint-stamps, else /usr/share/tuxpaint/stamps)")
    p.add_argument("--fsdd", type=Path, default=None, help="FSDD folder (default $JSA_DATA/fsdd)")
    p.add_argument("--backgrounds", type=Path, default=None, help="background photos (default $JSA_DATA/backgrounds)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--counts", default="", help="scenes per split, e.g. train=3000,val=200,test=400,test-unheard=300,digits=300")
    p.add_argument("--small", action="store_true", help=f"a tiny set for tests: {SMALL_COUNTS}")
    p.add_argument("--image-size", type=positive_int, default=256, help="frame side in pixels (default 256)")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="audio length per scene (default 5.0)")
    p.add_argument("--no-source-fraction", type=unit_interval, default=0.1,
                   help="fraction of evaluation scenes without a visible source (default 0.1)")
    p.add_argument("--workers", type=non_negative_int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--plan", type=Path, default=None, metavar="SCENES_JSON",
                   help="take the seen/unheard classes and digit speakers from another set's scenes.json "
                        "(a re-encoded copy of the data then keeps the full set's split)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true",
                   help="--out already holds a scene set: empty its frames/, audio/, annotations/ and splits/ "
                        "and write a new one (without it, an existing set is refused)")
    return p


def run(args: argparse.Namespace) -> int:
    counts = parse_counts(args.counts, SMALL_COUNTS if args.small else DEFAULT_COUNTS)
    m = generate(args.out, args.seed, counts, args.source, args.fsdd, args.backgrounds, args.image_size,
                 args.seconds, args.workers, args.no_source_fraction, progress=not args.quiet,
                 plan_from=args.plan, force=args.force)
    for split, s in m["splits"].items():
        groups = f", {s['groups']} frames with one soundtrack per object" if s.get("groups") else ""
        print(f"  {split:13s} {s['n']:5d} scenes, {s['classes']:3d} classes, {s['no_source']:3d} without source, "
              f"target area p10/p50/p90 {s['target_area_quantiles_10_50_90']}; "
              f"kinds {', '.join(f'{k} {v}' for k, v in s['kinds'].items())}{groups}")
    if m["real_sources"]:
        print("  real sources (photos / source recordings, train-val-test):")
        for name, by in m["real_sources"].items():
            print(f"    {name:10s} " + "  ".join(f"{sp} {v['photos']}/{v['sources']}" for sp, v in by.items()))
    if m["real_missing"]:
        print(f"  real data missing (left out): {', '.join(m['real_missing'])}")
    total = sum(m["counts"].values())
    print(f"made {total} scenes in {args.out} ({m['elapsed_s']} s; {len(m['classes_seen'])} seen + "
          f"{len(m['classes_unheard'])} unheard classes, held-out speakers {', '.join(m['digit_speakers_heldout']) or 'none'}); "
          f"next: jsa-rt train --data {args.out}")
    return 0
