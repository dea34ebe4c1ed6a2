"""`jsa-rt eval` on deployed graphs (runtime/batch.py, export/graph_eval.py) and the int8 image
encoder (export/onnx_int8.py), on the tiny model: an ONNX export scores as its checkpoint does,
and the int8 form quantizes the image encoder only and stays close to fp32."""
import csv
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from jsa_rt.cli import main
from jsa_rt.config import IMAGENET_MEAN, IMAGENET_STD, get_preset
from jsa_rt.errors import InputError
from jsa_rt.export import graph_eval
from jsa_rt.export import onnx_export as oe
from jsa_rt.export.onnx_int8 import frame_only_nodes, quantize_export
from jsa_rt.audio_io import camera_frames
from jsa_rt.runtime.ort_backend import OrtBackend, graph_path, run_onnx
from jsa_rt.train.datasets import open_dataset

from test_evaluate import _args, make_fixture, make_pair_fixture

CFG = get_preset("tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint and its fp32 ONNX export (full, audio, visual)."""
    from jsa_rt.model import build_model
    from jsa_rt.model.checkpoint import save_checkpoint
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    model = build_model(CFG, pretrained=False).eval()
    save_checkpoint(root / "tiny.pt", model)
    oe.export_all(model, root / "tiny.onnx", model_name="tiny", log=lambda *_: None)
    return root / "tiny.pt", root / "tiny.onnx"


def _rows(out_json):
    return {r["id"]: r for r in csv.DictReader(open(out_json.with_suffix(".csv")))}


def test_camera_frames_undo_the_datasets_normalisation(tmp_path):
    data = make_fixture(tmp_path / "d", no_source=False)
    item = open_dataset("scenes", data, CFG, split="test")[0]
    original = np.asarray(Image.open(data / "frames" / "s0.jpg").convert("RGB").resize(
        (CFG.image_size, CFG.image_size), Image.BILINEAR)).astype(int)
    frame = camera_frames(item["image"].numpy()[None])[0]
    assert frame.dtype == np.uint8 and frame.shape == (CFG.image_size, CFG.image_size, 3)
    diff = np.abs(frame.astype(int) - original)
    assert np.median(diff) == 0 and diff.mean() < 1          # only the box edges resample differently
    assert np.all(np.abs(frame[30, 30].astype(int) - 100) <= 1)   # inside sample 0's box: grey 100


@pytest.mark.parametrize("make, split", [(make_fixture, "test"), (make_pair_fixture, "pairs")])
def test_an_onnx_export_scores_as_its_checkpoint(tmp_path, tiny, make, split):
    checkpoint, export = tiny
    data = make(tmp_path / "d")
    a, b = tmp_path / "pt" / "r.json", tmp_path / "onnx" / "r.json"
    assert graph_eval.run(_args(tmp_path, checkpoint, data, split=split, json=a)) == 0
    assert graph_eval.run(_args(tmp_path, export, data, split=split, json=b)) == 0
    sa, sb = json.loads(a.read_text()), json.loads(b.read_text())
    assert sb["kind"].startswith("onnxruntime") and sa["kind"] == "jsa"
    assert sa["n"] == sb["n"] > 0 and sa["pointing"] == sb["pointing"]
    assert sb["ciou50"] == pytest.approx(sa["ciou50"], abs=0.2) and sb["auc"] == pytest.approx(sa["auc"], abs=0.05)
    ra, rb = _rows(a), _rows(b)
    assert ra.keys() == rb.keys()
    for key in ra:
        assert ra[key]["pointing"] == rb[key]["pointing"], key
        assert float(ra[key]["confidence"]) == pytest.approx(float(rb[key]["confidence"]), abs=1e-3)
    if split == "pairs":
        assert sa["pairs"]["follows"] == sb["pairs"]["follows"]


def test_eval_of_a_graph_refuses_what_only_a_checkpoint_can_do(tmp_path, tiny, capsys):
    _, export = tiny
    data = make_fixture(tmp_path / "d", no_source=False)
    for extra, says in ((["--alpha", "0.9"], "IQR weight built in"), (["--ogl", "r18.pth"], "--ogl needs a checkpoint")):
        code = main(["eval", "--checkpoint", str(export), "--data", str(data), "--json", str(tmp_path / "o.json"),
                     "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_int8_quantizes_the_image_encoder_only(tiny):
    _, export = tiny
    full = onnx.load(str(export))
    chosen = set(frame_only_nodes(full))
    by_name = {n.name: n for n in full.graph.node}
    assert chosen and {by_name[n].op_type for n in chosen} <= {"Conv", "Clip", "Relu", "Add"}
    assert any(by_name[n].op_type == "Conv" for n in chosen)
    # the audio graph has nothing the frame alone computes; neither has the frame's normalisation
    assert frame_only_nodes(onnx.load(str(graph_path(export, "audio")))) == []
    first_conv = next(n for n in full.graph.node if n.op_type == "Conv")
    before = full.graph.node[:list(full.graph.node).index(first_conv)]
    assert not chosen & {n.name for n in before}


def test_int8_export_stays_close_to_fp32_and_keeps_the_audio_graph(tmp_path, tiny):
    _, export = tiny
    data = make_fixture(tmp_path / "d")
    paths = quantize_export(export, tmp_path / "tiny.int8.onnx", data, split="test", log=lambda *_: None)
    assert set(paths) == {"full", "audio", "visual"} and all(p.is_file() for p in paths.values())
    backend = OrtBackend(paths["full"], device="cpu")
    assert backend.precision == "int8" and backend.config == OrtBackend(export, device="cpu").config
    visual = onnx.load(str(paths["visual"]))
    assert any(n.op_type == "QuantizeLinear" for n in visual.graph.node)
    item = open_dataset("scenes", data, CFG, split="test")[2]
    frame, wave = camera_frames(item["image"].numpy()[None]), item["audio"].numpy()[None]
    assert all(np.array_equal(a, b) for a, b in zip(run_onnx(graph_path(export, "audio"), {"wave": wave}).values(),
                                                    run_onnx(paths["audio"], {"wave": wave}).values()))
    ref, q = run_onnx(export, {"frame": frame, "wave": wave}), run_onnx(paths["full"], {"frame": frame, "wave": wave})
    corr = np.corrcoef(ref["heatmap"].ravel(), q["heatmap"].ravel())[0, 1]
    assert corr > 0.9, corr
    cos = float(np.sum(ref["image_slot"] * q["image_slot"]))
    assert cos > 0.95, cos


def test_int8_refuses_a_quantized_or_fp16_source_and_bad_flags(tmp_path, tiny, capsys):
    _, export = tiny
    data = make_fixture(tmp_path / "d")
    paths = quantize_export(export, tmp_path / "q.onnx", data, split="test", log=lambda *_: None)
    with pytest.raises(InputError, match="quantize an fp32 export"):
        quantize_export(paths["full"], tmp_path / "qq.onnx", data, split="test")
    code = main(["export-onnx", "--checkpoint", "edge-jsa", "--out", str(tmp_path / "y.onnx"),
                 "--int8", str(tmp_path / "no-such-folder")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-folder" in err and "make-scenes" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y.onnx").exists()                     # refused before exporting anything
    for extra in (["--preset", "tiny"], ["--checkpoint", "edge-jsa", "--fp16"]):
        code = main(["export-onnx", "--out", str(tmp_path / "x.onnx"), "--int8", str(data), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "--int8" in err and len(err.strip().splitlines()) == 1


def test_map_smoothing_travels_through_checkpoint_and_onnx(tmp_path):
    """The smoothing is part of the model: saved in the checkpoint's config, baked into the
    exported graph's upsampling, and read back from the ONNX metadata."""
    from jsa_rt.model import build_model
    from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint
    torch.manual_seed(1)
    model = build_model(CFG.with_overrides(map_smoothing=0.75), pretrained=False).eval()
    save_checkpoint(tmp_path / "s.pt", model)
    loaded, meta = load_checkpoint(tmp_path / "s.pt")
    assert meta["config"].map_smoothing == 0.75
    oe.export_all(loaded, tmp_path / "s.onnx", model_name="s", log=lambda *_: None)
    backend = OrtBackend(tmp_path / "s.onnx", device="cpu")
    assert backend.config.map_smoothing == 0.75
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (1, CFG.image_size, CFG.image_size, 3), dtype=np.uint8)
    wave = (0.1 * rng.standard_normal((1, CFG.num_samples))).astype(np.float32)
    graph = run_onnx(tmp_path / "s.onnx", {"frame": frame, "wave": wave})["heatmap"]
    with torch.no_grad():
        images = torch.from_numpy(frame).permute(0, 3, 1, 2).float() / 255
        images = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        ours = loaded.localize(images, torch.from_numpy(wave))["heatmap"].numpy()
    np.testing.assert_allclose(graph, ours, atol=1e-4)
    unsmoothed = build_model(CFG, pretrained=False).eval()
    unsmoothed.load_state_dict(loaded.state_dict())
    with torch.no_grad():
        plain = unsmoothed.localize(images, torch.from_numpy(wave))["heatmap"].numpy()
    assert np.abs(plain - ours).max() > 1e-2              # the smoothing changed the map
