"""What the scene composer can draw from: sounding stamps, silent stamps, spoken digits, backgrounds.

Sources (see ../shared/data/README.md):
- Tux Paint stamps: `X.png` with `X.ogg` beside it is a *sounding* object; a PNG without a sound
  is a *silent* object (distractor material). Stamps whose recordings are byte-identical (the
  German umlaut letters in four styles) form one class with several images. `symbols/math` is
  left out here: spoken digits come from FSDD instead.
- FSDD: `recordings/{digit}_{speaker}_{take}.wav`; the digit images are Tux Paint's
  `symbols/math/N.png` (32 px, "colorable": the composer colours and upscales them).
- Backgrounds: photographs (composited whole or as crops) and grey textures (tinted).

The catalogue is bookkeeping (paths and names; each recording is decoded once, only to recognise
the same sound saved in two files): built once (about a second) and handed to the workers, and
sorted everywhere so the same files give the same plan.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..paths import data_root

# Recordings named like `X_fr.ogg` or `X_en_GB.ogg` are translations of a stamp's spoken name.
_LANG_SUFFIX = re.compile(r"_[a-z]{2}(_[A-Za-z]{2})?$")
# A silent PNG of a sounding stamp's object (`dreydl-shin_mirror`, `lion-2`, `frog-1`, a cartoon
# `lion`): the same object, so it must never be a silent distractor (it would show an unheard class in
# train, or a second, unannotated copy of the target).
_VARIANT_SUFFIX = re.compile(r"(_mirror|_\d+)+$")
# Recordings that are the same sound processed differently (goat vs ram: cross-correlation 0.88
# after alignment), found by correlation; sample-identical ones (ram and mountaingoat, badger and
# beaver: the same recording in different files) are recognised automatically. Classes with the
# same sound stay separate classes (so the split of classes does not move), but a sound is never
# "unheard" when a seen class plays it, and never has two visible sources in one scene.
NEAR_DUPLICATE_SOUNDS = ({"goat", "ram", "mountaingoat"},)
_MIN_TARGET_SIDE = 64        # px: smaller stamps turn to mush when scaled to a quarter of the frame
_MIN_DISTRACTOR_SIDE = 40
PHOTO_BACKGROUNDS = ("astronaut", "coffee", "rocket")     # the rest are textures


@dataclass(frozen=True)
class Stamp:
    image: str               # absolute path of the PNG
    category: str            # e.g. "animals/birds": distractors "of the same category" come from here
    flags: frozenset = frozenset()   # Tux Paint .dat flags: colorable, tintable, nomirror, noflip


@dataclass(frozen=True)
class SoundClass:
    name: str
    sound: str               # absolute path of the recording
    stamps: tuple[Stamp, ...]
    sound_key: str = ""      # the recording's identity: equal for the same sound in another file

    @property
    def category(self) -> str:
        return self.stamps[0].category


@dataclass
class Catalog:
    classes: list[SoundClass]                 # sounding Tux Paint classes usable as targets
    silent: list[Stamp]                       # stamps without sound: distractors only
    digit_images: dict[int, Stamp]            # digit -> image
    digit_takes: dict[tuple[int, str], list[str]]   # (digit, speaker) -> wav paths
    speakers: list[str]
    backgrounds: list[str]                    # image paths
    skipped: dict[str, str] = field(default_factory=dict)   # name -> why it is not a target class

    def class_by_name(self, name: str) -> SoundClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def same_sound(self, name: str) -> set[str]:
        """The classes that play the same recording as `name` (itself included)."""
        key = self.class_by_name(name).sound_key
        return {c.name for c in self.classes if c.sound_key == key} if key else {name}


def default_data_root() -> Path:
    """$JSA_DATA, else ../shared/data next to the repository."""
    return data_root()


def default_stamp_root() -> Path:
    """The shared copy of tuxpaint-stamps, else Debian's tuxpaint-stamps-default package."""
    shared = default_data_root() / "tuxpaint-stamps"
    if shared.is_dir():
        return shared
    return Path("/usr/share/tuxpaint/stamps")


def _stamps_dir(root: Path) -> Path:
    # The source package keeps them under stamps/; the Debian package installs that folder itself.
    return root / "stamps" if (root / "stamps").is_dir() else root


def _flags(png: Path) -> frozenset:
    dat = png.with_suffix(".dat")
    if not dat.is_file():
        return frozenset()
    return frozenset(w.strip() for w in dat.read_text(errors="replace").split() if w.strip())


def _category(rel: Path) -> str:
    parts = rel.parts[:-1]
    return "/".join(parts[:2]) if parts else "misc"


def _max_side(png: Path) -> int:
    from PIL import Image
    with Image.open(png) as im:
        return max(im.size)


def _base_stem(stem: str) -> str:
    """`Dreydl-Shin_mirror` / `lion-2` -> `dreydl_shin` / `lion`: what a variant is a copy of."""
    return _VARIANT_SUFFIX.sub("", stem.lower().replace("-", "_"))


def _sound_key(ogg: Path) -> str:
    """Identity of a recording: its decoded samples (the same sound saved as two different files
    is one recording), else its bytes when it cannot be decoded here."""
    try:
        from ..audio_io import load_audio
        samples = np.round(load_audio(ogg, 16000) * 32767).astype(np.int16)
        return "pcm:" + hashlib.sha1(samples.tobytes()).hexdigest()
    except Exception:            # noqa: BLE001 - a damaged file is still a distinct file
        return "file:" + hashlib.sha1(ogg.read_bytes()).hexdigest()


def _class_name(stems: list[str]) -> str:
    # "a_with_umlaut_filled" / "A_with_umlaut_outline" -> "a_with_umlaut"
    base = [re.sub(r"_(filled|outline|outlined)$", "", s).lower().replace("-", "_") for s in stems]
    return sorted(base)[0]


def scan_stamps(stamp_root: Path) -> tuple[list[SoundClass], list[Stamp], dict[int, Stamp], dict[str, str]]:
    stamps_dir = _stamps_dir(stamp_root)
    if not stamps_dir.is_dir():
        raise InputError(f"no Tux Paint stamps at {stamp_root} (pass --source DIR or set JSA_DATA)")
    by_audio: dict[str, list[tuple[Path, Path]]] = {}
    silent: list[Stamp] = []
    digits: dict[int, Stamp] = {}
    skipped: dict[str, str] = {}
    pngs = sorted(stamps_dir.rglob("*.png"))
    # by name, in any folder: a cartoon lion is as much a source of the roar as the photo
    sounding = {_base_stem(png.stem) for png in pngs if png.with_suffix(".ogg").is_file()}
    near = {stem: "near:" + "+".join(sorted(group)) for group in NEAR_DUPLICATE_SOUNDS for stem in group}
    for png in pngs:
        rel = png.relative_to(stamps_dir)
        stamp = Stamp(str(png), _category(rel), _flags(png))
        if rel.parts[:2] == ("symbols", "math"):
            if png.stem.isdigit():
                digits[int(png.stem)] = stamp
            continue
        ogg = png.with_suffix(".ogg")
        if ogg.is_file():
            digest = hashlib.sha1(ogg.read_bytes()).hexdigest()
            by_audio.setdefault(digest, []).append((png, ogg))
        elif _base_stem(png.stem) in sounding:
            skipped[png.stem] = "a silent copy of a sounding stamp (never a distractor)"
        elif _max_side(png) >= _MIN_DISTRACTOR_SIDE:
            silent.append(stamp)
    classes: list[SoundClass] = []
    for digest in sorted(by_audio, key=lambda d: str(by_audio[d][0][0])):
        members = by_audio[digest]
        name = _class_name([p.stem for p, _ in members])
        big = [p for p, _ in members if _max_side(p) >= _MIN_TARGET_SIDE]
        if not big:
            skipped[name] = f"image under {_MIN_TARGET_SIDE} px"
            continue
        stamps = tuple(Stamp(str(p), _category(p.relative_to(stamps_dir)), _flags(p)) for p in big)
        key = near.get(_base_stem(members[0][0].stem)) or _sound_key(members[0][1])
        classes.append(SoundClass(name, str(members[0][1]), stamps, key))
    names = [c.name for c in classes]
    if len(set(names)) != len(names):   # two different recordings share a stem: keep them apart
        seen: dict[str, int] = {}
        renamed = []
        for c in classes:
            seen[c.name] = seen.get(c.name, 0) + 1
            renamed.append(c if seen[c.name] == 1 else
                           SoundClass(f"{c.name}_{seen[c.name]}", c.sound, c.stamps, c.sound_key))
        classes = renamed
    return classes, silent, digits, skipped


def scan_fsdd(fsdd_root: Path) -> tuple[dict[tuple[int, str], list[str]], list[str]]:
    takes: dict[tuple[int, str], list[str]] = {}
    rec = fsdd_root / "recordings" if (fsdd_root / "recordings").is_dir() else fsdd_root
    for wav in sorted(rec.glob("*.wav")):
        parts = wav.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        takes.setdefault((int(parts[0]), parts[1]), []).append(str(wav))
    for key in takes:   # take order 0, 1, 2, ... 10 (not lexicographic)
        takes[key].sort(key=lambda p: int(Path(p).stem.split("_")[2]))
    speakers = sorted({s for _, s in takes})
    return takes, speakers


def build_catalog(stamp_root: Path | None = None, fsdd_root: Path | None = None,
                  background_root: Path | None = None) -> Catalog:
    data = default_data_root()
    stamp_root = Path(stamp_root) if stamp_root else default_stamp_root()
    fsdd_given, backgrounds_given = fsdd_root, background_root
    fsdd_root = Path(fsdd_root) if fsdd_root else data / "fsdd"
    background_root = Path(background_root) if background_root else data / "backgrounds"
    classes, silent, digits, skipped = scan_stamps(stamp_root)
    if len(classes) < 4:
        raise InputError(f"only {len(classes)} sounding stamps under {stamp_root}: need X.png with X.ogg beside it")
    takes, speakers = scan_fsdd(fsdd_root) if fsdd_root.is_dir() else ({}, [])
    if takes and len(digits) < 10:
        raise InputError(f"digit images symbols/math/0-9.png missing under {stamp_root}")
    backgrounds = sorted(str(p) for p in background_root.glob("*")
                         if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if background_root.is_dir() else []
    # the default folders are optional; a folder named on the command line must hold something
    if fsdd_given and not takes:
        raise InputError(f"--fsdd {fsdd_root}: no FSDD recordings (DIGIT_SPEAKER_TAKE.wav) there; "
                         f"check the path, or leave --fsdd out")
    if backgrounds_given and not backgrounds:
        raise InputError(f"--backgrounds {background_root}: no .png/.jpg photos there; "
                         f"check the path, or leave --backgrounds out")
    return Catalog(classes, silent, digits, takes, speakers, backgrounds, skipped)
