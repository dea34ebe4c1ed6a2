"""tools/set_image_size.py: a trained model at another input size keeps every weight, computes its
maps on the new token grid, and can go on training (the decoder's grid embeddings interpolated)."""
import importlib.util
from pathlib import Path

import torch

from jsa_rt.model import build_model
from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint

TOOL = Path(__file__).resolve().parents[1] / "tools" / "set_image_size.py"
spec = importlib.util.spec_from_file_location("set_image_size", TOOL)
set_image_size = importlib.util.module_from_spec(spec)
spec.loader.exec_module(set_image_size)


def test_the_same_weights_on_a_finer_grid(tmp_path, capsys):
    torch.manual_seed(0)
    src, out = tmp_path / "tiny.pt", tmp_path / "tiny160.pt"
    save_checkpoint(src, build_model("tiny", pretrained=False))            # 112 x 112, stride 16: 7 x 7
    assert set_image_size.main([str(src), "160", str(out)]) == 0
    assert "7 x 7 -> 10 x 10 tokens" in capsys.readouterr().out
    old, _ = load_checkpoint(src)
    new, meta = load_checkpoint(out)
    assert (new.cfg.image_size, new.cfg.grid) == (160, 10) and "trained at 112" in meta["extra"]["image_size"]
    a, b = old.state_dict(), new.state_dict()
    embeddings = {"image_decoder.row_embed.weight", "image_decoder.col_embed.weight"}
    for name in a:
        if name in embeddings:                 # interpolated along the grid: its ends kept, 10 rows
            assert b[name].shape == (10, a[name].shape[1])
            assert torch.allclose(b[name][[0, -1]], a[name][[0, -1]], atol=1e-6)
        else:
            assert torch.equal(a[name], b[name]), name

    images, wave = torch.randn(2, 3, 160, 160), torch.randn(2, new.cfg.num_samples) * 0.1
    with torch.no_grad():
        maps = new.localize(images, wave)
    assert maps["heatmap"].shape[-2:] == (160, 160)
    back = tmp_path / "tiny112.pt"             # and back: it still says what it was trained at
    assert set_image_size.main([str(out), "112", str(back)]) == 0
    again, meta = load_checkpoint(back)
    history = meta["extra"]["image_size"]
    assert history.startswith("trained at 112") and "then set to 112" in history
    assert all(torch.equal(a[k], again.state_dict()[k]) for k in a if k not in embeddings)
    loss, _ = new.train().loss(images, wave)                           # training can go on from it
    assert torch.isfinite(loss)


def test_a_size_off_the_stride_is_a_one_line_error(tmp_path, capsys):
    src = tmp_path / "tiny.pt"
    save_checkpoint(src, build_model("tiny", pretrained=False))
    assert set_image_size.main([str(src), "150", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "150" in err and "multiple of image_stride 16" in err and "try 144" in err, err
    assert not (tmp_path / "x.pt").exists()


def test_stride_16_dilates_the_efficientnet_model_with_the_same_weights(tmp_path, capsys):
    torch.manual_seed(0)
    src, out = tmp_path / "edge.pt", tmp_path / "edge_s16.pt"
    save_checkpoint(src, build_model("edge", pretrained=False))            # 224 x 224, stride 32: 7 x 7
    assert set_image_size.main([str(src), "224", str(out), "--stride", "16"]) == 0
    assert "7 x 7 -> 14 x 14 tokens" in capsys.readouterr().out
    old, _ = load_checkpoint(src)
    new, meta = load_checkpoint(out)
    assert (new.cfg.image_stride, new.cfg.grid) == (16, 14) and "stride 16" in meta["extra"]["image_size"]
    conv = new.image_encoder.backbone._blocks[15]._depthwise_conv
    assert conv.dilation == (2, 2) and conv.stride == (1, 1)                # rebuilt dilated on load
    a, b = old.state_dict(), new.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "_embed" not in k)


def test_a_stride_the_encoder_lacks_is_a_one_line_error(tmp_path, capsys):
    src = tmp_path / "tiny.pt"
    save_checkpoint(src, build_model("tiny", pretrained=False))
    assert set_image_size.main([str(src), "112", str(tmp_path / "x.pt"), "--stride", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "image_stride 32" in err and "choose 16" in err and "try" not in err, err
    assert not (tmp_path / "x.pt").exists()
