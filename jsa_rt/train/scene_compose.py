"""One scene, composed and written: its frame (cut-outs, photo mosaics, COCO photos) and its
soundtrack(s), with the annotation entries. Runs in a worker process (`init_worker` hands it the
catalogs and plan once); each scene depends only on its spec's seed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from .classmap import Photo, RealCatalog
from .scene_audio import compose_audio, load_clip
from .scene_catalog import Catalog, Stamp
from .scene_image import ObjectSpec, compose_image
from .scene_plan import SceneSpec, SplitPlan, real_material
from .scene_real import coco_frame, mosaic

SAMPLE_RATE = 16000
LARGE_TARGET = (0.25, 0.60)
SMALL_TARGET = (0.08, 0.25)
SMALL_TARGET_P = 0.15

# set once per worker process by init_worker
_CATALOG: Catalog | None = None
_REAL: RealCatalog | None = None
_PLAN: SplitPlan | None = None
_OPTIONS: dict = {}


def init_worker(catalog: Catalog, real: RealCatalog | None, plan: SplitPlan, options: dict) -> None:
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
    pool = _REAL.classes[name].recordings_in(real_material(split))
    chosen = rng.permutation(len(pool))[: int(rng.integers(1, 4))]
    return [load_clip(pool[i].path, SAMPLE_RATE) for i in chosen]


def _real_of_tux(name: str) -> str | None:
    from .classmap import CLASS_MAP
    known = set().union(*(_PLAN.real or {}).values())
    return next((c.name for c in CLASS_MAP if name in c.tux and c.name in known), None) if _REAL else None


def _clips_for(name: str, spec: SceneSpec, rng: np.random.Generator) -> list[np.ndarray]:
    pool = real_material(spec.split)
    if _REAL and name in _REAL.classes and _REAL.classes[name].recordings_in(pool):
        return _real_clips(name, spec.split, rng)
    real = _real_of_tux(name)
    if spec.split == "train" and real and _REAL.classes[real].recordings_in(pool) and rng.random() < 0.5:
        return _real_clips(real, spec.split, rng)      # a dog stamp may bark like any dog
    return _target_clips(name, spec.speaker, rng, spec.split)


def _mosaic_frame(spec: SceneSpec, rng: np.random.Generator, size: int):
    """Tiles: the target class, the planned peers, then other real classes (silent candidates)
    or silent photos. Returns (image, [(class or '', box)], background name)."""
    pool = real_material(spec.split)
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
    pool = real_material(spec.split)
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
        pool = real_material(spec.split)
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
            pool = [r for r in _REAL.offscreen if r.split == real_material(spec.split)]
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
