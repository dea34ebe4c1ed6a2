"""Where the demo clip's segments come from: `StampScenes` (a sounding Tux Paint stamp drifting
over a photo, two silent stamps) and `RealScenes` (real photos side by side, the sound switching
between their classes). `build_clip` (demo_clip.py) asks a source for one `Segment` at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from .demo_material import (data_roots, find_backgrounds, find_stamp_root, load_background, load_stamp,
                            loop_sound, paste, scan)

# Box areas as a fraction of the frame, in the training scenes' range (jsa_rt/train/scene_compose.py:
# mostly 25-60 %, median 0.38), at its small end so that the object has room to move.
TARGET_AREA = (0.25, 0.40)
DISTRACTOR_AREA = (0.03, 0.07)
DRIFT = 0.12                     # how far (fraction of the frame width) the target moves per scene

SCENES = ("auto", "stamps", "real")    # auto: real when the real photos and recordings are there
REAL_SPLIT = "test"              # real scenes show only held-out photos and recordings
TURNS_PER_VIEW = 4               # real scenes: sound switches before the photos change
GAP_SECONDS = 1.0                # real scenes: silence at the end of each turn (>= 1 s of it)
THREE_TILES = 0.3                # real scenes: share of views with three photos


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@dataclass
class Segment:
    """One segment of the clip: from a switch of the sound's source to the next."""
    frame: Callable[[int], tuple[np.ndarray, tuple | None]]   # i -> (BGR float32 image, sounding box or None)
    audio: np.ndarray                                          # float32, the segment's samples
    name: str                                                  # what sounds
    scene: dict                                                # what truth.json says of the segment
    line: str                                                  # the progress line


class SceneSource:
    """Where the segments come from; `build_clip` does the timeline, encoding and truth."""
    kind = ""

    def start(self, rng: np.random.Generator, segments: int) -> None:
        """Called once before the first segment (draw anything the whole clip shares here)."""

    def segment(self, k: int, rng: np.random.Generator, frames: int, fps: float, n_audio: int,
                size: tuple[int, int], rate: int) -> Segment:
        raise NotImplementedError

    def truth(self) -> dict:
        """Extra keys for truth.json (where the material came from)."""
        return {}


class StampScenes(SceneSource):
    """A new scene per segment: a sounding stamp drifting over a photo, two silent stamps."""
    kind = "stamps"

    def __init__(self, data: str | None, segments: int):
        stamp_root = find_stamp_root(data)
        if stamp_root is None and data:
            raise InputError(f"--data {data}: no Tux Paint stamps there (DIR/tuxpaint-stamps/stamps/animals/...); "
                             f"check the path, or leave --data out to use $JSA_DATA or ../shared/data")
        if stamp_root is None:
            raise InputError("no Tux Paint stamps found: sudo apt install tuxpaint-stamps-default, "
                             "or set JSA_DATA to the data folder (see tools/setup.sh)")
        self.stamp_root = stamp_root
        self.sounding, self.silent = scan(stamp_root)
        if len(self.sounding) < segments or len(self.silent) < 2:
            raise InputError(f"only {len(self.sounding)} sounding stamps under {stamp_root}: need {segments}")
        self.backgrounds = find_backgrounds(data)

    def start(self, rng, segments):
        self.order = rng.permutation(len(self.sounding))
        self.used = 0

    def truth(self):
        return {"stamp_root": str(self.stamp_root)}

    def segment(self, k, rng, frames, fps, n_audio, size, rate):
        w, h = size
        # the next sounding stamp whose image and recording are both usable
        while True:
            if self.used >= len(self.order):
                raise InputError(f"not enough usable sounding stamps under {self.stamp_root}")
            png, ogg = self.sounding[self.order[self.used]]
            self.used += 1
            stamp = load_stamp(png, rng.uniform(*TARGET_AREA), size)
            sound = loop_sound(ogg, n_audio, rate) if stamp is not None else None
            if sound is not None:
                break
        bg_path = self.backgrounds[rng.integers(len(self.backgrounds))] if self.backgrounds else None
        bg = load_background(bg_path, w, h, rng)
        sh, sw = stamp.shape[:2]
        x_start = rng.uniform(0, max(1, w - sw - DRIFT * w))
        y_start = rng.uniform(0.05 * h, max(0.05 * h + 1, h - sh - 0.05 * h))
        sweep = (x_start / w, y_start / h, (x_start + sw) / w + DRIFT, (y_start + sh) / h)
        direction = rng.choice([-1, 1])
        if direction < 0:
            x_start += DRIFT * w
        # two silent stamps, still, away from the sounding one's whole path
        still = bg.copy()
        names = []
        for _ in range(200):
            if len(names) == 2:
                break
            d_path = self.silent[rng.integers(len(self.silent))]
            d = load_stamp(d_path, rng.uniform(*DISTRACTOR_AREA), size)
            if d is None:
                continue
            dx, dy = int(rng.uniform(0, w - d.shape[1])), int(rng.uniform(0, h - d.shape[0]))
            box = (dx / w, dy / h, (dx + d.shape[1]) / w, (dy + d.shape[0]) / h)
            if _overlaps(box, sweep):
                continue
            paste(still, d, dx, dy)
            names.append(d_path.stem)

        def frame(i: int):
            x = int(round(x_start + direction * DRIFT * w * i / max(1, frames - 1)))
            canvas = still.copy()
            return canvas, paste(canvas, stamp, x, int(round(y_start)))

        background = bg_path.name if bg_path else "gradient"
        return Segment(frame, sound, png.stem,
                       {"name": png.stem, "background": background, "distractors": names},
                       f"{png.stem} ({png.parent.relative_to(self.stamp_root)}) on {background}, "
                       f"silent: {', '.join(names)}")


def find_real_root(data: str | None) -> tuple[Path, list[str]]:
    """The data folder for real scenes and what it lacks (empty when usable); the first root
    that has any real folder, else the first root looked at."""
    roots = data_roots(data)
    needed = ("caltech101", "coco128", "urbansound8k", "0ad")
    for root in roots:
        if any((root / n).is_dir() for n in needed):
            missing = []
            if not any((root / n).is_dir() for n in ("caltech101", "coco128")):
                missing.append("photos (caltech101/ or coco128/)")
            if not any((root / n).is_dir() for n in ("urbansound8k", "0ad")):
                missing.append("recordings (urbansound8k/ or 0ad/)")
            return root, missing
    return roots[0], ["real photos and recordings (caltech101/, coco128/, urbansound8k/, 0ad/)"]


class RealScenes(SceneSource):
    """Real photos side by side (test split), the sound switching between their classes."""
    kind = "real"

    def __init__(self, data: str | None, segments: int):
        from ..train.classmap import build_real_catalog
        root, missing = find_real_root(data)
        where = f"--data {data}" if data else f"{root}"
        if not root.is_dir():
            raise InputError(f"--scene real: no data folder at {root}; set JSA_DATA or --data to the folder "
                             f"with caltech101/, coco128/, urbansound8k/ and 0ad/ (see its README.md)")
        if missing:
            raise InputError(f"--scene real: {where} has no {' and no '.join(missing)}; "
                             f"point --data or JSA_DATA at the shared data folder")
        self.root = root
        self.catalog = build_real_catalog(root)
        self.usable = self.catalog.usable(REAL_SPLIT)
        if len(self.usable) < 2:
            raise InputError(f"--scene real: under {root} only {len(self.usable)} class(es) have held-out "
                             f"photos and recordings ({', '.join(self.usable) or 'none'}); need 2 "
                             f"(missing there: {', '.join(self.catalog.missing) or 'nothing listed'})")

    def truth(self):
        return {"data_root": str(self.root), "split": REAL_SPLIT}

    def _rel(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def start(self, rng, segments):
        self.view = None
        self.used_recordings: set[str] = set()

    def _new_view(self, rng, size):
        import cv2
        from ..train.scene_real import fill_tile, mosaic_layout, photo_crop
        w, h = size
        count = 3 if len(self.usable) >= 3 and rng.random() < THREE_TILES else 2
        classes = [str(c) for c in rng.choice(self.usable, count, replace=False)]
        if count == 2:                                    # side by side
            cut = rng.uniform(0.42, 0.58)
            rects = [(0.0, 0.0, cut, 1.0), (cut, 0.0, 1.0, 1.0)]
        else:
            rects = [tuple(float(v) for v in r) for r in mosaic_layout(3, rng)]
        canvas = np.full((h, w, 3), 0.1, np.float32)
        gutter = 3
        tiles = []
        for name, (x0, y0, x1, y1) in zip(classes, rects):
            photos = self.catalog.classes[name].photos_in(REAL_SPLIT)
            photo = photos[rng.integers(len(photos))]
            a, b, c, d = round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)
            a2, b2 = a + (gutter if a else 0), b + (gutter if b else 0)
            rgb = fill_tile(photo_crop(photo, rng), c - a2, d - b2, rng)
            canvas[b2:d, a2:c] = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
            tiles.append({"class": name, "photo": self._rel(photo.path), "photo_split": photo.split,
                          "coco_box": list(photo.box) if photo.box else None,
                          "box": [round(a2 / w, 5), round(b2 / h, 5), round(c / w, 5), round(d / h, 5)]})
        order = [int(i) for i in rng.permutation(count)]  # the turns cycle through the tiles
        return {"still": canvas, "tiles": tiles, "order": order, "turn": 0, "index": 0}

    def _recording(self, name, rng, n_sound, rate):
        recs = self.catalog.classes[name].recordings_in(REAL_SPLIT)
        fresh = [r for r in recs if r.path not in self.used_recordings] or recs
        for i in rng.permutation(len(fresh)):
            rec = fresh[int(i)]
            sound = loop_sound(Path(rec.path), n_sound, rate)
            self.used_recordings.add(rec.path)
            if sound is not None:
                return rec, sound
        raise InputError(f"--scene real: no usable held-out recording of {name} under {self.root}")

    def segment(self, k, rng, frames, fps, n_audio, size, rate):
        if self.view is None or self.view["turn"] >= TURNS_PER_VIEW:
            index = 0 if self.view is None else self.view["index"] + 1
            self.view = self._new_view(rng, size)
            self.view["index"] = index
        view = self.view
        tile = view["tiles"][view["order"][view["turn"] % len(view["tiles"])]]
        view["turn"] += 1
        gap = min(GAP_SECONDS, 0.5 * n_audio / rate)
        n_sound = n_audio - int(round(gap * rate))
        rec, sound = self._recording(tile["class"], rng, n_sound, rate)
        audio = np.concatenate([sound, np.zeros(n_audio - n_sound, np.float32)])
        sounding_frames = int(round(n_sound / rate * fps))
        still, box = view["still"], tuple(tile["box"])

        def frame(i: int):
            return still, (box if i < sounding_frames else None)

        others = [t["class"] for t in view["tiles"] if t is not tile]
        return Segment(frame, audio, tile["class"],
                       {"name": tile["class"], "view": view["index"], "box": tile["box"],
                        "recording": self._rel(rec.path), "recording_source": rec.source,
                        "recording_split": rec.split, "sound_seconds": round(n_sound / rate, 3),
                        "tiles": [{k2: v for k2, v in t.items()} for t in view["tiles"]]},
                       f"{tile['class']} sounds ({self._rel(rec.path)}), also in view: {', '.join(others)} "
                       f"(view {view['index'] + 1}, photo {tile['photo']})")


def resolve_scene(scene: str, data: str | None) -> str:
    """"auto" -> "real" when a data folder has real photos and recordings, else "stamps"."""
    if scene != "auto":
        return scene
    root, missing = find_real_root(data)
    return "real" if root.is_dir() and not missing else "stamps"


def scene_source(scene: str, data: str | None, segments: int) -> SceneSource:
    scene = resolve_scene(scene, data)
    if scene == "stamps":
        return StampScenes(data, segments)
    if scene == "real":
        return RealScenes(data, segments)
    raise InputError(f"unknown scene {scene!r}; choose {' or '.join(SCENES)}")
