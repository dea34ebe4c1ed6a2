"""The scene composer on the real Tux Paint / FSDD / background data: determinism, boxes, splits."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jsa_rt.train import instruments, scene_compose, scene_plan, scenes
from jsa_rt.train.classmap import soundfont_programs
from jsa_rt.train.scene_catalog import build_catalog, default_data_root
from jsa_rt.train.scene_image import ObjectSpec, compose_image

DATA = default_data_root()
pytestmark = pytest.mark.skipif(
    not (DATA / "tuxpaint-stamps").is_dir() or not (DATA / "fsdd").is_dir(),
    reason=f"needs the shared data folder ({DATA}: tuxpaint-stamps, fsdd, backgrounds); set JSA_DATA")

COUNTS = {"train": 16, "val": 6, "test": 8, "test-unheard": 8, "digits": 10}


@pytest.fixture(scope="module")
def scene_sets(tmp_path_factory):
    one = tmp_path_factory.mktemp("scenes_a")
    two = tmp_path_factory.mktemp("scenes_b")
    m1 = scenes.generate(one, seed=3, counts=COUNTS, seconds=2.0, workers=1, no_source_fraction=0.25, progress=False)
    m2 = scenes.generate(two, seed=3, counts=COUNTS, seconds=2.0, workers=2, no_source_fraction=0.25, progress=False)
    return one, two, m1, m2


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(scene_sets):
    one, two, _, _ = scene_sets
    a, b = _files(one), _files(two)
    # frames and audio per entry (a train frame with several sounding objects may be written once
    # per object), jsons, lists, manifest
    entries = sum(len(json.loads(a[f"annotations/{s}.json"])) for s in COUNTS)
    assert entries >= sum(COUNTS.values()) and len(a) == 2 * entries + 2 * len(COUNTS) + 1
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"differ between runs: {different[:5]}"


def test_layout_audio_and_annotations(scene_sets):
    root, _, manifest, _ = scene_sets
    for split, n in COUNTS.items():
        items = json.loads((root / "annotations" / f"{split}.json").read_text())
        ids = (root / "splits" / f"{split}.txt").read_text().split()
        assert [e["file"] for e in items] == ids and len({e.get("group") or e["file"] for e in items}) == n
        for e in items:
            wave, rate = sf.read(root / "audio" / f"{e['file']}.wav")
            assert rate == 16000 and wave.ndim == 1 and wave.size == 32000
            assert (root / "frames" / f"{e['file']}.jpg").is_file()
            if e["no_source"]:
                assert e["bbox"] == [] and split != "train"
            else:         # a COCO frame may show several objects of the class: one box each
                assert np.abs(wave).max() > 0.01
                assert len(e["bbox"]) == 1 if e.get("kind", "cutout") == "cutout" else len(e["bbox"]) >= 1
                for x0, y0, x1, y1 in e["bbox"]:
                    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
                areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in e["bbox"]]
                assert max(areas) == pytest.approx(e["target_area"], abs=1e-4)
            assert len(e["distractor_boxes"]) == len(e["distractor_classes"])
    assert manifest["image_size"] == 256
    from PIL import Image
    with Image.open(root / "frames" / "train_00000.jpg") as im:
        assert im.size == (256, 256) and im.mode == "RGB"


def test_unheard_classes_never_in_train_val_test(scene_sets):
    root, _, manifest, _ = scene_sets
    unheard = set(manifest["classes_unheard"])
    assert unheard and not unheard & set(manifest["classes_seen"])
    for split in ("train", "val", "test"):
        for e in json.loads((root / "annotations" / f"{split}.json").read_text()):
            used = {e["class"], e["offscreen_class"], *e["distractor_classes"]}
            assert not used & unheard, f"{split}/{e['file']} uses unheard {used & unheard}"
    test_unheard = json.loads((root / "annotations" / "test-unheard.json").read_text())
    assert all(e["class"] in unheard for e in test_unheard if not e["no_source"])


def test_digit_speakers_held_out(scene_sets):
    root, _, manifest, _ = scene_sets
    held, train_speakers = set(manifest["digit_speakers_heldout"]), set(manifest["digit_speakers_train"])
    assert held and train_speakers and not held & train_speakers
    digits = [e for e in json.loads((root / "annotations" / "digits.json").read_text()) if not e["no_source"]]
    assert digits and all(e["speaker"] in held and e["class"].startswith("digit_") for e in digits)
    train = json.loads((root / "annotations" / "train.json").read_text())
    assert all(e["speaker"] in train_speakers for e in train if e["speaker"])


def test_boxes_hold_every_alpha_pixel_and_are_tight():
    catalog = build_catalog()
    rng0 = np.random.default_rng(7)
    for k in range(25):
        cls = catalog.classes[int(rng0.integers(len(catalog.classes)))]
        target = ObjectSpec(cls.name, cls.stamps[0])
        distractors = [ObjectSpec("d", catalog.silent[int(rng0.integers(len(catalog.silent)))]) for _ in range(3)]
        if k % 5 == 0:
            target = ObjectSpec("digit_4", catalog.digit_images[4], 4)
        image, placed, _ = compose_image(np.random.default_rng(k), 128, catalog.backgrounds, target,
                                         float(rng0.uniform(0.1, 0.6)), distractors)
        assert image.shape == (128, 128, 3) and placed[0].role == "target" and len(placed) == 4
        for p in placed:
            x0, y0, x1, y1 = (round(v * 128) for v in p.box)
            ys, xs = np.nonzero(p.mask)
            assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
            # tight: the alpha reaches every edge of its box
            assert xs.min() == x0 and xs.max() == x1 - 1 and ys.min() == y0 and ys.max() == y1 - 1
        # the target is drawn inside the frame and its box is where its pixels are
        t = placed[0]
        assert t.mask.sum() > 0.2 * (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) * 128 * 128


def test_most_targets_large_enough_for_median_ciou(scene_sets):
    _, _, manifest, _ = scene_sets
    shares = [s["target_area_at_least_0.25"] for s in manifest["splits"].values() if s["target_area_at_least_0.25"] is not None]
    assert np.mean(shares) >= 0.6



def test_no_copy_of_a_sound_or_an_image_crosses_the_split():
    """The Tux Paint set has the same recording under several names (ram and mountaingoat, badger
    and beaver) and silent copies of sounding stamps (dreydl-shin_mirror, lion-2): neither may
    leak an unheard class into training or put an unannotated second source in a scene."""
    from jsa_rt.train.scene_catalog import _base_stem
    catalog = build_catalog()
    assert catalog.same_sound("ram") == {"ram", "mountaingoat", "goat"}
    assert catalog.same_sound("badger") == {"badger", "beaver"}            # sample-identical files
    sounding = {_base_stem(Path(s.image).stem) for c in catalog.classes for s in c.stamps}
    assert not [s.image for s in catalog.silent if _base_stem(Path(s.image).stem) in sounding]
    assert "dreydl-shin_mirror" in catalog.skipped and "lion-2" in catalog.skipped
    for seed in range(5):
        plan = scene_plan.plan_classes(catalog, seed)
        heard = set().union(*(catalog.same_sound(c) for c in plan.seen))
        assert not heard & set(plan.unheard), seed


def test_distractors_never_play_the_target_or_offscreen_sound(scene_sets):
    root, _, _, _ = scene_sets
    catalog = build_catalog()
    for split in COUNTS:
        for e in json.loads((root / "annotations" / f"{split}.json").read_text()):
            if e.get("kind", "cutout") != "cutout":      # real and several-source frames: tests below
                continue
            for sound in (e["class"], e["offscreen_class"]):
                if sound and not sound.startswith(("digit_", "silence")):
                    assert not catalog.same_sound(sound) & set(e["distractor_classes"]), e["file"]


def test_fsdd_takes_of_val_and_test_are_never_trained_on():
    takes = [f"/x/3_jackson_{i}.wav" for i in range(50)]
    chosen = {split: {int(Path(t).stem.split("_")[2]) for t in scene_compose._split_takes(takes, split)}
              for split in ("train", "val", "test", "digits")}
    assert chosen["train"].isdisjoint(chosen["val"]) and chosen["train"].isdisjoint(chosen["test"])
    assert chosen["val"].isdisjoint(chosen["test"]) and len(chosen["train"]) == 40
    assert len(chosen["digits"]) == 50                 # held-out speakers: every take


def test_bad_folders_and_numbers_are_one_line_errors(tmp_path, capsys):
    from jsa_rt.cli import main
    out = tmp_path / "out"
    small = ["make-scenes", "--out", str(out), "--counts", "train=2,val=0,test=0,test-unheard=0,digits=2",
             "--quiet", "--workers", "0"]
    (tmp_path / "empty").mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [(["--fsdd", str(tmp_path / "nope")], "--fsdd"), (["--backgrounds", str(tmp_path / "empty")], "--backgrounds"),
             (["--out", str(a_file / "scenes")], "is a file, not a folder")]     # a file where a folder goes
    for extra, needle in cases:
        assert main(small + extra) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and needle in err, err
    assert not out.exists()                      # asked-for folders are checked before writing
    for flag, value in (("--image-size", "0"), ("--seconds", "-1"), ("--no-source-fraction", "1.5"), ("--seed", "-3")):
        with pytest.raises(SystemExit) as stop:
            main(small + [flag, value])
        assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


# ---- the real-photo and several-source splits (classmap.py, scene_real.py) ---------------------
REAL_FOLDERS = ("urbansound8k", "0ad", "caltech101", "coco128")
needs_real = pytest.mark.skipif(not all((DATA / f).is_dir() for f in REAL_FOLDERS),
                                reason=f"needs the real folders of {DATA}: {', '.join(REAL_FOLDERS)}; set JSA_DATA")
# seed 1 makes the Tux Paint "dog" unheard while a real dog class exists
REAL_SEED = 1
REAL_COUNTS = {"train": 30, "val": 6, "test": 4, "test-unheard": 0, "digits": 0, "pairs": 3,
               "pairs-unheard": 2, "real": 4, "real-pairs": 3, "val-pairs": 3}


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    one, two, only_test = (tmp_path_factory.mktemp(n) for n in ("real_a", "real_b", "real_test"))
    kw = dict(seed=REAL_SEED, seconds=1.0, no_source_fraction=0.25, progress=False)
    m1 = scenes.generate(one, counts=REAL_COUNTS, workers=1, **kw)
    m2 = scenes.generate(two, counts=REAL_COUNTS, workers=2, **kw)
    scenes.generate(only_test, counts={"test": REAL_COUNTS["test"]}, workers=1, **kw)
    return one, two, only_test, m1, m2


def _entries(root: Path, split: str) -> list[dict]:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


@needs_real
def test_real_sets_same_seed_same_bytes(real_sets):
    one, two, _, m1, _ = real_sets
    a, b = _files(one), _files(two)
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"differ between runs: {different[:5]}"
    # the instruments are Debian packages: absent, they are one line
    assert m1["real_missing"] == ([line] if (line := instruments.missing_line(soundfont_programs())) else [])
    for split in ("pairs", "pairs-unheard", "real", "real-pairs", "val-pairs"):
        assert m1["counts"].get(split), split


@needs_real
def test_test_split_unchanged_by_the_other_splits(real_sets):
    one, _, only_test, _, _ = real_sets
    a = {k: v for k, v in _files(one).items() if Path(k).name.startswith("test_") or k.endswith(("/test.json", "/test.txt"))}
    b = {k: v for k, v in _files(only_test).items() if k != "scenes.json"}
    assert len(a) == 2 * REAL_COUNTS["test"] + 2 and a.keys() == b.keys()
    assert not [k for k in a if a[k] != b[k]]
    assert all(e.get("kind", "cutout") == "cutout" for e in _entries(one, "test"))


@needs_real
def test_pair_frames_one_soundtrack_per_sounding_object(real_sets):
    root, _, _, _, _ = real_sets
    n_groups = 0
    for split in ("pairs", "pairs-unheard", "real-pairs", "val-pairs", "train"):
        groups: dict[str, list[dict]] = {}
        for e in _entries(root, split):
            if e.get("group"):
                groups.setdefault(e["group"], []).append(e)
        if split != "train":
            assert len(groups) == REAL_COUNTS[split], split
        for group, items in groups.items():
            n_groups += 1
            assert len(items) >= 2 or split == "train", (split, group)
            assert [e["file"] for e in items] == [f"{group}_{k}" for k in range(len(items))]
            frames = {(root / "frames" / f"{e['file']}.jpg").read_bytes() for e in items}
            assert len(frames) == 1, f"{group}: frames differ"
            audio = [(root / "audio" / f"{e['file']}.wav").read_bytes() for e in items]
            assert len(set(audio)) == len(audio), f"{group}: a soundtrack is repeated"
            candidates = items[0]["candidates"]
            assert all(e["candidates"] == candidates for e in items), group
            classes = [e["class"] for e in items]
            assert len(set(classes)) == len(classes), (group, classes)
            cand_classes = [c["class"] for c in candidates]
            assert len(set(cand_classes)) == len(cand_classes), (group, cand_classes)
            assert set(classes) <= set(cand_classes)
            if split in ("pairs", "pairs-unheard"):    # every object of a sounding class plays once
                # (a real-pairs or val-pairs mosaic may add tiles of other real classes: silent candidates)
                assert set(classes) == set(cand_classes), (group, classes, cand_classes)
            for e in items:
                assert e["bbox"] == [c["box"] for c in candidates if c["class"] == e["class"]] and len(e["bbox"]) == 1
                assert e["class"] not in e["distractor_classes"] and not e["no_source"]
                x0, y0, x1, y1 = e["bbox"][0]
                assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert n_groups >= sum(REAL_COUNTS[s] for s in ("pairs", "pairs-unheard", "real-pairs", "val-pairs"))


@needs_real
def test_pair_boxes_of_different_sounding_objects_barely_overlap(real_sets):
    root, _, _, _, _ = real_sets
    from jsa_rt.train.scene_image import _overlap
    for split in ("pairs", "pairs-unheard", "real-pairs", "val-pairs"):
        for e in _entries(root, split):
            boxes = [c["box"] for c in e["candidates"]]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert _overlap(a, b) <= 0.12 and _overlap(b, a) <= 0.12, (e["file"], a, b)


@needs_real
@pytest.mark.parametrize("split, material", [("real", "test"), ("real-pairs", "test"), ("val-pairs", "val")])
def test_real_splits_use_their_own_recordings_and_photos_only(real_sets, split, material):
    """The test splits draw on held-out material; val-pairs (choosing best.pt) on the val material."""
    from jsa_rt.train.classmap import build_real_catalog
    root, _, _, manifest, _ = real_sets
    real = build_real_catalog()
    classes = set(real.usable(material))
    coco_split = {Path(c.path).stem: c.split for c in real.coco}
    offscreen_split = {Path(r.path).stem: r.split for r in real.offscreen}
    items = _entries(root, split)
    assert items
    for e in items:
        assert e["kind"] in ("mosaic", "coco") and not e["no_source"], e["file"]
        assert e["background"].startswith(("mosaic:", "coco:")), e["file"]
        if e["kind"] == "coco":
            assert coco_split[e["background"].split(":", 1)[1]] == material, e["file"]
        used = {e["class"], *(c["class"] for c in e["candidates"])}
        assert used <= classes, (e["file"], used - classes)
        assert not used & set(manifest["classes_unheard"]), e["file"]
        if e["offscreen_class"]:
            assert offscreen_split[e["offscreen_class"]] == material, e["file"]


@needs_real
def test_train_and_val_mix_never_show_or_play_an_unheard_class(real_sets):
    root, _, _, manifest, _ = real_sets
    unheard = set(manifest["classes_unheard"])
    assert "dog" in unheard           # the seed is chosen for this: a real dog class exists
    kinds = set()
    for split in ("train", "val"):
        for e in _entries(root, split):
            kinds.add(e.get("kind", "cutout"))
            assert e.get("kind", "cutout") in scene_plan.TRAIN_MIX, e["file"]
            used = {e["class"], e["offscreen_class"], *e["distractor_classes"],
                    *(c["class"] for c in e.get("candidates", ()))}
            assert not used & unheard, (e["file"], used & unheard)
    assert {"mosaic", "peers"} <= kinds


def test_an_existing_scene_set_is_refused_unless_force_which_empties_it(tmp_path, capsys):
    """Issue 16.8: writing a set over another left its old files while its ids named different scenes."""
    from jsa_rt.cli import main
    out = tmp_path / "set"
    counts = ",".join(f"{s}={3 if s == 'test' else 0}" for s in scene_plan.SPLITS)
    small = ["make-scenes", "--out", str(out), "--counts", counts, "--quiet", "--workers", "0", "--seconds", "1"]
    assert main(small + ["--seed", "1"]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    stale = out / "frames" / "stale-from-an-older-set.jpg"
    stale.write_bytes(b"old")
    assert main(small + ["--seed", "2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already holds a scene set" in err and "--force" in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p != stale} == before   # untouched
    assert main(small + ["--seed", "2", "--force"]) == 0
    assert not stale.exists()                              # --force emptied frames/ first
    ids = (out / "splits" / "test.txt").read_text().split()
    assert sorted(p.stem for p in (out / "frames").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (out / "audio").iterdir()) == sorted(ids)


def test_a_full_disk_while_making_scenes_is_one_line_and_leaves_no_temp_sound(tmp_path, monkeypatch):
    """Issue 16.7: libsndfile's own error on a full disk was a traceback, and its .tmp.wav stayed."""
    import os
    from jsa_rt.errors import InputError

    def full(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF")                        # part of it went in, then the disk filled
        raise RuntimeError("Error opening 'x.tmp.wav': System error.")

    class NoRoom:
        f_bavail, f_frsize = 0, 4096
    monkeypatch.setattr(sf, "write", full)
    monkeypatch.setattr(os, "statvfs", lambda path: NoRoom())
    out = tmp_path / "set"
    with pytest.raises(InputError, match=r"set: the disk is full.*--force"):
        scenes.generate(out, seed=1, counts={"test": 2}, seconds=1.0, workers=0, progress=False)
    assert not list((out / "audio").glob("*.tmp.wav"))
