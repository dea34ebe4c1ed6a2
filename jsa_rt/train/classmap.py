"""The class map: which real pictures and which real recordings make up each sounding class.

One table (`CLASS_MAP`) says, for each class, where its pictures come from (Caltech-101 folders,
COCO-128 category ids, Tux Paint stamp classes) and where its sounds come from (UrbanSound8K
class ids, 0 A.D. sound-effect globs, the Tux Paint recording, General MIDI programs rendered
from a SoundFont, drum kits). `build_real_catalog` resolves the table against a data folder
(../shared/data by default; the instruments come from Debian packages, see instruments.py), and
assigns every source recording and every photo to train / val / test once, by a stable hash of
its identity:

- an UrbanSound8K slice by its `fsID` (slices of one field recording are near-duplicates),
- a 0 A.D. file by its path, a Caltech photo by its path, a COCO photo by its image id,
- a SoundFont phrase by (program, phrase index), a drum hit by its kit (all hits of a kit together).

So test and val never replay a recording, or show a photo, that training used. Tux Paint
recordings (one per class) are not part of the real pools: the `real` splits are held-out real
material only. Sources missing from the data folder are reported in one line, not fatal.
"""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JsaError
from . import instruments

REAL_SPLITS = ("train", "val", "test")
TEST_SHARE, VAL_SHARE = 0.2, 0.1          # of source recordings / photos, by stable hash

URBANSOUND_CLASSES = (                     # by classID, as in the file names
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music")
COCO_NAMES = {0: "person", 2: "car", 14: "bird", 15: "cat", 16: "dog", 17: "horse", 18: "sheep",
              19: "cow", 20: "elephant"}


@dataclass(frozen=True)
class ClassSources:
    """Where one class's pictures and sounds come from (names as in ../shared/data/README.md)."""
    name: str
    caltech: tuple[str, ...] = ()          # caltech101/<folder>/*.jpg: object-centred photos
    coco: tuple[int, ...] = ()             # COCO category ids boxed in coco128/labels
    tux: tuple[str, ...] = ()              # Tux Paint sounding classes showing the same thing
    urbansound: tuple[str, ...] = ()       # UrbanSound8K class names (URBANSOUND_CLASSES)
    zeroad: tuple[str, ...] = ()           # globs under 0ad/
    soundfont: tuple[int, ...] = ()        # General MIDI programs: phrases rendered by fluidsynth
    drumkits: bool = False                 # the hydrogen-drumkits one-shots (one source per kit)


CLASS_MAP: tuple[ClassSources, ...] = (
    ClassSources("dog", caltech=("dalmatian",), coco=(16,), tux=("dog",), urbansound=("dog_bark",),
                 zeroad=("voice/global/civ_dog_bark.ogg",)),
    ClassSources("car", caltech=("car_side",), coco=(2,), urbansound=("car_horn", "engine_idling")),
    ClassSources("person", caltech=("Faces_easy",), coco=(0,), urbansound=("children_playing",),
                 zeroad=("voice/*/civ/civ_male_*.ogg", "voice/*/civ/civ_female_*.ogg")),
    ClassSources("rooster", caltech=("rooster",), tux=("rooster", "hen"),
                 zeroad=("actor/fauna/animal/chicken*.ogg",)),
    ClassSources("elephant", caltech=("elephant",), coco=(20,), tux=("elephant",),
                 zeroad=("actor/fauna/animal/elephant*.ogg",)),
    ClassSources("horse", coco=(17,), tux=("horse",),
                 zeroad=("actor/fauna/animal/horse*.ogg",)),
    ClassSources("cow", tux=("cow", "cow_white"),           # coco128 boxes no cow (19) or sheep (18)
                 zeroad=("actor/fauna/animal/cattle*.ogg",)),
    ClassSources("sheep", tux=("sheep", "sheep_lamb"),
                 zeroad=("actor/fauna/animal/sheep*.ogg",)),
    ClassSources("pig", tux=("pig", "pig_golden"), zeroad=("actor/fauna/animal/pig*.ogg",)),
    ClassSources("gun", caltech=("revolver",), urbansound=("gun_shot",)),
    ClassSources("dolphin", caltech=("dolphin",), tux=("dolphin",)),
    # Instruments (instruments.py). Tux Paint's guitar stamps have no recording, so none is listed.
    ClassSources("piano", caltech=("grand_piano",), soundfont=(0, 1)),
    ClassSources("guitar", caltech=("electric_guitar",), soundfont=(26, 27, 28, 29, 30)),
    ClassSources("saxophone", caltech=("saxophone",), soundfont=(64, 65, 66, 67)),
    ClassSources("accordion", caltech=("accordion",), soundfont=(21,)),
    # GM has no euphonium: the tuba (58) and the trombone (57) are the nearest low brass
    ClassSources("euphonium", caltech=("euphonium",), soundfont=(58, 57)),
    # GM has no mandolin: plucked steel strings (acoustic guitars 24-25, banjo 105) come nearest
    ClassSources("mandolin", caltech=("mandolin",), soundfont=(24, 25, 105)),
    # no Caltech drum photo: the pictures are the Tux Paint drum stamps only
    ClassSources("drums", tux=("drumkit", "drum_tomtom_floor"), drumkits=True),
    ClassSources("violin", tux=("violin",), soundfont=(40,)),
    ClassSources("cello", tux=("cello",), soundfont=(42,)),
    ClassSources("bassoon", tux=("bassoon",), soundfont=(70,)),
)
# Sounds with no picture: off-screen sounds in the real scenes.
OFFSCREEN_URBANSOUND = ("air_conditioner", "drilling", "jackhammer", "siren", "street_music")
# Photos of things that do not sound here: silent tiles and backgrounds.
SILENT_CALTECH = ("Motorbikes", "airplanes", "helicopter", "metronome", "gramophone",
                  "cellphone", "watch", "laptop", "headphone", "ceiling_fan", "scissors")


@dataclass(frozen=True)
class Recording:
    path: str
    source: str            # identity of the source recording (what a split is decided by)
    split: str


@dataclass(frozen=True)
class Photo:
    path: str
    split: str
    box: tuple[float, float, float, float] | None = None   # a COCO object's box (crop tiles)


@dataclass(frozen=True)
class CocoImage:
    path: str
    split: str
    objects: tuple[tuple[str, tuple[float, float, float, float]], ...]   # (class or "", x0,y0,x1,y1)


@dataclass
class RealClass:
    name: str
    photos: list[Photo] = field(default_factory=list)       # whole photos and COCO object crops
    recordings: list[Recording] = field(default_factory=list)
    tux: tuple[str, ...] = ()

    def photos_in(self, split: str) -> list[Photo]:
        return [p for p in self.photos if p.split == split]

    def recordings_in(self, split: str) -> list[Recording]:
        return [r for r in self.recordings if r.split == split]


@dataclass
class RealCatalog:
    classes: dict[str, RealClass]
    silent_photos: list[Photo]
    offscreen: list[Recording]
    coco: list[CocoImage]
    missing: list[str]

    def usable(self, split: str, photos: int = 1, recordings: int = 1) -> list[str]:
        """Classes with enough photos and recordings in `split`, sorted."""
        return sorted(n for n, c in self.classes.items()
                      if len(c.photos_in(split)) >= photos and len(c.recordings_in(split)) >= recordings)

    def summary(self) -> dict:
        """Per class and split: photos and source recordings (what make-scenes prints)."""
        out = {}
        for name, c in sorted(self.classes.items()):
            out[name] = {s: {"photos": len(c.photos_in(s)),
                             "recordings": len(c.recordings_in(s)),
                             "sources": len({r.source for r in c.recordings_in(s)})} for s in REAL_SPLITS}
        return out


def split_of(key: str) -> str:
    """train / val / test from a stable hash of a source's identity (same answer on any machine)."""
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2 ** 32
    return "test" if u < TEST_SHARE else "val" if u < TEST_SHARE + VAL_SHARE else "train"


def read_yolo_boxes(label_file: Path) -> list[tuple[int, tuple[float, float, float, float]]]:
    """A YOLO label file (`class cx cy w h`, normalised) -> [(class, (x0, y0, x1, y1))], clipped."""
    boxes = []
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:])
        except ValueError:               # a malformed line is skipped like a short one
            continue
        x0, y0 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
        x1, y1 = min(1.0, cx + w / 2), min(1.0, cy + h / 2)
        if x1 > x0 and y1 > y0:
            boxes.append((cls, (x0, y0, x1, y1)))
    return boxes


def _urbansound(root: Path) -> dict[int, list[Recording]]:
    """classID -> recordings; split by fsID."""
    by_class: dict[int, list[Recording]] = {}
    for path in sorted(root.glob("fold*/*.ogg")) + sorted(root.glob("fold*/*.wav")):
        parts = path.stem.split("-")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            continue
        fs_id, class_id = parts[0], int(parts[1])
        source = f"urbansound:{fs_id}"
        by_class.setdefault(class_id, []).append(Recording(str(path), source, split_of(source)))
    return by_class


def build_real_catalog(data_root: Path | None = None,
                       tux_sounds: dict[str, str] | None = None) -> RealCatalog:
    """Resolve `CLASS_MAP` under `data_root`. `tux_sounds` (class -> recording path) adds the
    Tux Paint recording of each mapped stamp class to the training pool only."""
    from .scene_catalog import default_data_root
    root = Path(data_root) if data_root else default_data_root()
    missing: list[str] = []
    gone = instruments.missing_line(soundfont_programs())
    if gone and any(spec.soundfont or spec.drumkits for spec in CLASS_MAP):
        missing.append(gone)
    kits = instruments.drum_kits() if any(spec.drumkits for spec in CLASS_MAP) else {}
    us_root, zeroad, caltech, coco_root = (root / "urbansound8k", root / "0ad", root / "caltech101",
                                          root / "coco128")
    us = _urbansound(us_root) if us_root.is_dir() else {}
    for folder in (us_root, zeroad, caltech, coco_root):
        if not folder.is_dir():
            missing.append(folder.name)

    coco: list[CocoImage] = []
    if coco_root.is_dir():
        for image in sorted((coco_root / "images").rglob("*.jpg")):
            labels = next(iter(sorted((coco_root / "labels").rglob(image.stem + ".txt"))), None)
            objects = tuple((COCO_NAMES.get(c, ""), box) for c, box in read_yolo_boxes(labels)) if labels else ()
            coco.append(CocoImage(str(image), split_of(f"coco:{image.stem}"), objects))

    classes: dict[str, RealClass] = {}
    for spec in CLASS_MAP:
        c = RealClass(spec.name, tux=spec.tux)
        for folder in spec.caltech:
            paths = sorted((caltech / folder).glob("*.jpg"))
            if not paths:
                missing.append(f"caltech101/{folder}")
            c.photos += [Photo(str(p), split_of(f"caltech:{folder}/{p.name}")) for p in paths]
        for i in spec.coco:              # a listed COCO id that no label file boxes
            if coco_root.is_dir() and not any(name == COCO_NAMES.get(i) for im in coco for name, _ in im.objects):
                missing.append(f"coco128 class {i}")
        for image in coco:               # every boxed object of the class, at least 48 px wide and high
            for name, box in image.objects:
                if name and name in _coco_names(spec) and _big_enough(image.path, box):
                    c.photos.append(Photo(image.path, image.split, box))
        for us_class in spec.urbansound:
            got = us.get(URBANSOUND_CLASSES.index(us_class), [])
            if us_root.is_dir() and not got:
                missing.append(f"urbansound8k {us_class}")
            c.recordings += got
        for pattern in spec.zeroad:
            paths = sorted(zeroad.glob(pattern))
            if zeroad.is_dir() and not paths:
                missing.append(f"0ad/{pattern}")
            c.recordings += [Recording(str(p), f"0ad:{p.relative_to(zeroad)}",
                                       split_of(f"0ad:{p.relative_to(zeroad)}")) for p in paths]
        c.recordings += _soundfont_recordings(spec.soundfont, missing)
        if spec.drumkits:
            c.recordings += [Recording(str(f), f"hydrogen:{kit}", split_of(f"hydrogen:{kit}"))
                             for kit, files in kits.items() for f in files]
        c.recordings = _stratify_small(c.recordings)
        for tux in spec.tux:             # one recording: training only (augmentation gives variety)
            if tux_sounds and tux in tux_sounds:
                c.recordings.append(Recording(tux_sounds[tux], f"tux:{tux}", "train"))
        classes[spec.name] = c
    silent = [Photo(str(p), split_of(f"caltech:{folder}/{p.name}"))
              for folder in SILENT_CALTECH for p in sorted((caltech / folder).glob("*.jpg"))]
    offscreen = [r for name in OFFSCREEN_URBANSOUND for r in us.get(URBANSOUND_CLASSES.index(name), [])]
    return RealCatalog(classes, silent, offscreen, coco, sorted(set(missing)))


def soundfont_programs() -> set[int]:
    """The General MIDI programs the class map renders."""
    return {program for spec in CLASS_MAP for program in spec.soundfont}


def _soundfont_recordings(programs: tuple[int, ...], missing: list[str]) -> list[Recording]:
    """PHRASES rendered phrases per program (from the cache after the first time); each phrase
    is its own source. None of a program's when a phrase is not in the cache and fluidsynth or the
    SoundFont is absent (build_real_catalog's missing_line names them), or when they fail (a line
    in `missing`)."""
    out: list[Recording] = []
    ready = instruments.soundfont_ready()
    for program in programs:
        indices = range(instruments.PHRASES)
        if not ready and not instruments.all_cached(program, indices):
            continue
        try:
            paths = instruments.render_phrases(program, list(indices))
        except subprocess.SubprocessError as exc:
            missing.append(f"instruments: fluidsynth failed on GM program {program} ({type(exc).__name__})")
            continue
        except (OSError, JsaError) as exc:     # an unwritable cache folder (atomic.py's InputError)
            missing.append(f"instruments: cannot write {instruments.cache_dir()} ({type(exc).__name__})")
            continue
        for i, path in zip(indices, paths):
            source = f"soundfont:{program}:{i}"
            out.append(Recording(str(path), source, split_of(source)))
    return out


def _stratify_small(recordings: list[Recording], few: int = 10) -> list[Recording]:
    """A class with few source recordings (0 A.D. animals: 2-12 files) could hash them all into
    train: there, the lowest-hash source goes to test, the next to val (from 4 sources on)."""
    sources = sorted({r.source for r in recordings}, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    if len(sources) >= few or len(sources) < 2:
        return recordings
    n_test = max(1, round(TEST_SHARE * len(sources)))
    n_val = 1 if len(sources) >= 4 else 0
    split = {s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(sources)}
    return [Recording(r.path, r.source, split[r.source]) for r in recordings]


def _coco_names(spec: ClassSources) -> set[str]:
    return {COCO_NAMES[i] for i in spec.coco if i in COCO_NAMES}


_SIZES: dict[str, tuple[int, int]] = {}


def _big_enough(path: str, box, min_px: int = 48) -> bool:
    if path not in _SIZES:
        from PIL import Image
        with Image.open(path) as im:
            _SIZES[path] = im.size
    w, h = _SIZES[path]
    return (box[2] - box[0]) * w >= min_px and (box[3] - box[1]) * h >= min_px
