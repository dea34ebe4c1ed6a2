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
from jsa_rt.train import evaluate as ev
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
        ev.write_csv(tmp_path / name / "test.csv", rows)
    oracle, wrong = (compare.read_rows(tmp_path / n / "test.csv") for n in ("oracle", "wrong"))
    result = compare.compare(oracle, wrong)
    assert result["paired"] == len(BOXES) + 2 and result["only_a"] == result["only_b"] == 0
    m = result["metrics"]
    assert set(m) == set(compare.METRICS)
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
    assert ev.run(_args(tmp_path, tiny_checkpoint, data)) == 0
    s = _check_outputs(tmp_path / "out" / "result.json", len(BOXES) + 2)
    assert s["skipped"] == 1 and s["skipped_items"][0]["id"] == "bad"
    assert s["n"] == len(BOXES) and s["false_alarm"] is not None and s["kind"] == "jsa"
    out = capsys.readouterr()
    assert "skipped bad" in out.err and "evaluated 6 samples" in out.out


def test_false_alarm_is_null_without_no_source_scenes(tmp_path, tiny_checkpoint):
    data = make_fixture(tmp_path / "d", no_source=False)
    assert ev.run(_args(tmp_path, tiny_checkpoint, data, threshold=0.6, alpha=0.6)) == 0
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
        assert ev.run(_args(tmp_path, tiny_checkpoint, tmp_path / "scenes", split=split, json=out)) == 0
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
        assert ev.run(_args(tmp_path, tiny_checkpoint, tmp_path / "scenes", alpha=alpha, json=out)) == 0
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
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), "--resamples", "0"])
    assert stop.value.code == 2 and "argument --resamples" in capsys.readouterr().err
