"""Readers for the public benchmark layouts and our scenes, as torch Datasets.

Layouts (as the field's code expects them; no conversion needed):
- `pairs`: training sets (VGGSound-144k, Flickr-SoundNet 10k/144k): `frames/<id>.jpg` +
  `audio/<id>.wav`, ids from a list file (one id per line, or the first CSV column; an
  extension is ignored), else every frame that has an audio file.
- `flickr`: Flickr-SoundNet test (250 pairs): `frames/<id>.jpg` (or `Data/<id>.jpg`),
  `audio/<id>.wav` (or `Data/<id>.wav`), `Annotations/<id>.xml` with one `<bbox>` per annotator
  in 256x256 coordinates; ids from the list file, else every XML.
- `vggss`: a JSON list of `{"file", "class", "bbox": [[x0,y0,x1,y1], ...]}` in [0,1] with
  `frames/<file>.jpg` and `audio/<file>.wav`.
- `scenes`: ours (make-scenes): the VGG-SS layout with `annotations/<split>.json`, which adds
  `no_source` (scenes with no visible source carry no box). Multi-source splits (`pairs`, ...)
  write one frame once per sounding object; their entries add `group` (shared by the scenes of
  one frame), `candidates` ([{"class", "box"}] for every visible sounding-class object) and
  `kind`, which land in `Sample.meta` (`group` None, `candidates` [] where absent).
- `avsbench`: AVSBench S4 / MS3. The release nests folders differently between versions, so the
  reader indexes the tree once: frames under a `visual_frames` folder (`<vid>_<i>.png` or
  `<vid>.mp4_<i>.png`), masks under `gt_masks` (`<vid>_<i>.png`), audio `<vid>.wav`; the split
  comes from `s4_meta_data.csv` / `ms3_meta_data.csv` when present. Every frame with a mask is
  a sample and gets the whole clip's audio.

Every item is a dict: `image` (3,S,S) ImageNet-normalised, `audio` (cfg.num_samples,),
`gt` (224,224) float ground-truth map (zeros where none), `has_gt`, `no_source`, `index`, `id`,
`label`. An item whose file cannot be read comes back as `{"index", "id", "error"}`;
`collate` drops it from the batch and lists it under `"errors"`, so callers count and report
it. Missing files are found when the dataset is built: those samples are left out and listed
in `dataset.missing`. Nothing is ever silently replaced by another sample.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio_io import fit_length, load_audio, load_image
from ..config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from ..errors import InputError
from . import metrics

FORMATS = ("scenes", "vggss", "flickr", "avsbench", "pairs")


@dataclass
class Sample:
    id: str
    image: Path
    audio: Path
    gt_kind: str = "none"             # "none" | "vggss" | "flickr" | "mask"
    boxes: list = field(default_factory=list)
    mask: Path | None = None
    no_source: bool = False
    label: str = ""
    meta: dict = field(default_factory=dict)


# ---- readers: paths and annotations only ------------------------------------------------------------
def read_id_list(path: Path) -> list[str]:
    ids = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if row and row[0].strip() and not row[0].startswith("#"):
                ids.append(Path(row[0].strip()).stem if row[0].strip().endswith((".jpg", ".wav", ".png", ".mp4"))
                           else row[0].strip())
    return ids


def _first_existing(root: Path, names: list[str]) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    return root / names[0]


def read_pairs(root: Path, ids_file: Path | None = None) -> list[Sample]:
    root = Path(root)
    if ids_file:
        ids = read_id_list(ids_file)
    else:
        ids = sorted(p.stem for p in (root / "frames").glob("*.jpg") if (root / "audio" / f"{p.stem}.wav").is_file())
    return [Sample(i, root / "frames" / f"{i}.jpg", root / "audio" / f"{i}.wav") for i in ids]


def check_box(box: list, where: str) -> list:
    """A box must be four finite numbers with x0 < x1 and y0 < y1: a NaN box would score as a
    hit and an inverted or empty one would vanish from the ground truth."""
    try:
        box = [float(v) for v in box]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or not (box[0] < box[2] and box[1] < box[3]):
        raise InputError(f"{where}: box {box or '(not numbers)'} is not [x0, y0, x1, y1] with x0 < x1 and "
                         f"y0 < y1 (finite numbers); fix or remove it")
    return box


def parse_flickr_xml(path: Path) -> list[list[int]]:
    """Boxes [xmin, ymin, xmax, ymax] in 256x256 pixels, one per annotator's <bbox>."""
    boxes = []
    for bbox in ET.parse(path).getroot().iter("bbox"):
        named = {c.tag.lower(): c.text for c in bbox}
        if all(k in named for k in ("xmin", "ymin", "xmax", "ymax")):
            box = [named[k] for k in ("xmin", "ymin", "xmax", "ymax")]
        else:   # the LVS/EZ-VSL reading: skip the first child, then four numbers
            box = [c.text for c in list(bbox)[1:5]]
        boxes.append([int(v) for v in check_box(box, f"annotation {path}")])
    return boxes


def read_flickr(root: Path, ids_file: Path | None = None) -> list[Sample]:
    root = Path(root)
    ann = root / "Annotations" if (root / "Annotations").is_dir() else root / "annotations"
    ids = read_id_list(ids_file) if ids_file else sorted(p.stem for p in ann.glob("*.xml"))
    samples = []
    for i in ids:
        xml = ann / f"{i}.xml"
        boxes = parse_flickr_xml(xml) if xml.is_file() else None
        samples.append(Sample(i, _first_existing(root, [f"frames/{i}.jpg", f"Data/{i}.jpg"]),
                              _first_existing(root, [f"audio/{i}.wav", f"Data/{i}.wav"]),
                              "flickr", boxes if boxes is not None else [], meta={"xml": str(xml)}))
    return samples


def read_vggss(root: Path, annotations: Path) -> list[Sample]:
    root = Path(root)
    try:
        entries = json.loads(Path(annotations).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read annotations {annotations}: {exc} (pass --annotations FILE)") from None
    samples = []
    try:
        for e in entries:
            no_source = bool(e.get("no_source", False))
            samples.append(Sample(str(e["file"]), root / "frames" / f"{e['file']}.jpg", root / "audio" / f"{e['file']}.wav",
                                  "vggss", [check_box(b, f"annotations {annotations} entry {len(samples)} "
                                                         f"({e['file']})") for b in e.get("bbox", [])], None, no_source,
                                  str(e.get("class", "")), {k: v for k, v in e.items() if k not in ("file", "bbox")}))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise InputError(f"annotations {annotations} entry {len(samples)} is not like {{\"file\": ID, \"class\": NAME, "
                         f"\"bbox\": [[x0, y0, x1, y1], ...]}} (the VGG-SS layout); fix the file or pass another") from None
    return samples


def read_scenes(root: Path, split: str = "test", annotations: Path | None = None) -> list[Sample]:
    root = Path(root)
    ann = Path(annotations) if annotations else root / "annotations" / f"{split}.json"
    if annotations and not ann.is_file():
        raise InputError(f"annotation file not found: {ann} (check --annotations, or leave it out to use --split)")
    if not ann.is_file():
        have = sorted(p.stem for p in (root / "annotations").glob("*.json"))
        raise InputError(f"no split {split!r} in {root} (have: {', '.join(have) or 'none'}; make one with jsa-rt make-scenes)")
    samples = read_vggss(root, ann)
    for s in samples:
        _pair_fields(s, ann)
    return samples


def _pair_fields(s: Sample, ann: Path) -> None:
    """Multi-source scenes: `group` as a string (None when single-source), `candidates` as
    [{"class": str, "box": [x0, y0, x1, y1]}] ([] when absent)."""
    group = s.meta.get("group")
    s.meta["group"] = None if group in (None, "") else str(group)
    try:
        s.meta["candidates"] = [{"class": str(c.get("class", "")),
                                 "box": check_box(c["box"], f"annotations {ann}: {s.id}'s candidate")}
                                for c in s.meta.get("candidates") or []]
    except (AttributeError, KeyError, TypeError):
        raise InputError(f"annotations {ann}: {s.id}'s candidates are not like [{{\"class\": NAME, "
                         f"\"box\": [x0, y0, x1, y1]}}, ...]; fix the file") from None


def read_avsbench(root: Path, split: str = "test") -> list[Sample]:
    root = Path(root)
    frames, masks, wavs = {}, {}, {}
    for p in sorted(root.rglob("*")):
        parts = set(p.parts)
        if p.suffix.lower() in (".png", ".jpg") and "gt_masks" in parts:
            if split in parts or not any(s in parts for s in ("train", "val", "test")):
                masks[p.stem] = p
        elif p.suffix.lower() in (".png", ".jpg") and "visual_frames" in parts:
            frames[p.stem.replace(".mp4_", "_")] = p
        elif p.suffix.lower() == ".wav":
            wavs[p.stem] = p
    allowed = None                    # no meta CSV: every mask under the split's folders
    for meta in list(root.rglob("s4_meta_data.csv")) + list(root.rglob("ms3_meta_data.csv")):
        allowed = allowed or set()    # a meta CSV lists the split's videos, even when it lists none
        with open(meta, newline="") as f:
            for row in csv.DictReader(f):
                # AVSBench's own loaders take the video name from the first column, whatever its
                # header, and filter on the "split" column
                vid = next(iter(row.values()), None)
                if vid and row.get("split", split) == split:
                    allowed.add(vid)
    samples = []
    for key, mask in sorted(masks.items()):
        vid, _, idx = key.rpartition("_")
        if not vid or (allowed is not None and vid not in allowed):
            continue
        samples.append(Sample(key, frames.get(key, root / "visual_frames" / f"{key}.png"),
                              wavs.get(vid, root / "audio_wav" / f"{vid}.wav"), "mask", [], mask,
                              label=mask.parent.parent.name if mask.parent.parent != root else "",
                              meta={"video": vid, "frame": idx}))
    return samples


def read_samples(fmt: str, root: Path, split: str = "test", annotations: Path | None = None) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root} (pass --data DIR)")
    if fmt == "scenes":
        return read_scenes(root, split, annotations)
    if fmt == "vggss":
        if annotations is None:
            raise InputError("--format vggss needs --annotations FILE (the VGG-SS JSON)")
        return read_vggss(root, annotations)
    if fmt == "flickr":
        return read_flickr(root, annotations)
    if fmt == "avsbench":
        return read_avsbench(root, split)
    if fmt == "pairs":
        return read_pairs(root, annotations)
    raise InputError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")


def guess_format(root: Path, annotations: Path | None = None) -> str:
    """The layout of `root`, from its folders and, when given, the annotation file's content: a
    JSON list of {"file": ...} entries is VGG-SS (or our scenes), never an id list."""
    root = Path(root)
    scenes = (root / "scenes.json").is_file() or (root / "annotations").is_dir() and any((root / "annotations").glob("*.json"))
    if annotations is not None and _holds_vggss_entries(Path(annotations)):
        return "scenes" if scenes else "vggss"
    if scenes:
        return "scenes"
    if (root / "Annotations").is_dir():
        return "flickr"
    if any(root.rglob("gt_masks")):
        return "avsbench"
    return "pairs"


def _holds_vggss_entries(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(entries, list) and any(isinstance(e, dict) for e in entries)   # a bad entry: read_vggss says which


# ---- transforms ---------------------------------------------------------------------------------------
def image_transform(cfg: ModelConfig, train: bool, method: str = "jsa"):
    """torchvision transform from a PIL RGB image to a normalised (3,S,S) tensor.
    jsa (method.md section 1): resize short side 246, random crop 224 (both scaled by
    image_size/224), blur k=5 p=0.8, h-flip, colour jitter (0.8,0.8,0.8,0.2) p=0.8, grey p=0.2.
    ezvsl: resize short side 1.1x, random crop, h-flip. Evaluation: bicubic resize to S x S."""
    from torchvision import transforms as T
    size = cfg.image_size
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    bicubic = T.InterpolationMode.BICUBIC
    if not train or method == "none":
        return T.Compose([T.Resize((size, size), interpolation=bicubic)] + norm)
    if method == "ezvsl":
        return T.Compose([T.Resize(int(size * 1.1), interpolation=bicubic), T.RandomCrop(size),
                          T.RandomHorizontalFlip()] + norm)
    scale = size / 224
    return T.Compose([
        T.Resize(int(round(246 * scale)), interpolation=bicubic),
        T.RandomCrop(size),
        T.RandomApply([T.GaussianBlur(5)], p=0.8),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ] + norm)


def random_crop_audio(wave: np.ndarray, n: int, rng: random.Random) -> np.ndarray:
    """Training: tile a short clip, then take a random window of n samples."""
    if wave.size == 0:
        return np.zeros(n, np.float32)
    if wave.size < n:
        wave = np.tile(wave, int(np.ceil(n / wave.size)) + 1)
    start = rng.randint(0, wave.size - n)
    return np.ascontiguousarray(wave[start:start + n], dtype=np.float32)


# ---- the Dataset ----------------------------------------------------------------------------------------
class AVDataset(Dataset):
    """Map-style torch Dataset over `Sample`s; use `collate` as the DataLoader's collate_fn."""

    def __init__(self, samples: list[Sample], cfg: ModelConfig, train: bool = False, method: str = "jsa"):
        self.cfg, self.train, self.method = cfg, train, method
        self.missing: list[tuple[str, str]] = []
        self.samples: list[Sample] = []
        for s in samples:
            reason = self._missing_reason(s)
            if reason:
                self.missing.append((s.id, reason))
            else:
                self.samples.append(s)
        self._transform = None
        # (seed, epoch), set by the trainer each epoch: a training item's augmentation is then a
        # function of (seed, epoch, index) alone, whatever worker, rank or resume serves it
        self.aug_seed: tuple[int, int] | None = None

    @staticmethod
    def _missing_reason(s: Sample) -> str | None:
        for what, path in (("image", s.image), ("audio", s.audio), ("mask", s.mask)):
            if path is not None and not Path(path).is_file():
                return f"{what} file missing: {path}"
        if s.gt_kind == "flickr" and not s.boxes:
            return f"no boxes in {s.meta.get('xml', 'annotation')}"
        return None

    def __len__(self) -> int:
        return len(self.samples)

    @contextlib.contextmanager
    def _item_rng(self, index: int):
        """Seed torch's RNG (which the transforms draw from) for this item, and give the caller's
        stream back afterwards; without `aug_seed` the caller's stream is used as it is."""
        if not self.train or self.aug_seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([*self.aug_seed, index]).generate_state(1)[0]))
            yield

    def _gt(self, s: Sample) -> np.ndarray:
        if s.gt_kind == "vggss":
            return metrics.gt_map_vggss(s.boxes)
        if s.gt_kind == "flickr":
            return metrics.gt_map_flickr(s.boxes)
        if s.gt_kind == "mask":
            import cv2
            m = load_image(s.mask)[..., 0]
            return (cv2.resize(m, (metrics.EVAL_SIZE,) * 2, interpolation=cv2.INTER_NEAREST) > 0).astype(np.float64)
        return np.zeros((metrics.EVAL_SIZE,) * 2)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image
        s = self.samples[index]
        try:
            rgb = load_image(s.image)
            wave = load_audio(s.audio, self.cfg.sample_rate)
            gt = self._gt(s)
        except Exception as exc:   # noqa: BLE001 - any unreadable file is reported, not fatal
            return {"index": index, "id": s.id, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        if self._transform is None:
            self._transform = image_transform(self.cfg, self.train, self.method)
        with self._item_rng(index):
            if self.train:
                wave = random_crop_audio(wave, self.cfg.num_samples, random.Random(torch.randint(0, 2**31, ()).item()))
            else:
                wave = fit_length(wave, self.cfg.num_samples)
            image = self._transform(Image.fromarray(rgb))
        return {
            "image": image,
            "audio": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            "gt": torch.from_numpy(gt.astype(np.float32)),
            "has_gt": s.gt_kind != "none" and not s.no_source,
            "no_source": s.no_source,
            "index": index,
            "id": s.id,
            "label": s.label,
        }


def collate(batch: list[dict]) -> dict:
    """Stack readable items; unreadable ones are listed under "errors" as (id, reason)."""
    good = [b for b in batch if "error" not in b]
    out: dict = {"errors": [(b["id"], b["error"]) for b in batch if "error" in b]}
    if not good:
        return out
    for key in ("image", "audio", "gt"):
        out[key] = torch.stack([b[key] for b in good])
    out["index"] = torch.tensor([b["index"] for b in good])
    out["has_gt"] = torch.tensor([b["has_gt"] for b in good])
    out["no_source"] = torch.tensor([b["no_source"] for b in good])
    out["id"] = [b["id"] for b in good]
    out["label"] = [b["label"] for b in good]
    return out


def open_dataset(fmt: str, root: Path, cfg: ModelConfig, split: str = "test", annotations: Path | None = None,
                 train: bool = False, method: str = "jsa") -> AVDataset:
    """The one call train and eval use: read the layout, check files, build the Dataset."""
    samples = read_samples(fmt, root, split, annotations)
    if not samples:
        raise InputError(f"no samples found in {root} as {fmt} (split {split}); check --format/--split/--annotations")
    return AVDataset(samples, cfg, train, method)
