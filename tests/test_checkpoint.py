"""jsa-rt checkpoints: round trip, fp16 storage, atomic writes, shipped names, clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from jsa_rt.config import get_preset
from jsa_rt.errors import CheckpointError
from jsa_rt.model import build_model, checkpoint
from jsa_rt.model.checkpoint import load_checkpoint, read_checkpoint, resolve_checkpoint, save_checkpoint

torch.set_num_threads(1)


def localize_outputs(model, seed=0):
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g)
    wave = torch.randn(2, cfg.num_samples, generator=g) * 0.1
    with torch.no_grad():
        return model.localize(images, wave)


def tiny_model(kind="jsa", seed=0):
    torch.manual_seed(seed)
    return build_model("tiny", kind, pretrained=False).eval()


def assert_one_line_error(info, *needles):
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


# ---- round trip ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["jsa", "ezvsl"])
def test_round_trip_gives_the_same_outputs(tmp_path, kind):
    model = tiny_model(kind)
    path = tmp_path / "sub" / "model.pt"                    # missing folders are created
    save_checkpoint(path, model, extra={"epoch": 3, "note": "test"})
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta["kind"] == kind and meta["config"] == model.cfg and meta["path"] == str(path)
    assert meta["extra"] == {"epoch": 3, "note": "test"}
    assert type(loaded) is type(model)
    before, after = localize_outputs(model), localize_outputs(loaded)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_round_trip_keeps_edge_pretrained_weights_and_overrides(tmp_path):
    """A checkpoint alone rebuilds its model: the config (incl. overrides) travels with it and
    the ImageNet weights come back from the file, not from the package."""
    cfg = get_preset("edge").with_overrides(iqr_alpha=0.6, gamma=0.2)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=True).eval()
    save_checkpoint(tmp_path / "edge.pt", model)
    loaded, meta = load_checkpoint(tmp_path / "edge.pt")
    assert meta["config"] == cfg and loaded.cfg.iqr_alpha == 0.6
    before, after = localize_outputs(model), localize_outputs(loaded)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_half_storage(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "full.pt", model)
    save_checkpoint(tmp_path / "half.pt", model, half=True)
    raw = torch.load(tmp_path / "half.pt", weights_only=False)["state_dict"]
    original = model.state_dict()
    assert raw.keys() == original.keys()
    for key, value in raw.items():
        if original[key].is_floating_point():
            assert value.dtype == torch.float16, key
        else:
            assert value.dtype == original[key].dtype and torch.equal(value, original[key]), key
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    loaded, _ = load_checkpoint(tmp_path / "half.pt")
    for key, value in loaded.state_dict().items():
        if original[key].is_floating_point():
            assert value.dtype == torch.float32
            assert torch.equal(value, original[key].half().float()), key
    before, after = localize_outputs(model), localize_outputs(loaded)
    assert torch.allclose(before["image_slot"], after["image_slot"], atol=1e-2)
    assert torch.allclose(before["audio_slot"], after["audio_slot"], atol=1e-2)


# ---- atomic write ----------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch, failure):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_model(seed=0))
    old_bytes = path.read_bytes()

    def half_written_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes")
        raise failure

    monkeypatch.setattr(torch, "save", half_written_then_fail)
    with pytest.raises(type(failure)):
        save_checkpoint(path, tiny_model(seed=1))
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]      # no temp file left
    loaded, _ = load_checkpoint(path)
    assert torch.equal(localize_outputs(loaded)["heatmap"], localize_outputs(tiny_model(seed=0))["heatmap"])


# ---- shipped names ---------------------------------------------------------------------------
def test_shipped_name_resolution(tmp_path, monkeypatch):
    from jsa_rt import shipped
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    for name in ("paper-jsa", "edge-ezvsl"):
        with pytest.raises(CheckpointError) as info:
            resolve_checkpoint(name)
        assert_one_line_error(info, repr(name), "--checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(None)                                   # the default is a shipped name
    assert_one_line_error(info, repr(checkpoint.DEFAULT_MODEL))

    model = tiny_model()
    save_checkpoint(tmp_path / f"{checkpoint.DEFAULT_MODEL}.pt", model)
    (tmp_path / "paper-jsa.onnx").write_bytes(b"onnx")
    assert resolve_checkpoint("paper-jsa", suffix=".onnx") == tmp_path / "paper-jsa.onnx"
    for name in (checkpoint.DEFAULT_MODEL, None):
        loaded, meta = load_checkpoint(name)
        assert Path(meta["path"]) == tmp_path / f"{checkpoint.DEFAULT_MODEL}.pt"
        assert torch.equal(localize_outputs(loaded)["heatmap"], localize_outputs(model)["heatmap"])


# ---- clear errors ----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert_one_line_error(info, "not found", "nope.pt")


def test_a_run_folder_is_pointed_to_its_checkpoints(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="is a folder.*it has none"):
        load_checkpoint(run)
    (run / "best.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint: pass a \.pt file in it \(best\.pt\)"):
        load_checkpoint(run)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_error(info, str(path), "corrupt or truncated")


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    for path in (text, resnet):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert_one_line_error(info, str(path))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(resnet)
    assert_one_line_error(info, "not a jsa-rt checkpoint")


def test_official_checkpoint_is_pointed_to_the_converter(tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": {"module.slot_attn.slots": torch.zeros(1, 2, 512)}, "epoch": 1}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_error(info, "convert-official")


def test_newer_format_and_mismatched_weights(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "model.pt", model)
    ckpt = torch.load(tmp_path / "model.pt", weights_only=False)

    newer = dict(ckpt, format_version=checkpoint.FORMAT_VERSION + 1)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "newer.pt")
    assert_one_line_error(info, "newer jsa-rt")

    # tiny weights under an edge config: rebuilt model and weights disagree
    wrong = dict(ckpt, config=get_preset("edge").to_dict())
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "wrong.pt")
    assert_one_line_error(info, "does not match")

    bad_config = dict(ckpt, config={**model.cfg.to_dict(), "future_field": 1})
    torch.save(bad_config, tmp_path / "bad_config.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "bad_config.pt")
    assert_one_line_error(info, "future_field")


def test_a_shipped_model_with_limited_terms_says_so_and_others_do_not():
    from jsa_rt.shipped import DEFAULT_MODEL, SHIPPED, TERMS, terms_line
    assert set(TERMS) <= set(SHIPPED)
    assert terms_line("edge-jsa-listen").startswith("model edge-jsa-listen: non-commercial use only")
    assert terms_line(None) == terms_line(DEFAULT_MODEL)
    assert terms_line("edge-ezvsl-listen").startswith("model edge-ezvsl-listen: non-commercial use only")
    assert terms_line("edge-jsa") is None and terms_line("runs/x/best.pt") is None
