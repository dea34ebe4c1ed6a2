"""Which scenes a set holds: the class and speaker split (seen, unheard, held-out speakers) and
one `SceneSpec` per scene (its split, seed, target, kind, peers). Pure planning: no pixels, no
sound; scene_compose.py turns a spec into files, scenes.py runs the whole set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .scene_catalog import Catalog

# "val-pairs" (real photos, val recordings) lets training choose best.pt by follows; it comes last
# because each split's draws are seeded by its index, so adding it left the other splits as they were
SPLITS = ("train", "val", "test", "test-unheard", "digits", "pairs", "pairs-unheard", "real", "real-pairs",
          "val-pairs")
# pair splits count frames: each frame is written once per visible sounding object
DEFAULT_COUNTS = {"train": 3000, "val": 200, "test": 400, "test-unheard": 300, "digits": 300,
                  "pairs": 150, "pairs-unheard": 120, "real": 300, "real-pairs": 150, "val-pairs": 150}
SMALL_COUNTS = {"train": 24, "val": 8, "test": 12, "test-unheard": 10, "digits": 10,
                "pairs": 4, "pairs-unheard": 4, "real": 6, "real-pairs": 4, "val-pairs": 4}
PAIR_SPLITS = ("pairs", "pairs-unheard", "real-pairs", "val-pairs")
REAL_SCENE_SPLITS = ("real", "real-pairs", "val-pairs")     # scene splits made of real photos and recordings only


def real_material(split: str) -> str:
    """The class map's split whose photos and recordings a scene split uses: train and val their
    own, val-pairs the val material, every test-like split the held-out material."""
    return split if split in ("train", "val") else "val" if split == "val-pairs" else "test"
# What train and val frames are made of (kind: share). "peers": a Tux Paint cut-out scene whose
# silent objects include 1-2 other sounding classes as large as the target, so only the sound
# tells which one it is; real photos as mosaics, COCO scenes, and cut-outs pasted into photos.
TRAIN_MIX = {"cutout": 0.1, "peers": 0.35, "mosaic": 0.3, "coco": 0.1, "photo-cutout": 0.15}
TRAIN_ALL_SOUNDS = 0.3      # share of train multi-object frames also written with each other sound
UNHEARD_FRACTION = 0.2
HELD_OUT_SPEAKERS = 2


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
        elif split in REAL_SCENE_SPLITS:
            pool, speakers = list(real.get(real_material(split), ())), []
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
    kind = "mosaic" if split in REAL_SCENE_SPLITS else "peers"
    specs = []
    for i in range(n):
        k = min(len(pool), 2 if rng.random() < 0.7 else 3)
        chosen = [pool[j] for j in rng.permutation(len(pool))[:k]]
        if kind == "peers":      # classes playing the same recording cannot both be in view
            chosen = [chosen[0]] + list(_peer_classes(pool, chosen[0], rng, k - 1, sound_of))
        specs.append(SceneSpec(f"{split}_{i:05d}", split, (seed, split_index, i), chosen[0], None, None,
                               kind, tuple(chosen[1:]), True))
    return specs




def parse_counts(text: str, base: dict[str, int]) -> dict[str, int]:
    """"train=3000,val=200" -> `base` with those counts replaced."""
    counts = dict(base)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in SPLITS or not value.isdigit():
            raise InputError(f"bad --counts entry {part!r}: use split=N with split in {', '.join(SPLITS)}")
        counts[name] = int(value)
    return counts
