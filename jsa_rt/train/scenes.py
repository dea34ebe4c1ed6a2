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

Target boxes: 85 % of the scenes draw a box area of 25-60 % of the frame (a median-threshold
map marks half the frame, so cIoU >= 0.5 needs a box of at least 25 %); 15 % draw 8-25 %
(the "small" bucket). Very elongated stamps and rotation move the realised area a little; the
manifest `scenes.json` records the realised distribution per split.

Frames are 256x256 JPEG (so training's resize-246/random-crop-224 has room; evaluation resizes
the whole frame, and boxes are normalised so they scale with it); audio 16 kHz mono 16-bit,
5.0 s by default. Each scene depends only on (seed, split, index): the same seed gives the same
bytes, whatever the number of worker processes.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..args import non_negative_int, positive_float, positive_int, unit_interval
from ..atomic import disk_full, write_bytes, write_text
from ..errors import InputError
from .scene_audio import compose_audio, load_clip
from .classmap import Photo, RealCatalog, build_real_catalog
from .scene_catalog import Catalog, Stamp, build_catalog
from .scene_image import ObjectSpec, compose_image
from .scene_real import coco_frame, mosaic
from .progress import progress_bar

SPLITS = ("train", "val", "test", "test-unheard", "digits", "pairs", "pairs-unheard", "real", "real-pairs")
# pair splits count frames: each frame is written once per visible sounding object
DEFAULT_COUNTS = {"train": 3000, "val": 200, "test": 400, "test-unheard": 300, "digits": 300,
                  "pairs": 150, "pairs-unheard": 120, "real": 300, "real-pairs": 150}
SMALL_COUNTS = {"train": 24, "val": 8, "test": 12, "test-unheard": 10, "digits": 10,
                "pairs": 4, "pairs-unheard": 4, "real": 6, "real-pairs": 4}
PAIR_SPLITS = ("pairs", "pairs-unheard", "real-pairs")
# What train and val frames are made of (kind: share). "peers": a Tux Paint cut-out scene whose
# silent objects include 1-2 other sounding classes as large as the target, so only the sound
# tells which one it is; real photos as mosaics, COCO scenes, and cut-outs pasted into photos.
TRAIN_MIX = {"cutout": 0.1, "peers": 0.35, "mosaic": 0.3, "coco": 0.1, "photo-cutout": 0.15}
TRAIN_ALL_SOUNDS = 0.3      # share of train multi-object frames also written with each other sound
SAMPLE_RATE = 16000
UNHEARD_FRACTION = 0.2
HELD_OUT_SPEAKERS = 2
LARGE_TARGET = (0.25, 0.60)
SMALL_TARGET = (0.08, 0.25)
SMALL_TARGET_P = 0.15
FORMAT_VERSION = 2          # 2: no silent copies of sounding stamps, one class per recording, FSDD takes split


@dataclass(frozen=True)
class SceneSpec:
    """What a scene shows and plays; how it looks is drawn from its own seed in the worker."""
    id: str
    split: str
    seed: tuple[int, int, int]
    target: str | None            # class name ("digit_3" for digits); None: no visible source
    speaker: str | None           # FSDD speaker of a digit scene
    no_source: str | None         # None | "silence" | "offscreen"
    kind: str = "cutout"          # cutout | peers | mosaic | coco | photo-cutout
    peers: tuple[str, ...] = ()   # other sounding classes in view
    all_sounds: bool = False      # write the frame once per sounding object (a group)


@dataclass(frozen=True)
class SplitPlan:
    seen: tuple[str, ...]                  # stamp classes
    unheard: tuple[str, ...]
    train_speakers: tuple[str, ...]
    heldout_speakers: tuple[str, ...]
    real: dict = None                      # split -> real classes usable there (photos + recordings)


def plan_classes(catalog: Catalog, seed: int) -> SplitPlan:
    rng = np.random.default_rng([seed, 1000])
    names = sorted(c.name for c in catalog.classes)
    order = [names[i] for i in rng.permutation(len(names))]
    k = max(1, round(UNHEARD_FRACTION * len(names)))
    speakers = list(catalog.speakers)
    speakers = [speakers[i] for i in rng.permutation(len(speakers))]
    held = min(HELD_OUT_SPEAKERS, max(len(speakers) - 1, 0))
    seen = sorted(order[k:])
    # a class whose recording a seen class also plays is not unheard: it is left out altogether
    heard = set().union(*(catalog.same_sound(c) for c in seen)) if seen else set()
    unheard = sorted(c for c in order[:k] if c not in heard)
    return SplitPlan(tuple(seen), tuple(unheard), tuple(sorted(speakers[held:])), tuple(sorted(speakers[:held])))


def plan_scenes(plan: SplitPlan, counts: dict[str, int], seed: int, no_source_fraction: float,
                sound_of: dict[str, str] | None = None) -> list[SceneSpec]:
    """`sound_of`: class -> recording identity (Catalog's sound keys), so two classes playing one
    recording are never both in view."""
    sound_of = sound_of or {}
    digits = [f"digit_{d}" for d in range(10)] if plan.train_speakers else []
    real = plan.real or {}
    specs = []
    for split_index, split in enumerate(SPLITS):
        n = counts.get(split, 0)
        if n <= 0:
            continue
        if split in ("test-unheard", "pairs-unheard"):
            pool, speakers = list(plan.unheard), list(plan.train_speakers)
        elif split == "digits":
            pool, speakers = digits, list(plan.heldout_speakers)
        elif split in ("real", "real-pairs"):
            pool, speakers = list(real.get("test", ())), []
        elif split == "pairs":
            pool, speakers = list(plan.seen), []
        else:
            pool, speakers = list(plan.seen) + digits, list(plan.train_speakers)
        if not pool or (split == "digits" and not speakers):
            continue
        rng = np.random.default_rng([seed, split_index, 1_000_000])
        if split in PAIR_SPLITS:
            specs += _plan_pairs(split, split_index, pool, n, seed, rng, sound_of)
            continue
        # class-balanced: every class the same number of times (+-1), in random order
        targets = [pool[i % len(pool)] for i in range(n)]
        targets = [targets[i] for i in rng.permutation(n)]
        n_none = 0 if split in ("train", "real") else int(round(no_source_fraction * n))
        none_at = set(rng.permutation(n)[:n_none].tolist())
        # train and val: frames of several kinds (a stream of its own, so the draws above stay put)
        mixed = split in ("train", "val") and bool(real.get(split))
        kinds = np.random.default_rng([seed, split_index, 2_000_000])
        for i in range(n):
            target = None if i in none_at else targets[i]
            no_source = None if target else ("silence" if len(none_at) and rng.random() < 0.5 else "offscreen")
            speaker = speakers[int(rng.integers(len(speakers)))] if target and target.startswith("digit_") else None
            kind, peers, all_sounds = "cutout", (), False
            if split == "real":
                kind = "coco" if kinds.random() < 0.35 else "mosaic"
            elif mixed and target:
                kind = str(kinds.choice(list(TRAIN_MIX), p=list(TRAIN_MIX.values())))
                if kind in ("mosaic", "coco", "photo-cutout"):
                    target = _real_target(real[split], kinds, kind)
                    speaker = None
                elif kind == "peers" and not target.startswith("digit_"):
                    peers = _peer_classes(plan.seen, target, kinds, int(kinds.integers(1, 3)), sound_of)
                else:
                    kind = "cutout"
                all_sounds = kind in ("peers", "mosaic") and kinds.random() < TRAIN_ALL_SOUNDS
            specs.append(SceneSpec(f"{split}_{i:05d}", split, (seed, split_index, i), target, speaker,
                                   no_source, kind, peers, all_sounds))
    return specs


def read_plan(manifest: Path, catalog: Catalog) -> SplitPlan:
    """The class and speaker split of an existing scene set (its scenes.json): a copy of the data
    made elsewhere (re-encoded, so recordings group differently) then trains on exactly the
    classes and speakers the full set calls seen, and never on its unheard ones."""
    try:
        m = json.loads(Path(manifest).read_text())
        names = {c.name for c in catalog.classes}
        return SplitPlan(tuple(c for c in m["classes_seen"] if c in names),
                         tuple(c for c in m["classes_unheard"] if c in names),
                         tuple(m["digit_speakers_train"]), tuple(m["digit_speakers_heldout"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--plan {manifest}: not a make-scenes scenes.json ({exc})") from None


# Real classes that Tux Paint stamps show too (cut-outs pasted into photos)
def _real_target(classes: tuple[str, ...], rng: np.random.Generator, kind: str) -> str:
    from .classmap import CLASS_MAP
    if kind == "photo-cutout":
        classes = tuple(c.name for c in CLASS_MAP if c.tux and c.name in classes) or classes
    return classes[int(rng.integers(len(classes)))]


def _peer_classes(pool, target: str, rng: np.random.Generator, count: int,
                  sound_of: dict[str, str]) -> tuple[str, ...]:
    """`count` other classes of the pool, each with a sound of its own (never the target's)."""
    others = [c for c in pool if c != target and not c.startswith("digit_")
              and not (sound_of.get(c) and sound_of.get(c) == sound_of.get(target))]
    picked = rng.permutation(len(others))[:count]
    return tuple(others[i] for i in sorted(picked))


def _plan_pairs(split: str, split_index: int, pool: list[str], n: int, seed: int,
                rng: np.random.Generator, sound_of: dict[str, str]) -> list[SceneSpec]:
    """n frames showing 2 (70 %) or 3 sounding objects of different classes; each frame is
    written once per object (the group), with that object's sound."""
    kind = "mosaic" if split == "real-pairs" else "peers"
    specs = []
    for i in range(n):
        k = min(len(pool), 2 if rng.random() < 0.7 else 3)
        chosen = [pool[j] for j in rng.permutation(len(pool))[:k]]
        if kind == "peers":      # classes playing the same recording cannot both be in view
            chosen = [chosen[0]] + list(_peer_classes(pool, chosen[0], rng, k - 1, sound_of))
        specs.append(SceneSpec(f"{split}_{i:05d}", split, (seed, split_index, i), chosen[0], None, None,
                               kind, tuple(chosen[1:]), True))
    return specs


# ---- one scene (runs in a worker process) -----------------------------------------------------
_CATALOG: Catalog | None = None
_REAL: RealCatalog | None = None
_PLAN: SplitPlan | None = None
_OPTIONS: dict = {}


def _init_worker(catalog: Catalog, real: RealCatalog | None, plan: SplitPlan, options: dict) -> None:
    global _CATALOG, _REAL, _PLAN, _OPTIONS
    import cv2
    cv2.setNumThreads(1)
    _CATALOG, _REAL, _PLAN, _OPTIONS = catalog, real, plan, options


def _visible_pool(split: str) -> tuple[list[str], list[str]]:
    """(classes whose images may appear as distractors, classes that may sound off-screen)."""
    if split in ("test-unheard", "pairs-unheard"):
        return list(_PLAN.seen) + list(_PLAN.unheard), list(_PLAN.seen) + list(_PLAN.unheard)
    return list(_PLAN.seen), list(_PLAN.seen)


def _object_for(name: str, rng: np.random.Generator) -> tuple[ObjectSpec, str]:
    if name.startswith("digit_"):
        d = int(name.split("_")[1])
        return ObjectSpec(name, _CATALOG.digit_images.get(d), d), "digits"
    cls = _CATALOG.class_by_name(name)
    stamp = cls.stamps[int(rng.integers(len(cls.stamps)))]
    return ObjectSpec(name, stamp), cls.category


def _pick_distractors(rng: np.random.Generator, spec: SceneSpec, category: str | None,
                      exclude: set[str], count: int) -> list[ObjectSpec]:
    visible, _ = _visible_pool(spec.split)
    # a class playing the same recording as the target or the off-screen sound would be a second,
    # unannotated source of it
    exclude = set(exclude).union(*(_CATALOG.same_sound(x) for x in exclude if not x.startswith("digit_")))
    others: list[tuple[str, Stamp]] = [(Path(s.image).stem, s) for s in _CATALOG.silent]
    for name in visible:
        if name not in exclude:
            others += [(name, s) for s in _CATALOG.class_by_name(name).stamps]
    out = []
    for _ in range(count):
        if category == "digits" and rng.random() < 0.6:
            d = int(rng.choice([d for d in range(10) if f"digit_{d}" not in exclude]))
            out.append(ObjectSpec(f"digit_{d}", _CATALOG.digit_images.get(d), d))
            continue
        same = [o for o in others if o[1].category == category]
        pool = same if same and rng.random() < 0.5 else others
        name, stamp = pool[int(rng.integers(len(pool)))]
        out.append(ObjectSpec(name, stamp))
    return out


# FSDD has 50 takes per (digit, speaker): each split of a speaker's digits uses its own takes,
# so val and test never replay a recording heard in training (take number mod 10)
TAKES_BY_SPLIT = {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)}


def _split_takes(takes: list[str], split: str) -> list[str]:
    allowed = TAKES_BY_SPLIT.get(split)             # other splits (digits) have held-out speakers
    if allowed is None:
        return takes
    mine = [t for t in takes if int(Path(t).stem.split("_")[2]) % 10 in allowed]
    return mine or takes


def _target_clips(name: str, speaker: str | None, rng: np.random.Generator, split: str) -> list[np.ndarray]:
    rate = SAMPLE_RATE
    if name.startswith("digit_"):
        takes = _split_takes(_CATALOG.digit_takes[(int(name.split("_")[1]), speaker)], split)
        chosen = rng.permutation(len(takes))[: int(rng.integers(2, 6))]
        return [load_clip(takes[i], rate) for i in chosen]
    return [load_clip(_CATALOG.class_by_name(name).sound, rate)]


def make_scene(spec: SceneSpec) -> list[dict]:
    """Compose and write one frame and its soundtrack(s); returns their annotation entries
    (one, or one per sounding object in view for a group)."""
    if spec.kind == "cutout":
        return [_cutout_scene(spec)]
    return _multi_scene(spec)


def _cutout_scene(spec: SceneSpec) -> dict:
    """The single-source cut-out scene (the format-2 benchmark's test splits, unchanged)."""
    rng = np.random.default_rng(list(spec.seed))
    size, n = _OPTIONS["image_size"], int(round(_OPTIONS["seconds"] * SAMPLE_RATE))
    out = Path(_OPTIONS["out"])
    _, audible = _visible_pool(spec.split)

    target = category = None
    if spec.target:
        target, category = _object_for(spec.target, rng)
        area_range = SMALL_TARGET if rng.random() < SMALL_TARGET_P else LARGE_TARGET
        area = rng.uniform(*area_range)
        count = int(rng.choice([0, 1, 2, 3], p=[0.2, 0.3, 0.3, 0.2]))
    else:
        area, count = 0.0, int(rng.integers(1, 5))

    offscreen_name = None
    wants_offscreen = spec.no_source == "offscreen" or (spec.target and rng.random() < 0.3)
    if wants_offscreen:
        choices = [c for c in audible if c != spec.target]
        offscreen_name = choices[int(rng.integers(len(choices)))]
    exclude = {x for x in (spec.target, offscreen_name) if x}
    distractors = _pick_distractors(rng, spec, category, exclude, count)

    image, placed, background = compose_image(rng, size, _CATALOG.backgrounds, target, area, distractors)
    target_clips = _target_clips(spec.target, spec.speaker, rng, spec.split) if spec.target else None
    offscreen_clips = [load_clip(_CATALOG.class_by_name(offscreen_name).sound, SAMPLE_RATE)] if offscreen_name else None
    wave, audio_info = compose_audio(rng, n, SAMPLE_RATE, target_clips,
                                     bool(spec.target and spec.target.startswith("digit_")), offscreen_clips)

    quality = int(rng.integers(75, 96))
    write_bytes(out / "frames" / f"{spec.id}.jpg", _jpeg_bytes(image, quality))
    _write_wav(out / "audio" / f"{spec.id}.wav", wave)

    def box(p):
        return [round(v, 5) for v in p.box]
    targets = [p for p in placed if p.role == "target"]
    others = [p for p in placed if p.role == "distractor"]
    return {
        "file": spec.id,
        "class": spec.target or (offscreen_name if spec.no_source == "offscreen" else "silence"),
        "bbox": [box(p) for p in targets],
        "no_source": spec.no_source is not None,
        "distractor_boxes": [box(p) for p in others],
        "distractor_classes": [p.name for p in others],
        "category": category,
        "speaker": spec.speaker,
        "target_area": round(targets[0].area, 5) if targets else 0.0,
        "offscreen_class": offscreen_name,
        "background": background,
        "audio": audio_info,
    }


# ---- frames with several sounding candidates, and frames of real photos --------------------------
def _box(b) -> list[float]:
    return [round(float(v), 5) for v in b]


def _real_clips(name: str, split: str, rng: np.random.Generator) -> list[np.ndarray]:
    """1-3 recordings of a real class from the split's own pool (never another split's)."""
    pool = _REAL.classes[name].recordings_in(_real_split(split))
    chosen = rng.permutation(len(pool))[: int(rng.integers(1, 4))]
    return [load_clip(pool[i].path, SAMPLE_RATE) for i in chosen]


def _real_of_tux(name: str) -> str | None:
    from .classmap import CLASS_MAP
    known = set().union(*(_PLAN.real or {}).values())
    return next((c.name for c in CLASS_MAP if name in c.tux and c.name in known), None) if _REAL else None


def _clips_for(name: str, spec: SceneSpec, rng: np.random.Generator) -> list[np.ndarray]:
    pool = _real_split(spec.split)
    if _REAL and name in _REAL.classes and _REAL.classes[name].recordings_in(pool):
        return _real_clips(name, spec.split, rng)
    real = _real_of_tux(name)
    if spec.split == "train" and real and _REAL.classes[real].recordings_in(pool) and rng.random() < 0.5:
        return _real_clips(real, spec.split, rng)      # a dog stamp may bark like any dog
    return _target_clips(name, spec.speaker, rng, spec.split)


def _real_split(split: str) -> str:
    """The class map's split whose photos and recordings a scene split uses (every test-like
    split draws on held-out material)."""
    return split if split in ("train", "val") else "test"


def _mosaic_frame(spec: SceneSpec, rng: np.random.Generator, size: int):
    """Tiles: the target class, the planned peers, then other real classes (silent candidates)
    or silent photos. Returns (image, [(class or '', box)], background name)."""
    pool = _real_split(spec.split)
    names = [spec.target, *spec.peers]
    count = max(len(names), int(rng.choice([2, 3, 4], p=[0.4, 0.3, 0.3])))
    usable = [c for c in (_PLAN.real or {}).get(pool, ()) if c not in names]
    photos, classes = [], []
    for name in names:
        options = _REAL.classes[name].photos_in(pool)
        photos.append(options[int(rng.integers(len(options)))])
        classes.append(name)
    for _ in range(count - len(names)):
        if usable and rng.random() < 0.7:
            name = usable.pop(int(rng.integers(len(usable))))
            options = _REAL.classes[name].photos_in(pool)
            photos.append(options[int(rng.integers(len(options)))])
            classes.append(name)
        else:
            silent = [p for p in _REAL.silent_photos if p.split == pool]
            photos.append(silent[int(rng.integers(len(silent)))])
            classes.append("")
    image, boxes = mosaic(rng, size, photos)
    return image, list(zip(classes, boxes)), f"mosaic:{count}"


def _coco_frame(spec: SceneSpec, rng: np.random.Generator, size: int):
    pool = _real_split(spec.split)
    options = [(img, i) for img in _REAL.coco if img.split == pool
               for i, (name, box) in enumerate(img.objects)
               if name == spec.target and any(p.path == img.path and p.box == box
                                              for p in _REAL.classes[name].photos)]
    if not options:
        return None
    image, focus = options[int(rng.integers(len(options)))]
    frame, objects = coco_frame(rng, size, image, focus)
    known = set().union(*(_PLAN.real or {}).values())          # never a left-out (unheard) class
    objects = [(n if n in known else "", b) for n, b in objects]
    if not any(n == spec.target for n, _ in objects):
        return None
    return frame, objects, f"coco:{Path(image.path).stem}"


def _cutout_frame(spec: SceneSpec, rng: np.random.Generator, size: int):
    """Cut-outs: the target and its peers as large as each other, 0-2 small silent objects; on a
    real photo for "photo-cutout". Returns (image, [(class, box)], background name, category)."""
    target_name = spec.target
    # a real class shown as a Tux Paint stamp; a peers frame's target is a Tux class already (and
    # may be unheard in pairs-unheard: none of its real class's stamps is seen then)
    if _REAL and spec.kind == "photo-cutout" and spec.target in _REAL.classes:
        tux = [t for t in _REAL.classes[spec.target].tux if t in _PLAN.seen]
        target_name = tux[int(rng.integers(len(tux)))]
    target, category = _object_for(target_name, rng)
    peers = [_object_for(p, rng)[0] for p in spec.peers]
    k = 1 + len(peers)
    area = rng.uniform(*{1: (0.15, 0.45), 2: (0.1, 0.3)}.get(k, (0.07, 0.2)))
    names = {target_name, *spec.peers}
    distractors = _pick_distractors(rng, spec, category, names, int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2])))
    background = None
    if spec.kind == "photo-cutout":
        pool = _real_split(spec.split)
        photos = [p for p in _REAL.silent_photos if p.split == pool] + \
                 [Photo(c.path, c.split) for c in _REAL.coco if c.split == pool]
        photo = photos[int(rng.integers(len(photos)))]
        from .scene_real import fill_tile, photo_crop
        background = (fill_tile(photo_crop(photo, rng), size, size, rng), f"photo:{Path(photo.path).stem}")
    image, placed, bg = compose_image(rng, size, _CATALOG.backgrounds, target, area, distractors, peers, background)
    objects = [({"target": spec.target, "peer": p.name}.get(p.role, ""), p.box) for p in placed]
    return image, objects, bg, category


def _multi_scene(spec: SceneSpec) -> list[dict]:
    rng = np.random.default_rng(list(spec.seed))
    size, n = _OPTIONS["image_size"], int(round(_OPTIONS["seconds"] * SAMPLE_RATE))
    out = Path(_OPTIONS["out"])
    made = None
    category, kind = "real", spec.kind
    if spec.kind == "coco":
        made = _coco_frame(spec, rng, size)
    if spec.kind == "mosaic" or (spec.kind == "coco" and made is None):
        made, kind = _mosaic_frame(spec, rng, size), "mosaic"       # no COCO photo of the class here
    if made is None:
        image, objects, background, category = _cutout_frame(spec, rng, size)
    else:
        image, objects, background = made
    sounding = [spec.target, *spec.peers]
    if spec.all_sounds and spec.kind == "mosaic" and spec.split == "train":
        sounding = [c for c, _ in objects if c]                 # every real tile, each with its sound
    candidates = [{"class": c, "box": _box(b)} for c, b in objects if c]
    jpeg = _jpeg_bytes(image, int(rng.integers(75, 96)))
    entries = []
    for k, name in enumerate(sounding if spec.all_sounds else sounding[:1]):
        audio_rng = np.random.default_rng([*spec.seed, 7, k])
        offscreen_clips = offscreen_name = None
        if audio_rng.random() < 0.3 and _REAL and _REAL.offscreen:      # a sound with no picture
            pool = [r for r in _REAL.offscreen if r.split == _real_split(spec.split)]
            rec = pool[int(audio_rng.integers(len(pool)))]
            offscreen_clips, offscreen_name = [load_clip(rec.path, SAMPLE_RATE)], Path(rec.path).stem
        clips = _clips_for(name, spec, audio_rng)
        wave, audio_info = compose_audio(audio_rng, n, SAMPLE_RATE, clips, name == "person", offscreen_clips)
        scene_id = f"{spec.id}_{k}" if spec.all_sounds else spec.id
        write_bytes(out / "frames" / f"{scene_id}.jpg", jpeg)
        _write_wav(out / "audio" / f"{scene_id}.wav", wave)
        boxes = [_box(b) for c, b in objects if c == name]
        entries.append({
            "file": scene_id, "class": name, "bbox": boxes, "no_source": False,
            "distractor_boxes": [_box(b) for c, b in objects if c != name],
            "distractor_classes": [c for c, _ in objects if c != name],
            "category": category, "speaker": None,
            "target_area": round(max((b[2] - b[0]) * (b[3] - b[1]) for b in boxes), 5) if boxes else 0.0,
            "offscreen_class": offscreen_name, "background": background, "audio": audio_info,
            "kind": kind, "candidates": candidates, "group": spec.id if spec.all_sounds else None,
        })
    return entries


def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """A float [0, 1] RGB frame as JPEG (encoded once, written once per soundtrack of a group)."""
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_wav(path: Path, wave: np.ndarray) -> None:
    import soundfile as sf
    tmp = path.with_suffix(".tmp.wav")
    sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)


# ---- the whole set ------------------------------------------------------------------------------
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
            _init_worker(catalog, real, plan, options)
            for made in map(make_scene, specs):
                entries.append(made)
                bar.update(1)
        else:
            import multiprocessing as mp
            with mp.get_context("spawn").Pool(workers, _init_worker, (catalog, real, plan, options)) as pool:
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


def parse_counts(text: str, base: dict[str, int]) -> dict[str, int]:
    """"train=3000,val=200" -> `base` with those counts replaced."""
    counts = dict(base)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in SPLITS or not value.isdigit():
            raise InputError(f"bad --counts entry {part!r}: use split=N with split in {', '.join(SPLITS)}")
        counts[name] = int(value)
    return counts


# ---- CLI ----------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("make-scenes", help="compose the offline audio-visual benchmark from real images and sounds",
                              description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--source", type=Path, default=None,
                   help="Tux Paint stamps folder (default $JSA_DATA/tuxpaint-stamps, else /usr/share/tuxpaint/stamps)")
    p.add_argument("--fsdd", type=Path, default=None, help="FSDD folder (default $JSA_DATA/fsdd)")
    p.add_argument("--backgrounds", type=Path, default=None, help="background photos (default $JSA_DATA/backgrounds)")
    p.add_argument("--seed", type=int, default=0)
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
