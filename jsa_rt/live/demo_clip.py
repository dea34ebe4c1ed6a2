"""Build the demo's camera + microphone stand-in from real data: clip.mp4, clip.wav, truth.json.

The clip is a sequence of segments; each starts with a *switch* (the sound changes source) and
knows, frame by frame, which box is sounding (None while nothing sounds). Where the segments
come from is a scene source:

- `StampScenes` (`--scene stamps`, the default): a background photo with one *sounding* Tux Paint
  stamp (a PNG that has an OGG recording of that object beside it) drifting slowly across it and
  two *silent* stamps (PNGs without a sound) standing still; the soundtrack is the sounding
  stamp's recording, looped. A new scene per segment.
- `RealScenes` (`--scene real`): 2 (sometimes 3) real photographs side by side, tiles of
  different sounding classes from the class map's *test* split (jsa_rt/train/classmap.py), held
  for a few segments while the sound switches between held-out real recordings of the classes
  in view: one sounds at a time, with a second of silence before the next. A tile is its
  object's box.

Because we compose the frames ourselves, the ground-truth box of the sounding object is known
exactly in every frame (truth.json). The three files are written atomically: Ctrl-C while the
clip is being built leaves the previous clip (or none), never a partial file.

Data: `--data`, else $JSA_DATA, else ../shared/data next to the repository, else (stamps only)
Debian's `tuxpaint-stamps-default` (/usr/share/tuxpaint/stamps; no photos there: gradients).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..audio_io import load_audio
from ..errors import InputError
from ..paths import REPO_DATA, data_root

DEBIAN_STAMPS = Path("/usr/share/tuxpaint/stamps")
# Box areas as a fraction of the frame, in the training scenes' range (jsa_rt/train/scenes.py:
# mostly 25-60 %, median 0.38), at its small end so that the object has room to move.
TARGET_AREA = (0.25, 0.40)
DISTRACTOR_AREA = (0.03, 0.07)
DRIFT = 0.12                     # how far (fraction of the frame width) the target moves per scene
SOUND_DBFS = -20.0               # loudness of the looped recordings
NOISE_DBFS = -60.0               # a quiet room under everything (real microphones are never silent)
MIN_STAMP_PX = 64


def data_roots(data: str | None) -> list[Path]:
    if data:                          # a folder named with --data is the only place to look
        return [Path(data)]
    return list(dict.fromkeys([data_root(), REPO_DATA]))     # $JSA_DATA first, then ../shared/data


def find_stamp_root(data: str | None) -> Path | None:
    """The folder whose subfolders (animals/, vehicles/, ...) hold the stamps."""
    for root in data_roots(data):
        for cand in (root / "tuxpaint-stamps" / "stamps", root / "stamps", root):
            if (cand / "animals").is_dir():
                return cand
    return DEBIAN_STAMPS if not data and (DEBIAN_STAMPS / "animals").is_dir() else None


def find_backgrounds(data: str | None) -> list[Path]:
    for root in data_roots(data):
        folder = root / "backgrounds"
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if found:
                return found
    return []


def scan(stamp_root: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(sounding (png, ogg) pairs, silent pngs); spoken digits (symbols/math) are left out."""
    sounding, silent = [], []
    for png in sorted(stamp_root.rglob("*.png")):
        if "math" in png.parts:
            continue
        ogg = png.with_suffix(".ogg")
        (sounding.append((png, ogg)) if ogg.is_file() else silent.append(png))
    return sounding, silent


# ---- pixels --------------------------------------------------------------------------------------
def load_stamp(path: Path, area: float, frame: tuple[int, int]) -> np.ndarray | None:
    """BGRA float32 in [0, 1], cropped to its alpha and scaled so its box covers `area` of the
    frame (never wider or taller than 90 % of it); None if unusable (no alpha, tiny)."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] != 4 or max(img.shape[:2]) < MIN_STAMP_PX:
        return None
    ys, xs = np.nonzero(img[..., 3] > 25)
    if ys.size < 100:
        return None
    img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    w, h = frame
    scale = min(np.sqrt(area * w * h / (img.shape[0] * img.shape[1])),
                0.9 * w / img.shape[1], 0.9 * h / img.shape[0])
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return img.astype(np.float32) / 255.0


def load_background(path: Path | None, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """BGR float32 (h, w, 3): the photo scaled to cover the frame and centre-cropped, or a gradient."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
    if img is None:
        top, bottom = rng.uniform(0.3, 0.9, 3), rng.uniform(0.1, 0.6, 3)
        ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (h, w, 3)).astype(np.float32)
    scale = max(w / img.shape[1], h / img.shape[0])
    img = cv2.resize(img, (max(w, round(img.shape[1] * scale)), max(h, round(img.shape[0] * scale))),
                     interpolation=cv2.INTER_AREA)
    y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[y0:y0 + h, x0:x0 + w].astype(np.float32) / 255.0


def paste(canvas: np.ndarray, stamp: np.ndarray, x: int, y: int) -> tuple[float, float, float, float]:
    """Alpha-blend a BGRA stamp at (x, y) (clipped); returns its visible box in [0, 1] coordinates."""
    h, w = canvas.shape[:2]
    sh, sw = stamp.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    part = stamp[y0 - y:y1 - y, x0 - x:x1 - x]
    a = part[..., 3:4]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + part[..., :3] * a
    ys, xs = np.nonzero(part[..., 3] > 0.1)
    return (float(x0 + xs.min()) / w, float(y0 + ys.min()) / h,
            float(x0 + xs.max() + 1) / w, float(y0 + ys.max() + 1) / h)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# ---- sound ---------------------------------------------------------------------------------------
def loop_sound(path: Path, n: int, rate: int) -> np.ndarray | None:
    try:
        wave = load_audio(path, rate)
    except InputError:
        return None
    rms = float(np.sqrt(np.mean(wave ** 2)))
    if wave.size < rate // 4 or rms < 1e-4:
        return None
    wave = wave * (10 ** (SOUND_DBFS / 20) / rms)
    wave = np.clip(np.tile(wave, n // wave.size + 1)[:n], -1, 1)
    fade = min(n // 2, rate // 50)                      # 20 ms fades: no clicks at scene cuts
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    wave[:fade] *= ramp
    wave[n - fade:] *= ramp[::-1]
    return wave.astype(np.float32)


# ---- scene sources -------------------------------------------------------------------------------
SCENES = ("stamps", "real")
REAL_SPLIT = "test"              # real scenes show only held-out photos and recordings
TURNS_PER_VIEW = 4               # real scenes: sound switches before the photos change
GAP_SECONDS = 1.0                # real scenes: silence at the end of each turn (>= 1 s of it)
THREE_TILES = 0.3                # real scenes: share of views with three photos


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


def scene_source(scene: str, data: str | None, segments: int) -> SceneSource:
    if scene == "stamps":
        return StampScenes(data, segments)
    if scene == "real":
        return RealScenes(data, segments)
    raise InputError(f"unknown scene {scene!r}; choose {' or '.join(SCENES)}")


# ---- the clip ------------------------------------------------------------------------------------
def build_clip(out_dir: str | Path, data: str | None = None, segments: int = 4, seconds: float = 4.0,
               fps: float = 30.0, size: tuple[int, int] = (640, 480), rate: int = 16000,
               seed: int = 0, progress=None, scene: str | SceneSource = "stamps") -> dict:
    """Write clip.mp4, clip.wav and truth.json into `out_dir`; returns the truth dict.

    truth["frames"][i]: frame, segment, name (what sounds), box (the sounding object's, or None
    while nothing sounds) and since_switch (seconds since the segment's switch). The files appear
    only complete: they are built in a hidden folder inside `out_dir` and renamed at the end."""
    import cv2
    import soundfile as sf
    source = scene if isinstance(scene, SceneSource) else scene_source(scene, data, segments)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    per = int(round(seconds * fps))
    n_audio = int(round(per / fps * rate))
    work = Path(tempfile.mkdtemp(prefix=".clip.partial-", dir=out))
    try:
        writer = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        audio, frames, scenes = [], [], []
        source.start(rng, segments)
        try:
            for k in range(segments):
                seg = source.segment(k, rng, per, fps, n_audio, size, rate)
                for i in range(per):
                    canvas, box = seg.frame(i)
                    writer.write(np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8))
                    frames.append({"frame": len(frames), "segment": k, "name": seg.name,
                                   "box": [round(v, 5) for v in box] if box is not None else None,
                                   "since_switch": round(i / fps, 4)})
                audio.append(seg.audio)
                scenes.append(seg.scene)
                if progress:
                    progress(f"  scene {k + 1}/{segments}: {seg.line}")
        finally:
            writer.release()
        wave = np.concatenate(audio)
        wave = wave + rng.normal(0, 10 ** (NOISE_DBFS / 20), wave.size).astype(np.float32)
        sf.write(str(work / "clip.wav"), np.clip(wave, -1, 1), rate, subtype="PCM_16")
        truth = {"scene": source.kind, "fps": fps, "size": [w, h], "sample_rate": rate,
                 "seconds_per_scene": seconds, **source.truth(), "scenes": scenes, "frames": frames}
        (work / "truth.json").write_text(json.dumps(truth, indent=1))
        (out / "truth.json").unlink(missing_ok=True)    # never an old truth beside a new clip
        os.replace(work / "clip.mp4", out / "clip.mp4")
        os.replace(work / "clip.wav", out / "clip.wav")
        os.replace(work / "truth.json", out / "truth.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return truth
