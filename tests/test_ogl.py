"""OGL: the object map is channel-mean |layer4| of a separate ResNet-18, fused with AUD like IQR.

No ImageNet weights exist offline here, so a randomly initialised torchvision ResNet-18 saved in
torchvision's file layout stands in for resnet18-f37072fd.pth (the loading code is the real one)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from jsa_rt.cli import main
from jsa_rt.model import build_model
from jsa_rt.model.checkpoint import save_checkpoint
from jsa_rt.model.maps import fuse
from jsa_rt.model.ogl import ObjectPrior


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("w") / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_object_map_is_channel_mean_abs_layer4(resnet_file):
    net, path = resnet_file
    prior = ObjectPrior(path)
    images = torch.randn(2, 3, 224, 224)
    feats = {}
    net.layer4.register_forward_hook(lambda m, i, o: feats.update(layer4=o))
    with torch.no_grad():
        net(images)
    torch.testing.assert_close(prior(images), feats["layer4"].abs().mean(dim=1), rtol=1e-5, atol=1e-6)


def test_localize_with_ogl_fuses_aud_with_the_object_map(resnet_file):
    _, path = resnet_file
    torch.manual_seed(1)
    model = build_model("tiny", pretrained=False).eval()
    prior = ObjectPrior(path)
    images, wave = torch.randn(1, 3, 112, 112), torch.randn(1, model.cfg.num_samples)
    with torch.no_grad():
        iqr = model.localize(images, wave)
        ogl = model.localize(images, wave, alpha=0.4, object_prior=prior)
    torch.testing.assert_close(ogl["aud"], iqr["aud"])
    assert ogl["obj"].shape[-2:] == (4, 4)            # ResNet-18 stride 32 on 112 px
    torch.testing.assert_close(ogl["heatmap"], fuse(ogl["aud"], ogl["obj"], 0.4, 112))
    assert not torch.allclose(ogl["heatmap"], iqr["heatmap"])


def test_localize_cli_ogl_and_missing_weights(resnet_file, tmp_path, capsys):
    from jsa_rt.audio_io import load_image  # noqa: F401  (the CLI reads real files)
    import cv2
    import soundfile as sf
    _, path = resnet_file
    model = build_model("tiny", pretrained=False)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, model)
    cv2.imwrite(str(tmp_path / "img.png"), (np.random.default_rng(0).random((112, 112, 3)) * 255).astype(np.uint8))
    sf.write(tmp_path / "a.wav", np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32), 16000)
    args = ["localize", "--checkpoint", str(ckpt), "--image", str(tmp_path / "img.png"),
            "--audio", str(tmp_path / "a.wav"), "--out", str(tmp_path / "o.npz")]
    assert main(args + ["--ogl", str(path)]) == 0
    assert np.load(tmp_path / "o.npz")["obj"].shape == (4, 4)
    assert main(args + ["--ogl", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet18" in err[-1].lower()
    truncated = tmp_path / "resnet18-cut.pth"
    truncated.write_bytes(Path(path).read_bytes()[:1000])
    assert main(args + ["--ogl", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(truncated) in err and "corrupt or truncated" in err, err
