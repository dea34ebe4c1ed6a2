"""The real-data class map (classmap.py) and the real-photo frames (scene_real.py).

Fixture tests build a tiny data folder in tmp_path; the tests on the real ../shared/data skip
with a message when it is absent (set JSA_DATA)."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from jsa_rt.train import classmap, instruments
from jsa_rt.train.classmap import CocoImage, Photo, build_real_catalog, read_yolo_boxes, soundfont_programs, split_of
from jsa_rt.train.scene_catalog import default_data_root
from jsa_rt.train.scene_real import coco_frame, mosaic

DATA = default_data_root()
REAL_FOLDERS = ("urbansound8k", "0ad", "caltech101", "coco128")
needs_data = pytest.mark.skipif(
    not all((DATA / f).is_dir() for f in REAL_FOLDERS),
    reason=f"needs the shared data folder ({DATA}: {', '.join(REAL_FOLDERS)}); set JSA_DATA")


# ---- a tiny data folder -------------------------------------------------------------------------
def _wav(path: Path, seconds: float = 0.2, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate,
             format="OGG" if path.suffix == ".ogg" else "WAV")


def _jpeg(path: Path, size=(120, 100), colour=(90, 90, 90), bright_box=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:] = colour
    if bright_box:
        x0, y0, x1, y1 = bright_box
        img[y0:y1, x0:x1] = 255
    Image.fromarray(img).save(path, quality=95)


# fsIDs 1000-1039: slices of a few of them; class 3 (dog_bark), 1 (car_horn), 2 (children_playing)
FS_IDS = list(range(1000, 1040))


@pytest.fixture
def small_data(tmp_path):
    root = tmp_path / "data"
    for k, fs in enumerate(FS_IDS):
        cls = (3, 1, 2, 0)[k % 4]
        for sl in range(3 if k % 5 == 0 else 1):          # some recordings with several slices
            suffix = ".wav" if k % 7 == 0 else ".ogg"
            _wav(root / "urbansound8k" / f"fold{1 + k % 2}" / f"{fs}-{cls}-0-{sl}{suffix}")
    (root / "urbansound8k" / "fold1" / "notes.ogg").write_bytes(b"")            # not a slice name
    for name in ("civ_dog_bark.ogg",):
        _wav(root / "0ad" / "voice" / "global" / name)
    for k in range(6):
        _wav(root / "0ad" / "actor" / "fauna" / "animal" / f"chicken_{k}.ogg")
    for k in range(12):
        _jpeg(root / "caltech101" / "dalmatian" / f"image_{k:04d}.jpg")
        _jpeg(root / "caltech101" / "Motorbikes" / f"image_{k:04d}.jpg")
    _jpeg(root / "caltech101" / "rooster" / "image_0001.jpg")
    for k in range(10):     # a dog (class 16) boxed large enough, a person too small (< 48 px)
        _jpeg(root / "coco128" / "images" / "train2017" / f"{k:012d}.jpg", size=(200, 160))
        (root / "coco128" / "labels" / "train2017").mkdir(parents=True, exist_ok=True)
        (root / "coco128" / "labels" / "train2017" / f"{k:012d}.txt").write_text(
            "16 0.5 0.5 0.5 0.5\n0 0.1 0.1 0.05 0.05\n")
    return root


# ---- 1. the class map resolves ------------------------------------------------------------------
@needs_data
def test_real_folder_resolves_every_listed_source():
    cat = build_real_catalog()
    # the instruments come from Debian packages, not the data folder: absent, they are one line
    assert cat.missing == ([line] if (line := instruments.missing_line(soundfont_programs())) else []), cat.missing
    sounding_sf, kits = instruments.soundfont_ready(), bool(instruments.drum_kits())
    boxed = {name for image in cat.coco for name, _ in image.objects}
    for spec in classmap.CLASS_MAP:
        c = cat.classes[spec.name]
        expected = spec.urbansound or spec.zeroad or (spec.soundfont and sounding_sf) or (spec.drumkits and kits)
        assert c.recordings or (spec.tux and not expected), spec.name
        for folder in spec.caltech:
            assert any(f"/caltech101/{folder}/" in p.path for p in c.photos), (spec.name, folder)
        for i in spec.coco:             # every listed COCO id is boxed somewhere in coco128
            assert classmap.COCO_NAMES[i] in boxed, (spec.name, i)
    assert cat.silent_photos and cat.offscreen and len(cat.coco) == 128
    # the splits the real scenes need have usable classes
    assert cat.usable("train") and cat.usable("test")


def test_fixture_folder_resolves_and_reports_what_is_missing(small_data):
    cat = build_real_catalog(small_data)
    assert "caltech101" not in cat.missing and "urbansound8k" not in cat.missing
    assert "caltech101/car_side" in cat.missing and "caltech101/dalmatian" not in cat.missing
    dog = cat.classes["dog"]
    assert sum(p.box is None for p in dog.photos) == 12          # the dalmatians
    assert sum(p.box is not None for p in dog.photos) == 10      # one COCO dog per image
    assert not cat.classes["person"].photos                      # COCO persons too small (< 48 px)
    sources = {r.source for r in dog.recordings}
    assert {f"urbansound:{fs}" for fs in FS_IDS[::4]} <= sources and "0ad:voice/global/civ_dog_bark.ogg" in sources
    assert len(cat.silent_photos) == 12 and all(r.path.endswith((".ogg", ".wav")) for r in cat.offscreen)
    assert not any("notes" in r.path for c in cat.classes.values() for r in c.recordings)

    import shutil
    # a listed COCO id that no label file boxes is reported (coco128 has no horse here)
    assert "coco128 class 17" in cat.missing and "coco128 class 16" not in cat.missing

    shutil.rmtree(small_data / "caltech101")
    cat = build_real_catalog(small_data)
    assert "caltech101" in cat.missing
    assert not any(p.box is None for c in cat.classes.values() for p in c.photos)
    assert cat.classes["dog"].photos                             # COCO still there
    shutil.rmtree(small_data / "coco128")
    assert {"caltech101", "coco128"} <= set(build_real_catalog(small_data).missing)


# ---- 2. splits disjoint by source recording and by photo ------------------------------------------
def _assert_disjoint(cat):
    split_of_source, split_of_photo = {}, {}
    recordings = [r for c in cat.classes.values() for r in c.recordings if not r.source.startswith("tux:")]
    for r in recordings + list(cat.offscreen):
        assert r.split in classmap.REAL_SPLITS
        assert split_of_source.setdefault(r.source, r.split) == r.split, f"{r.source} in two splits"
        if r.source.startswith("urbansound:"):      # the source is the fsID of the file name
            assert r.source == "urbansound:" + Path(r.path).stem.split("-")[0]
        elif r.source.startswith("soundfont:"):     # one rendered phrase: (program, index)
            _, program, index = r.source.split(":")
            assert Path(r.path).name.startswith(f"gm{int(program):03d}_{int(index):03d}_")
        elif r.source.startswith("hydrogen:"):      # a drum hit: its kit folder
            assert r.source.split(":", 1)[1] in Path(r.path).parts
        else:
            assert r.source.startswith("0ad:") and r.path.endswith(r.source[4:])
    for p in [p for c in cat.classes.values() for p in c.photos] + list(cat.silent_photos):
        assert split_of_photo.setdefault(p.path, p.split) == p.split, f"{p.path} in two splits"
    for image in cat.coco:
        assert split_of_photo.setdefault(image.path, image.split) == image.split, image.path
    # one path, one source (no file counted under two identities)
    by_path = {}
    for r in recordings + list(cat.offscreen):
        assert by_path.setdefault(r.path, r.source) == r.source
    return split_of_source, split_of_photo


@needs_data
def test_real_folder_splits_are_disjoint_by_recording_and_photo():
    from jsa_rt.train.scene_catalog import build_catalog
    tux = {c.name: c.sound for c in build_catalog().classes}
    cat = build_real_catalog(tux_sounds=tux)
    sources, photos = _assert_disjoint(cat)
    assert {"train", "val", "test"} <= set(sources.values()) and {"train", "test"} <= set(photos.values())
    # Tux Paint recordings are training material only
    assert all(r.split == "train" for c in cat.classes.values() for r in c.recordings if r.source.startswith("tux:"))
    # every fsID: all its slices in one split, across all classes and the off-screen pool
    by_fs = {}
    for r in [r for c in cat.classes.values() for r in c.recordings] + cat.offscreen:
        if r.source.startswith("urbansound:"):
            by_fs.setdefault(r.source, set()).add(r.split)
    assert by_fs and all(len(s) == 1 for s in by_fs.values())
    assert any(len([r for r in cat.offscreen if r.source == s]) > 1 for s in by_fs)   # multi-slice fsIDs exist


def test_fixture_splits_are_disjoint_and_slices_share_their_fsid_split(small_data):
    cat = build_real_catalog(small_data)
    sources, _ = _assert_disjoint(cat)
    for fs in FS_IDS[::5]:                                 # the fsIDs with 3 slices
        splits = {r.split for c in cat.classes.values() for r in c.recordings + cat.offscreen
                  if r.source == f"urbansound:{fs}"}
        assert len(splits) == 1
    # the UrbanSound split is the stable hash of the fsID (no per-class reshuffling of big pools)
    for s, split in sources.items():
        if s.startswith("urbansound:"):
            assert split == split_of(s)
    # a small pool (6 chicken files) still gets a test and a val recording
    rooster = {r.split for r in cat.classes["rooster"].recordings}
    assert rooster == {"train", "val", "test"}
    assert split_of("urbansound:1000") == split_of("urbansound:1000")


def test_split_shares_roughly_as_documented():
    splits = [split_of(f"urbansound:{i}") for i in range(4000)]
    share = {s: splits.count(s) / len(splits) for s in classmap.REAL_SPLITS}
    assert abs(share["test"] - classmap.TEST_SHARE) < 0.03 and abs(share["val"] - classmap.VAL_SHARE) < 0.03


# ---- 3. YOLO labels -----------------------------------------------------------------------------
def test_read_yolo_boxes_clips_and_skips_malformed_lines(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("\n".join([
        "16 0.5 0.5 0.2 0.4",            # plain
        "0 0.05 0.95 0.3 0.2",           # over the left and bottom edges: clipped
        "2 0.5 0.5",                     # too few fields
        "3 0.5 0.5 0.1 0.1 0.9",         # too many fields
        "17 0.5 0.5 abc 0.1",            # not a number
        "",                              # blank
        "19 1.2 0.5 0.1 0.1",            # entirely outside: dropped
        "18 0.5 0.5 0 0.2",              # empty box: dropped
        "  20   0.25 0.25 0.5 0.5  ",    # extra spaces
    ]) + "\n")
    boxes = read_yolo_boxes(f)
    assert [c for c, _ in boxes] == [16, 0, 20]
    assert boxes[0][1] == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert boxes[1][1] == pytest.approx((0.0, 0.85, 0.2, 1.0))
    assert boxes[2][1] == pytest.approx((0.0, 0.0, 0.5, 0.5))
    for _, (x0, y0, x1, y1) in boxes:
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


# ---- 4. mosaic ----------------------------------------------------------------------------------
COLOURS = ((230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20))


def _overlap_area(a, b):
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


@pytest.mark.parametrize("count", [2, 3, 4])
def test_mosaic_tiles_the_frame_in_photo_order(tmp_path, count):
    size = 128
    for seed in range(8):
        colours = [COLOURS[(i + seed) % 4] for i in range(count)]
        photos = []
        for i, colour in enumerate(colours):
            path = tmp_path / f"p{seed}_{i}.jpg"
            _jpeg(path, size=(90 + 30 * i, 140 - 20 * i), colour=colour)   # odd aspects
            photos.append(Photo(str(path), "test"))
        image, boxes = mosaic(np.random.default_rng(seed), size, photos)
        assert image.shape == (size, size, 3) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        assert len(boxes) == count
        for b in boxes:
            assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1
        for i in range(count):
            for j in range(i + 1, count):
                assert _overlap_area(boxes[i], boxes[j]) < 1e-9, (seed, boxes)
        covered = sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes)
        assert covered > 0.9                                    # tiles fill the frame (gutters aside)
        for b, colour in zip(boxes, colours):
            x0, y0, x1, y1 = (int(round(v * size)) for v in b)
            inner = image[y0 + 4:y1 - 4, x0 + 4:x1 - 4].reshape(-1, 3).mean(0)
            want = np.array(colour) / 255
            # the photo's dominant channels (camera changes contrast and warmth, not hue order)
            assert set(np.argsort(inner)[-int((want > 0.5).sum()):]) == set(np.nonzero(want > 0.5)[0]), \
                (seed, b, inner, colour)


def test_mosaic_of_coco_crops_uses_the_object(tmp_path):
    path = tmp_path / "coco.jpg"
    _jpeg(path, size=(200, 160), colour=(10, 10, 10), bright_box=(50, 40, 150, 120))
    photo = Photo(str(path), "test", (0.25, 0.25, 0.75, 0.75))
    other = tmp_path / "blue.jpg"
    _jpeg(other, colour=(20, 20, 230))
    for seed in range(5):
        image, boxes = mosaic(np.random.default_rng(seed), 96, [photo, Photo(str(other), "test")])
        x0, y0, x1, y1 = (int(round(v * 96)) for v in boxes[0])
        tile = image[y0:y1, x0:x1]
        # the crop is the object with a small margin: most of the tile is the bright object
        assert (tile.mean(-1) > 0.6).mean() > 0.5, seed


def test_mosaic_refuses_other_counts(tmp_path):
    path = tmp_path / "a.jpg"
    _jpeg(path)
    with pytest.raises(ValueError):
        mosaic(np.random.default_rng(0), 64, [Photo(str(path), "test")] * 5)


# ---- 5. COCO frames -----------------------------------------------------------------------------
@pytest.mark.parametrize("bright", [(40, 30, 100, 90), (180, 10, 235, 60), (0, 100, 70, 159), (10, 20, 230, 150)])
def test_coco_frame_keeps_the_focus_object_and_its_box(tmp_path, bright):
    w, h = 240, 160
    path = tmp_path / "c.jpg"
    _jpeg(path, size=(w, h), colour=(15, 15, 15), bright_box=bright)
    x0, y0, x1, y1 = bright
    box = (x0 / w, y0 / h, x1 / w, y1 / h)
    image = CocoImage(str(path), "test", (("person", (0.0, 0.0, 0.05, 0.05)), ("dog", box)))
    size = 96
    for seed in range(10):
        frame, objects = coco_frame(np.random.default_rng(seed), size, image, 1)
        assert frame.shape == (size, size, 3)
        dogs = [b for n, b in objects if n == "dog"]
        assert len(dogs) == 1, (seed, objects)
        b = dogs[0]
        assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1
        bright_px = frame.mean(-1) > 0.6
        ys, xs = np.nonzero(bright_px)
        assert xs.size
        bx0, by0, bx1, by1 = (v * size for v in b)
        # every clearly bright pixel lies in the box (a pixel of slack for resampling)
        assert xs.min() >= bx0 - 1.5 and xs.max() < bx1 + 1.5 and ys.min() >= by0 - 1.5 and ys.max() < by1 + 1.5, (seed, b)
        # and the box is mostly bright inside (it matches the crop, not just contains it)
        ix0, iy0, ix1, iy1 = int(bx0) + 2, int(by0) + 2, int(bx1) - 2, int(by1) - 2
        if ix1 > ix0 and iy1 > iy0:
            assert bright_px[iy0:iy1, ix0:ix1].mean() > 0.9, (seed, b)
        # the focus object fits the square crop (its side is >= 0.8 * 160 px): it stays whole
        if max(x1 - x0, y1 - y0) <= 0.8 * h:
            aspect = (b[2] - b[0]) / (b[3] - b[1])
            assert aspect == pytest.approx((x1 - x0) / (y1 - y0), rel=0.05), (seed, b)


def test_coco_frame_drops_objects_mostly_outside(tmp_path):
    w, h = 300, 100
    path = tmp_path / "wide.jpg"
    _jpeg(path, size=(w, h), bright_box=(10, 10, 60, 60))
    image = CocoImage(str(path), "test", (("dog", (10 / w, 0.1, 60 / w, 0.6)), ("car", (250 / w, 0.1, 1.0, 0.9))))
    for seed in range(10):
        _, objects = coco_frame(np.random.default_rng(seed), 64, image, 0)
        assert [n for n, _ in objects] == ["dog"]       # the car is 200 px away: outside every crop
