"""Dataset readers on small fixtures written in each public layout (no shared data needed)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from jsa_rt.config import get_preset
from jsa_rt.train import metrics
from jsa_rt.train.datasets import (AVDataset, collate, guess_format, open_dataset, parse_flickr_xml,
                                   random_crop_audio, read_samples)

CFG = get_preset("tiny")          # 112 px images, 1 s of audio at 16 kHz


def _jpg(path, seed, size=(160, 120)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _wav(path, seconds, seed, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32), rate)


def test_pairs_layout_with_corrupt_and_missing_items(tmp_path):
    for i, name in enumerate(["a", "b", "c", "d"]):
        _jpg(tmp_path / "frames" / f"{name}.jpg", i)
        if name != "d":
            _wav(tmp_path / "audio" / f"{name}.wav", 2.5 if name == "a" else 0.3, i, rate=22050)
    (tmp_path / "frames" / "c.jpg").write_bytes(b"not a jpeg at all")     # unreadable
    (tmp_path / "train.txt").write_text("a\nb.jpg\nc\nd\n")
    ds = open_dataset("pairs", tmp_path, CFG, annotations=tmp_path / "train.txt")
    assert [s.id for s in ds.samples] == ["a", "b", "c"]
    assert len(ds.missing) == 1 and ds.missing[0][0] == "d" and "audio" in ds.missing[0][1]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (2, 3, 112, 112) and batch["audio"].shape == (2, CFG.num_samples)
    assert batch["id"] == ["a", "b"] and batch["index"].tolist() == [0, 1]
    assert len(batch["errors"]) == 1 and batch["errors"][0][0] == "c"
    # evaluation audio: the 0.3 s clip is tiled, the long one centre-cropped
    short = batch["audio"][1].numpy()
    assert np.allclose(short[:4800], short[4800:9600], atol=1e-6)
    assert not batch["has_gt"].any()
    # normalised with ImageNet statistics
    assert batch["image"].min() < -1.0 and batch["image"].max() > 1.5


def test_train_transform_and_random_audio_crop(tmp_path):
    _jpg(tmp_path / "frames" / "x.jpg", 0, size=(300, 200))
    _wav(tmp_path / "audio" / "x.wav", 3.0, 0)
    torch.manual_seed(0)
    ds = open_dataset("pairs", tmp_path, CFG, train=True)
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 112, 112) and a["audio"].shape == (CFG.num_samples,)
    assert not torch.equal(a["audio"], b["audio"]) or not torch.equal(a["image"], b["image"])
    import random
    wave = np.arange(100, dtype=np.float32)
    crop = random_crop_audio(wave, 250, random.Random(1))
    assert crop.size == 250 and np.all(np.diff(crop)[np.diff(crop) != -99] == 1)   # a window of the tiled clip


def test_flickr_layout_xml_consensus(tmp_path):
    _jpg(tmp_path / "frames" / "1000.jpg", 0, size=(256, 256))
    _wav(tmp_path / "audio" / "1000.wav", 1.0, 0)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "1000.xml").write_text(
        "<annotation><object>"
        "<bbox><label>1</label><xmin>0</xmin><ymin>0</ymin><xmax>128</xmax><ymax>128</ymax></bbox>"
        "<bbox><label>2</label><xmin>64</xmin><ymin>64</ymin><xmax>192</xmax><ymax>192</ymax></bbox>"
        "</object></annotation>")
    assert parse_flickr_xml(tmp_path / "Annotations" / "1000.xml") == [[0, 0, 128, 128], [64, 64, 192, 192]]
    assert guess_format(tmp_path) == "flickr"
    ds = open_dataset("flickr", tmp_path, CFG)
    item = ds[0]
    assert item["has_gt"] and item["gt"][60, 60] == 1.0 and item["gt"][0, 0] == 0.5 and item["gt"][200, 200] == 0


def test_vggss_json_and_scenes_layout(tmp_path):
    entries = [{"file": "v1", "class": "dog", "bbox": [[0.1, 0.2, 0.5, 0.6]]},
               {"file": "v2", "class": "cat", "bbox": [[0, 0, 0.3, 0.3], [0.6, 0.6, 1, 1]]}]
    for i, e in enumerate(entries):
        _jpg(tmp_path / "frames" / f"{e['file']}.jpg", i)
        _wav(tmp_path / "audio" / f"{e['file']}.wav", 1.0, i)
    (tmp_path / "vggss.json").write_text(json.dumps(entries))
    ds = open_dataset("vggss", tmp_path, CFG, annotations=tmp_path / "vggss.json")
    batch = collate([ds[0], ds[1]])
    assert np.array_equal(batch["gt"][1].numpy(), metrics.gt_map_vggss(entries[1]["bbox"]).astype(np.float32))
    assert batch["label"] == ["dog", "cat"]
    # scenes: the same layout under annotations/<split>.json, plus no-source scenes
    entries.append({"file": "v3", "class": "silence", "bbox": [], "no_source": True})
    _jpg(tmp_path / "frames" / "v3.jpg", 3)
    _wav(tmp_path / "audio" / "v3.wav", 1.0, 3)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "test.json").write_text(json.dumps(entries))
    assert guess_format(tmp_path) == "scenes"
    ds = open_dataset("scenes", tmp_path, CFG, split="test")
    batch = collate([ds[i] for i in range(3)])
    assert batch["no_source"].tolist() == [False, False, True] and batch["has_gt"].tolist() == [True, True, False]
    from jsa_rt.errors import InputError
    with pytest.raises(InputError, match="no split 'val'"):
        read_samples("scenes", tmp_path, split="val")


def test_avsbench_s4_layout(tmp_path):
    base = tmp_path / "Single-source" / "s4_data"
    for split, vid in (("test", "vidA"), ("train", "vidB")):
        for i in (1, 2):
            _jpg(base / "visual_frames" / "224x224" / split / "dog" / vid / f"{vid}_{i}.png", i, size=(224, 224))
            mask = np.zeros((224, 224), np.uint8)
            mask[:112, :56] = 255 if i == 1 else 0                        # frame 2: empty mask
            (base / "gt_masks" / split / "dog" / vid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(base / "gt_masks" / split / "dog" / vid / f"{vid}_{i}.png")
        _wav(base / "audio_wav" / split / "dog" / f"{vid}.wav", 5.0, 0)
    # AVSBench's loaders read the video name by position (first column) and the split by name
    (tmp_path / "Single-source" / "s4_meta_data.csv").write_text(
        "vid_name,uid,category,split\nvidA,7,dog,test\nvidB,8,dog,train\n")
    ds = open_dataset("avsbench", tmp_path, CFG, split="test")
    assert [s.id for s in ds.samples] == ["vidA_1", "vidA_2"] and not ds.missing
    item = ds[0]
    assert item["label"] == "dog" and item["gt"].sum() == 112 * 56 and item["gt"][0, 0] == 1
    assert ds[1]["gt"].sum() == 0
    # a split the meta CSV does not list has no samples, even with masks outside split folders
    flat = tmp_path / "Single-source" / "s4_data" / "gt_masks" / "dog" / "vidC"
    flat.mkdir(parents=True)
    Image.fromarray(np.zeros((224, 224), np.uint8)).save(flat / "vidC_1.png")
    assert read_samples("avsbench", tmp_path, split="val") == []


def test_unreadable_audio_is_reported_not_replaced(tmp_path):
    _jpg(tmp_path / "frames" / "x.jpg", 0)
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "x.wav").write_bytes(b"RIFF....garbage")
    ds = AVDataset(read_samples("pairs", tmp_path), CFG)
    item = ds[0]
    assert set(item) == {"index", "id", "error"} and item["id"] == "x" and "x.wav" in item["error"]
    assert "image" not in collate([item]) and collate([item])["errors"] == [("x", item["error"])]
