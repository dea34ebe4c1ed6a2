"""`jsa-rt eval` end to end: stand-in localisers with known answers, then the real tiny model."""
import argparse
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from jsa_rt.config import IMAGENET_MEAN, IMAGENET_STD, get_preset
from jsa_rt.train import eval_cli, eval_report
from jsa_rt.train import evaluate as ev
from jsa_rt.train import metrics
from jsa_rt.train.datasets import open_dataset
from jsa_rt.train.scene_catalog import default_data_root

CFG = get_preset("tiny")
BOXES = [[0.05, 0.05, 0.55, 0.6], [0.4, 0.3, 0.95, 0.9], [0.1, 0.45, 0.7, 0.95],
         [0.3, 0.0, 0.9, 0.5], [0.0, 0.2, 0.5, 0.8], [0.45, 0.45, 1.0, 1.0]]


def make_fixture(root, no_source=True, corrupt=False):
    """Scenes layout: sample i is a flat box of grey level 100 + 25*i on black, and audio that is a
    constant 0.05 + 0.01*i; no-source scenes are black with silent audio."""
    (root / "frames").mkdir(parents=True)
    (root / "audio").mkdir()
    entries = []
    for i, box in enumerate(BOXES):
        img = np.zeros((128, 128, 3), np.uint8)
        x0, y0, x1, y1 = (int(round(v * 128)) for v in box)
        img[y0:y1, x0:x1] = 100 + 25 * i
        Image.fromarray(img).save(root / "frames" / f"s{i}.jpg", quality=100)
        sf.write(root / "audio" / f"s{i}.wav", np.full(16000, 0.05 + 0.01 * i, np.float32), 16000)
        entries.append({"file": f"s{i}", "class": f"c{i % 3}", "bbox": [box], "no_source": False})
    if no_source:
        for k in range(2):
            Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(root / "frames" / f"n{k}.jpg")
            sf.write(root / "audio" / f"n{k}.wav", np.zeros(16000, np.float32), 16000)
            entries.append({"file": f"n{k}", "class": "silence", "bbox": [], "no_source": True})
    if corrupt:
        (root / "frames" / "bad.jpg").write_bytes(b"broken")
        sf.write(root / "audio" / "bad.wav", np.zeros(16000, np.float32), 16000)
        entries.append({"file": "bad", "class": "c0", "bbox": [[0, 0, 1, 1]], "no_source": False})
    (root / "annotations").mkdir()
    (root / "annotations" / "test.json").write_text(json.dumps(entries))
    return root


class OracleLocalizer(torch.nn.Module):
    """A stand-in model that reads the fixture's answers off its inputs (the real model is tested
    below): heatmap = image brightness (or its mirror image when `wrong`), slots = one-hot of the
    sample index decoded from the grey level / the audio level, confidence = audio present."""

    def __init__(self, wrong=False):
        super().__init__()
        self.cfg, self.wrong = CFG, wrong

    def localize(self, images, wave, alpha=None):
        std, mean = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        grey = (images * std + mean).mean(1)
        heat = grey.flip(1).flip(2) if self.wrong else grey
        level = torch.stack([g[g > 0.3].median() if (g > 0.3).any() else torch.tensor(0.0) for g in grey])
        img_idx = ((level * 255 - 100) / 25).round().long().clamp(0, 15)
        aud_idx = ((wave.mean(1) - 0.05) / 0.01).round().long().clamp(0, 15)
        if self.wrong:
            img_idx = (img_idx + 1) % len(BOXES)
        eye = torch.eye(16)
        return {"heatmap": heat, "image_slot": eye[img_idx], "audio_slot": eye[aud_idx],
                "confidence": (wave.abs().mean(1) > 1e-3).float(),
                "aud": heat[:, ::16, ::16], "img": heat[:, ::16, ::16]}


def test_oracle_scores_perfectly_and_wrong_maps_score_zero(tmp_path):
    ds = open_dataset("scenes", make_fixture(tmp_path / "d"), CFG, split="test")
    summary, rows, examples = ev.evaluate(OracleLocalizer(), ds, batch_size=3, threshold=0.6, progress=False)
    assert summary["n"] == len(BOXES) and summary["n_read"] == len(BOXES) + 2 and summary["skipped"] == 0
    assert summary["ciou50"] == 1.0 and summary["pointing"] == 1.0 and summary["auc"] > 0.9
    assert summary["retrieval"]["a2i"]["r1"] == 1.0 and summary["retrieval"]["i2a"]["r1"] == 1.0
    assert summary["false_alarm"] == 0.0 and summary["detection_rate"] == 1.0 and summary["n_no_source"] == 2
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(len(BOXES))] + ["n0", "n1"]
    assert sum(g["n"] for g in summary["by_size"].values()) == len(BOXES)
    assert len(examples) == len(BOXES) + 2

    # per-sample ranks (for paired comparisons) and Wilson intervals that contain the value
    assert [r.get("rank_a2i") for r in rows] == [0] * len(BOXES) + [None, None]
    assert all(r["class_rank_i2a"] == 0 for r in rows[:len(BOXES)])
    for key, value in (("ciou50", 1.0), ("pointing", 1.0), ("r1_a2i", 1.0), ("r1_i2a", 1.0)):
        lo, hi = summary["ci95"][key]
        assert lo <= value <= hi and lo < 0.7       # 6 samples cannot pin a fraction down

    wrong, wrong_rows, _ = ev.evaluate(OracleLocalizer(wrong=True), ds, batch_size=4, threshold=0.6, progress=False)
    assert wrong["pointing"] < 0.5 and wrong["ciou50"] < 0.5
    assert wrong["retrieval"]["a2i"]["r1"] == 0.0
    assert all(r["rank_a2i"] > 0 for r in wrong_rows[:len(BOXES)])


def test_compare_pairs_two_eval_csvs(tmp_path, capsys):
    from jsa_rt.errors import InputError
    from jsa_rt.train import compare
    ds = open_dataset("scenes", make_fixture(tmp_path / "d"), CFG, split="test")
    for name, model in (("oracle", OracleLocalizer()), ("wrong", OracleLocalizer(wrong=True))):
        _, rows, _ = ev.evaluate(model, ds, batch_size=4, threshold=0.6, progress=False)
        (tmp_path / name).mkdir()
        eval_report.write_csv(tmp_path / name / "test.csv", rows)
    oracle, wrong = (compare.read_rows(tmp_path / n / "test.csv") for n in ("oracle", "wrong"))
    result = compare.compare(oracle, wrong)
    assert result["paired"] == len(BOXES) + 2 and result["only_a"] == result["only_b"] == 0
    m = result["metrics"]
    assert set(m) == set(compare.METRICS) - set(compare.PER_GROUP)       # no frames: follows is left out quietly
    assert "follows" not in result["not_compared"]
    assert m["rank_a2i"]["a"] == 1.0 and m["rank_a2i"]["b"] == 0.0 and m["rank_a2i"]["lo"] == 1.0
    assert m["rank_a2i"]["better"] == m["pointing"]["better"] == m["auc"]["better"] == "A"
    assert compare.compare(wrong, oracle)["metrics"]["ciou50"]["better"] == "B"
    # ranks from different galleries are not comparable: a run over fewer samples is refused there
    fewer = {i: r for i, r in wrong.items() if i != "s0"}
    partial = compare.compare(oracle, fewer)
    assert partial["only_a"] == 1 and "ciou50" in partial["metrics"]
    assert "rank_a2i" not in partial["metrics"] and "different retrieval galleries" in partial["not_compared"]["rank_a2i"]
    assert all(x["better"] == "tie (n.s.)" and x["diff"] == 0 for x in compare.compare(oracle, oracle)["metrics"].values())
    # the CLI prints the table and a summary line, and writes JSON
    out = tmp_path / "cmp.json"
    args = compare.add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
        [str(tmp_path / "oracle" / "test.csv"), str(tmp_path / "wrong" / "test.csv"), "--json", str(out),
         "--png", str(tmp_path / "cmp.png")])
    assert compare.run(args) == 0
    text = capsys.readouterr().out
    assert "| R@1 a2i | 100.0 | 0.0 |" in text and "oracle significantly better on" in text
    assert json.loads(out.read_text())["names"] == ["oracle", "wrong"]
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "cmp.png").stat().st_size > 5000
    (tmp_path / "twice.csv").write_text("id,ciou\nx,0.5\nx,0.7\n")
    with pytest.raises(InputError, match="repeated sample ids"):
        compare.read_rows(tmp_path / "twice.csv")
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a per-sample CSV"):
        compare.read_rows(tmp_path / "junk.csv")
    with pytest.raises(InputError, match="cannot read"):
        compare.read_rows(tmp_path / "missing.csv")


# ---- multi-source ("pair") scenes: one frame written once per sounding object ----------------------
PAIR_BOXES = {"dog": [0.05, 0.1, 0.45, 0.9], "cat": [0.55, 0.1, 0.95, 0.9]}     # disjoint
PAIR_LEVEL = {"dog": 0.05, "cat": 0.1}                                          # constant audio per class


def make_pair_fixture(root, frames=3):
    """`frames` frames with a dog (left) and a cat (right), each written twice (g<k>-dog with the
    dog's sound, g<k>-cat with the cat's) with a shared group, plus one single-source scene."""
    (root / "frames").mkdir(parents=True)
    (root / "audio").mkdir()
    candidates = [{"class": c, "box": b} for c, b in PAIR_BOXES.items()]
    entries = []
    for k in range(frames):
        img = np.zeros((128, 128, 3), np.uint8)
        for i, (x0, y0, x1, y1) in enumerate(PAIR_BOXES.values()):
            img[int(y0 * 128):int(y1 * 128), int(x0 * 128):int(x1 * 128)] = 120 + 60 * i + 10 * k
        for cls, box in PAIR_BOXES.items():
            name = f"g{k}-{cls}"
            Image.fromarray(img).save(root / "frames" / f"{name}.jpg", quality=100)
            sf.write(root / "audio" / f"{name}.wav", np.full(16000, PAIR_LEVEL[cls], np.float32), 16000)
            entries.append({"file": name, "class": cls, "bbox": [box], "no_source": False, "group": f"g{k}",
                            "candidates": candidates, "kind": ("cutout", "mosaic")[k % 2]})
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(root / "frames" / "single.jpg")
    sf.write(root / "audio" / "single.wav", np.full(16000, 0.05, np.float32), 16000)
    entries.append({"file": "single", "class": "dog", "bbox": [[0, 0, 1, 1]], "no_source": False})
    (root / "annotations").mkdir()
    (root / "annotations" / "pairs.json").write_text(json.dumps(entries))
    return root


class PairLocalizer(torch.nn.Module):
    """Stand-in model: a bump on the centre of the object whose sound it hears (`follow`), or
    always on the dog (a map that never moves)."""

    def __init__(self, follow=True):
        super().__init__()
        self.cfg, self.follow = CFG, follow

    def localize(self, images, wave, alpha=None):
        n, size = images.shape[0], images.shape[-1]
        hears_cat = (wave.mean(1) > 0.075) & self.follow
        yy, xx = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
        cx = torch.where(hears_cat, 0.75, 0.25).view(n, 1, 1)
        heat = torch.exp(-((xx - cx) ** 2 + (yy - 0.5) ** 2) / 0.01)
        slots = torch.eye(4)[hears_cat.long()]
        return {"heatmap": heat, "image_slot": slots, "audio_slot": slots,
                "confidence": torch.ones(n), "aud": heat[:, ::16, ::16], "img": heat[:, ::16, ::16]}


def test_scenes_reader_carries_groups_and_candidates(tmp_path):
    pair = open_dataset("scenes", make_pair_fixture(tmp_path / "p"), CFG, split="pairs").samples
    assert pair[1].meta["group"] == "g0" and pair[1].meta["kind"] == "cutout" and pair[2].meta["kind"] == "mosaic"
    assert pair[1].meta["candidates"] == [{"class": c, "box": b} for c, b in PAIR_BOXES.items()]
    assert ev.other_candidate_boxes(pair[1]) == [PAIR_BOXES["dog"]]          # g0-cat: the dog is the other one
    assert pair[-1].meta["group"] is None and pair[-1].meta["candidates"] == []
    old = open_dataset("scenes", make_fixture(tmp_path / "d"), CFG, split="test").samples   # no pair keys
    assert all(s.meta["group"] is None and s.meta["candidates"] == [] and "kind" not in s.meta for s in old)
    # a candidate box is checked like any ground-truth box: NaN or inverted is a one-line error
    from jsa_rt.errors import InputError
    root = tmp_path / "p"
    entries = json.loads((root / "annotations" / "pairs.json").read_text())
    entries[1]["candidates"][0]["box"] = [0.5, float("nan"), 0.2, 0.9]
    (root / "annotations" / "pairs.json").write_text(json.dumps(entries))
    with pytest.raises(InputError, match=f"{entries[1]['file']}'s candidate: box .* x0 < x1"):
        open_dataset("scenes", root, CFG, split="pairs")


def test_follows_a_map_that_follows_the_sound_and_one_that_never_moves(tmp_path):
    from jsa_rt.train import compare
    ds = open_dataset("scenes", make_pair_fixture(tmp_path / "p"), CFG, split="pairs")
    good, good_rows, examples = ev.evaluate(PairLocalizer(), ds, batch_size=4, progress=False)
    still, still_rows, _ = ev.evaluate(PairLocalizer(follow=False), ds, batch_size=4, progress=False)
    p, q = good["pairs"], still["pairs"]
    assert p["groups"] == q["groups"] == 3 and p["scenes"] == 6                # the single scene is no frame
    assert p["follows"] == 1.0 and good["pointing"] == 1.0 and p["wrong_object"] == 0.0
    # the dog's map also for the cat: pointing says 50 %, follows says 0, the cat's peak is on the dog
    assert q["follows"] == 0.0 and q["wrong_object"] == 0.5 and still["pointing"] == pytest.approx(4 / 7)
    area = {c: float((metrics.gt_map_vggss([b]) > 0).mean()) for c, b in PAIR_BOXES.items()}
    assert p["chance"] == q["chance"] == pytest.approx(area["dog"] * area["cat"]) and p["never_moves"] == 0.0
    assert set(p["by_kind"]) == {"cutout", "mosaic"} and p["by_kind"]["cutout"]["groups"] == 2
    lo, hi = good["ci95"]["follows"]
    assert hi == 1.0 and 0.3 < lo < 0.5                                        # 3 frames pin little down
    assert [r.get("follows") for r in still_rows] == [False] * 6 + [None]
    assert {e["group"] for e in examples if e["group"]} == {"g0", "g1", "g2"}
    # compare pairs the frames, not the scenes
    for name, rows in (("good", good_rows), ("still", still_rows)):
        eval_report.write_csv(tmp_path / f"{name}.csv", rows)
    result = compare.compare(*(compare.read_rows(tmp_path / f"{n}.csv") for n in ("good", "still")))
    f = result["metrics"]["follows"]
    assert f["n"] == 3 and f["a"] == 1.0 and f["b"] == 0.0 and f["better"] == "A"
    assert "follows (frames), n=3" in compare.markdown(result, "good", "still")


def test_cli_on_a_pair_split_with_tiny_model(tmp_path, tiny_checkpoint, capsys):
    data = make_pair_fixture(tmp_path / "p")
    out_json = tmp_path / "out" / "pairs.json"
    assert eval_cli.run(_args(tmp_path, tiny_checkpoint, data, split="pairs", json=out_json)) == 0
    s = json.loads(out_json.read_text())
    rows = list(csv.DictReader(open(out_json.with_suffix(".csv"))))
    frames = {}
    for r in rows:
        if r["group"]:
            frames.setdefault(r["group"], []).append(r)
    implied = [all(r["pointing"] == "True" for r in scenes) for scenes in frames.values()]
    assert s["pairs"]["groups"] == len(frames) == 3
    assert s["pairs"]["follows"] == pytest.approx(np.mean(implied))
    assert all(r["follows"] == str(ok) for scenes, ok in zip(frames.values(), implied) for r in scenes)
    assert s["pairs"]["chance"] == pytest.approx(np.mean([np.prod([float(r["gt_area"]) for r in scenes])
                                                          for scenes in frames.values()]))
    assert s["pairs"]["wrong_object"] == pytest.approx(np.mean([r["wrong_object"] == "True" for r in rows if r["group"]]))
    assert "follows" in s["ci95"] and "| follows" in out_json.with_suffix(".md").read_text()
    png = out_json.with_name("pairs_pairs.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    assert "pair scenes: follows" in capsys.readouterr().out


def _args(tmp_path, ckpt, data, **kw):
    ns = dict(checkpoint=str(ckpt), data=data, split="test", annotations=None, format=None, threshold="median",
              alpha=None, fa_threshold=0.5, batch_size=4, workers=0, device="cpu", limit=0, grid=4,
              json=tmp_path / "out" / "result.json", out_dir=None, quiet=True)
    ns.update(kw)
    return argparse.Namespace(**ns)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from jsa_rt.model import build_model
    from jsa_rt.model.checkpoint import save_checkpoint
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model(get_preset("tiny"), pretrained=False))
    return path


def _check_outputs(out_json, n_rows):
    s = json.loads(out_json.read_text())
    for key in ("n", "ciou50", "auc", "pointing", "false_alarm", "retrieval", "by_size", "skipped"):
        assert key in s
    for v in (s["ciou50"], s["auc"], s["pointing"], *s["retrieval"]["a2i"].values(), *s["retrieval"]["i2a"].values()):
        assert v is None or 0 <= v <= max(1, n_rows)
    assert set(s["retrieval"]["a2i"]) >= {"r1", "r5", "r10"}
    assert all(0 <= s["retrieval"][d][k] <= 1 for d in ("a2i", "i2a") for k in ("r1", "r5", "r10"))
    rows = list(csv.DictReader(open(out_json.with_suffix(".csv"))))
    assert len(rows) == n_rows
    assert "| cIoU@0.5" in out_json.with_suffix(".md").read_text()
    png = out_json.with_suffix(".png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    return s


def test_cli_run_with_tiny_model_counts_the_corrupt_item(tmp_path, tiny_checkpoint, capsys):
    data = make_fixture(tmp_path / "d", corrupt=True)
    assert eval_cli.run(_args(tmp_path, tiny_checkpoint, data)) == 0
    s = _check_outputs(tmp_path / "out" / "result.json", len(BOXES) + 2)
    assert s["skipped"] == 1 and s["skipped_items"][0]["id"] == "bad"
    assert s["n"] == len(BOXES) and s["false_alarm"] is not None and s["kind"] == "jsa"
    out = capsys.readouterr()
    assert "skipped bad" in out.err and "evaluated 6 samples" in out.out


def test_false_alarm_is_null_without_no_source_scenes(tmp_path, tiny_checkpoint):
    data = make_fixture(tmp_path / "d", no_source=False)
    assert eval_cli.run(_args(tmp_path, tiny_checkpoint, data, threshold=0.6, alpha=0.6)) == 0
    s = json.loads((tmp_path / "out" / "result.json").read_text())
    assert s["false_alarm"] is None and s["threshold"] == 0.6 and s["alpha"] == 0.6


DATA = default_data_root()


@pytest.mark.skipif(not (DATA / "tuxpaint-stamps").is_dir() or not (DATA / "fsdd").is_dir(),
                    reason=f"needs the shared data folder ({DATA}); set JSA_DATA")
def test_eval_on_generated_scenes(tmp_path, tiny_checkpoint):
    from jsa_rt.train.scenes import generate
    generate(tmp_path / "scenes", seed=1, counts={"test": 10, "digits": 6}, seconds=1.0, workers=1,
             no_source_fraction=0.2, progress=False)
    for split in ("test", "digits"):
        out = tmp_path / "out" / f"{split}.json"
        assert eval_cli.run(_args(tmp_path, tiny_checkpoint, tmp_path / "scenes", split=split, json=out)) == 0
        n = {"test": 10, "digits": 6}[split]
        s = _check_outputs(out, n)
        assert s["format"] == "scenes" and s["n_no_source"] == round(0.2 * n) and s["skipped"] == 0
        assert s["n"] + s["n_no_source"] == n
        # the breakdown by recorded scene conditions partitions the scored samples
        assert set(s["by_condition"]) == set(ev.CONDITIONS)
        for levels in s["by_condition"].values():
            assert sum(g["n"] for g in levels.values()) == s["n"]
        rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
        assert all(r["background"] in ("photo", "photo_crop", "texture", "synthetic") for r in rows)


def test_one_eval_reports_both_iqr_weights(tmp_path, tiny_checkpoint):
    """method.md 5.4: report IQR at 0.4 (released scripts) and 0.6 (paper). One run gives both,
    each equal to a run made with that weight alone."""
    from jsa_rt.train.scenes import generate
    generate(tmp_path / "scenes", seed=2, counts={"test": 12}, seconds=1.0, workers=1, progress=False)
    results = {}
    for alpha in (None, 0.6, 1.0):
        out = tmp_path / f"out-{alpha}" / "test.json"
        assert eval_cli.run(_args(tmp_path, tiny_checkpoint, tmp_path / "scenes", alpha=alpha, json=out)) == 0
        results[alpha] = json.loads(out.read_text())
    default = results[None]
    assert default["alpha"] == 0.4 and set(default["iqr_alphas"]) == {"0.4", "0.6"}
    for weight, alone in (("0.4", default), ("0.6", results[0.6])):
        assert default["iqr_alphas"][weight] == {k: alone[k] for k in ("n", "ciou50", "auc", "pointing")}
    assert results[1.0]["iqr_alphas"]["0.6"] == default["iqr_alphas"]["0.6"]   # any run gives both
    assert "IQR weight 0.6" in (tmp_path / "out-None" / "test.md").read_text()


def test_scene_conditions_buckets():
    meta = {"background": "photo:astronaut", "distractor_boxes": [[0, 0, 1, 1]] * 4,
            "audio": {"snr_db": 9.99, "offscreen_db": -6.0}}
    assert ev.scene_conditions(meta) == {"background": "photo", "distractors": "3+", "offscreen": "yes",
                                         "snr": "<10 dB"}
    quiet = {"background": "texture:brick", "distractor_boxes": [], "audio": {"snr_db": 20.0}}
    assert ev.scene_conditions(quiet) == {"background": "texture", "distractors": "0", "offscreen": "no",
                                          "snr": ">=20 dB"}
    assert ev.scene_conditions({"background": "synthetic", "audio": {}})["snr"] == "clean"
    assert ev.scene_conditions({"class": "dog"}) == {}            # VGG-SS entries: no breakdown


# ---- bad input: one line, exit 2, no result files ----------------------------------------------
def _eval_cli(tmp_path, ckpt, data, *extra):
    from jsa_rt.cli import main
    return main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--json",
                 str(tmp_path / "out" / "r.json"), "--quiet", *map(str, extra)])


def _one_line(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("jsa-rt eval: error:"), err
    assert needle in err.splitlines()[-1], err


def test_eval_bad_annotations_and_unreadable_data(tmp_path, tiny_checkpoint, capsys):
    data = make_fixture(tmp_path / "d", no_source=False)
    assert _eval_cli(tmp_path, tiny_checkpoint, data, "--annotations", tmp_path / "nope.json") == 2
    _one_line(capsys, "annotation file not found")
    (data / "annotations" / "odd.json").write_text('{"s0": [0, 0, 1, 1]}')
    assert _eval_cli(tmp_path, tiny_checkpoint, data, "--split", "odd") == 2
    _one_line(capsys, "VGG-SS layout")
    for frame in (data / "frames").iterdir():              # every picture unreadable
        frame.write_bytes(b"broken")
    assert _eval_cli(tmp_path, tiny_checkpoint, data) == 2
    _one_line(capsys, "could be read")
    assert not (tmp_path / "out").exists()                 # a failed run leaves no results behind


def test_eval_bad_numbers_and_device(tmp_path, tiny_checkpoint, capsys):
    data = make_fixture(tmp_path / "d", no_source=False)
    for flag, value in (("--batch-size", 0), ("--workers", -1), ("--limit", -2), ("--device", "tpu")):
        with pytest.raises(SystemExit) as stop:             # argparse: a usage line and the reason
            _eval_cli(tmp_path, tiny_checkpoint, data, flag, value)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and "Traceback" not in err, err
    if not torch.cuda.is_available():
        assert _eval_cli(tmp_path, tiny_checkpoint, data, "--device", "cuda") == 2
        _one_line(capsys, "use --device cpu")
    assert not (tmp_path / "out").exists()


def test_compare_refuses_binary_files_and_zero_resamples(tmp_path, capsys):
    from jsa_rt.cli import main
    from jsa_rt.errors import InputError
    from jsa_rt.train import compare
    png = tmp_path / "maps.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    with pytest.raises(InputError, match="not a text CSV"):
        compare.read_rows(png)
    (tmp_path / "a.csv").write_text("id,ciou\nx,0.5\n")
    for flag, value in (("--resamples", "0"), ("--seed", "-1")):     # a negative seed crashed numpy
        with pytest.raises(SystemExit) as stop:
            main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), flag, value])
        assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_compare_refuses_too_few_resamples(tmp_path, capsys):
    """One resample gave "significantly better" with an interval [+4.5, +4.5] around +0.0."""
    from jsa_rt.cli import main
    from jsa_rt.errors import InputError
    from jsa_rt.train import compare
    (tmp_path / "a.csv").write_text("id,ciou\nx,0.5\ny,0.1\n")
    (tmp_path / "b.csv").write_text("id,ciou\nx,0.4\ny,0.2\n")
    for n in ("1", "999"):
        with pytest.raises(SystemExit) as stop:
            main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--resamples", n])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "argument --resamples: got" in err and ">= 1000" in err, err
    rows = compare.read_rows(tmp_path / "a.csv"), compare.read_rows(tmp_path / "b.csv")
    with pytest.raises(InputError, match="1 bootstrap resamples is too few.*at least 1000"):
        compare.compare(*rows, resamples=1)
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--resamples", "1000"]) == 0


@pytest.mark.parametrize("box, shown", [("[NaN, 0.1, 0.5, 0.5]", "nan"), ("[0.6, 0.1, 0.2, 0.5]", "0.6"),
                                        ("[0.2, 0.3, 0.2, 0.5]", "0.2"), ("[0.1, 0.2]", "0.1")])
def test_eval_refuses_nan_inverted_and_empty_boxes_naming_the_entry(tmp_path, tiny_checkpoint, capsys, box, shown):
    """A NaN box counted as a pointing hit; inverted or empty ones were dropped without a word."""
    data = make_fixture(tmp_path / "d", no_source=False)
    ann = data / "annotations" / "test.json"
    entries = json.loads(ann.read_text())
    ann.write_text(json.dumps(entries).replace(json.dumps(entries[2]["bbox"][0]), box, 1))
    assert _eval_cli(tmp_path, tiny_checkpoint, data) == 2
    _one_line(capsys, f"entry 2 (s2): box [{shown}")
    assert not (tmp_path / "out").exists()


def test_flickr_xml_boxes_are_checked(tmp_path):
    from jsa_rt.errors import InputError
    from jsa_rt.train.datasets import parse_flickr_xml
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><bbox><xmin>40</xmin><ymin>10</ymin><xmax>20</xmax><ymax>50</ymax></bbox>"
                   "</annotation>")
    with pytest.raises(InputError, match=r"annotation .*a.xml: box \[40.0, 10.0, 20.0, 50.0\] is not"):
        parse_flickr_xml(xml)
    xml.write_text("<annotation><bbox><xmin>nan</xmin><ymin>10</ymin><xmax>20</xmax><ymax>50</ymax></bbox>"
                   "</annotation>")
    with pytest.raises(InputError, match="box \\[nan"):
        parse_flickr_xml(xml)


def test_eval_guesses_vggss_from_the_annotation_file(tmp_path, tiny_checkpoint, capsys):
    """A VGG-SS folder (frames/, audio/, the JSON list, a test.csv) without --format: the JSON
    was read as an id list ("skipped" lines of JSON fragments)."""
    data = make_fixture(tmp_path / "d", no_source=False)
    vggss = data / "vggss_test.json"
    (data / "annotations" / "test.json").rename(vggss)
    (data / "annotations").rmdir()
    entries = json.loads(vggss.read_text())
    (data / "test.csv").write_text("".join(f"{e['file']}\n" for e in entries))
    assert _eval_cli(tmp_path, tiny_checkpoint, data, "--annotations", vggss) == 0
    assert "skipped" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "r.json").read_text())
    assert summary["n"] == len(entries) and summary["skipped"] == 0
    from jsa_rt.train.datasets import guess_format
    assert guess_format(data, vggss) == "vggss" and guess_format(data, data / "test.csv") == "pairs"


def test_compare_refuses_rows_that_are_different_scenes_under_one_id(tmp_path, capsys):
    """Issue 16.8: a set made again into the same folder gave its ids to different scenes, and
    `compare` paired the old run's rows with the new run's without a word."""
    from jsa_rt.cli import main
    from jsa_rt.errors import InputError
    from jsa_rt.train import compare
    head = "id,label,no_source,ciou,pointing\n"
    (tmp_path / "a.csv").write_text(head + "s0,dog,False,0.5,True\ns1,cat,False,0.1,False\ns2,,True,,\n")
    (tmp_path / "b.csv").write_text(head + "s0,dog,False,0.4,True\ns1,cow,False,0.2,False\ns2,,True,,\n")
    (tmp_path / "c.csv").write_text(head + "s0,dog,False,0.4,True\ns1,cat,False,0.2,False\ns2,car,False,0.3,True\n")
    a, b, c = (compare.read_rows(tmp_path / f"{n}.csv") for n in "abc")
    with pytest.raises(InputError, match=r"sample 's1' is a different scene.*label 'cat' in A, 'cow' in B"):
        compare.compare(a, b)
    with pytest.raises(InputError, match=r"sample 's2' is a different scene.*label"):
        compare.compare(a, c)
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'s1'" in err and "Traceback" not in err, err
    assert compare.compare(b, b)["paired"] == 3                            # the same scenes still pair
