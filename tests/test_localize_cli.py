"""`jsa-rt localize` end to end on real Tux Paint pairs, with small random-weight checkpoints,
and the one-line errors of the CLI for bad checkpoints, images and audio."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
import torchvision

from jsa_rt.audio_io import fit_length, load_audio, load_image, resample, resize_image
from jsa_rt.cli import main
from jsa_rt.config import get_preset
from jsa_rt.model import build_model
from jsa_rt.model.checkpoint import save_checkpoint
from jsa_rt.model.base import FramePreprocess
from jsa_rt.model.jsa import JSA
from jsa_rt.model.maps import fuse, min_max, upsample


def image_to_tensor(rgb):
    """What the model receives for an RGB uint8 image (the model's own frame preprocessing)."""
    return FramePreprocess()(torch.from_numpy(np.ascontiguousarray(rgb))[None])


torch.set_num_threads(1)
DATA = Path(os.environ.get("JSA_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def data_path(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real data not found at {path}: set JSA_DATA to the shared data folder")
    return path


def tux_pair(name: str) -> tuple[Path, Path]:
    """A Tux Paint stamp picture and its recording (RGBA png, ogg)."""
    folder = {"ghost": "seasonal/halloween", "frog": "animals/amphibians"}[name]
    return (data_path(f"tuxpaint-stamps/stamps/{folder}/{name}.png"),
            data_path(f"tuxpaint-stamps/stamps/{folder}/{name}.ogg"))


@pytest.fixture
def generated_pair(tmp_path):
    """A valid picture and sound written here, for the error tests (no shared data needed)."""
    rng = np.random.default_rng(0)
    image, audio = tmp_path / "noise.png", tmp_path / "noise.wav"
    assert cv2.imwrite(str(image), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    sf.write(str(audio), rng.uniform(-0.3, 0.3, 8000).astype(np.float32), 8000)
    return image, audio


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model("tiny", pretrained=False))
    return path


def localize(*args) -> int:
    return main(["localize", *map(str, args)])


def assert_one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("jsa-rt localize: error:"), err
    for needle in needles:
        assert needle in err, err


# ---- end to end ------------------------------------------------------------------------------
def test_localize_writes_maps_and_picture(tiny_checkpoint, tmp_path, capsys):
    image, audio = tux_pair("ghost")                 # RGBA png; stereo 22.05 kHz ogg
    cfg = get_preset("tiny")
    out, png = tmp_path / "out" / "ghost.npz", tmp_path / "pics" / "ghost.png"
    assert localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", audio,
                    "--out", out, "--png", png) == 0
    stdout = capsys.readouterr().out
    assert str(out) in stdout and str(png) in stdout and "peak at" in stdout

    maps = np.load(out)
    g, size = cfg.grid, cfg.image_size
    assert maps["aud"].shape == maps["img"].shape == (g, g)
    assert maps["heatmap"].shape == (size, size)
    heat = maps["heatmap"]
    assert heat.min() == pytest.approx(0, abs=1e-6) and heat.max() == pytest.approx(1, abs=1e-6)
    for key in ("image_slot", "audio_slot"):
        assert maps[key].shape == (cfg.dim,)
        assert np.linalg.norm(maps[key]) == pytest.approx(1.0, abs=1e-5)
    assert 0 <= float(maps["confidence"]) <= 1
    # aud/img are the 7x7 maps before upsampling; the heatmap is their IQR fusion
    expected = fuse(torch.from_numpy(maps["aud"])[None], torch.from_numpy(maps["img"])[None],
                    cfg.iqr_alpha, size)[0].numpy()
    assert np.allclose(heat, expected, atol=1e-6)

    # the CLI ran the model on this very pair (image resized, audio down-mixed and resampled)
    torch.manual_seed(0)
    model = build_model("tiny", pretrained=False).eval()
    rgb = load_image(image)
    assert rgb.shape[:2] != (size, size)
    wave = fit_length(load_audio(audio, cfg.sample_rate), cfg.num_samples)
    with torch.no_grad():
        direct = model.localize(image_to_tensor(resize_image(rgb, size)), torch.from_numpy(wave)[None])
    for key in ("aud", "img", "heatmap", "image_slot", "audio_slot"):
        assert np.allclose(maps[key], direct[key][0].numpy(), atol=1e-6), key

    picture = cv2.imread(str(png))
    assert picture is not None and picture.shape == (*rgb.shape[:2], 3)       # the image's own size


def test_alpha_option_changes_the_fusion(tiny_checkpoint, tmp_path):
    image, audio = tux_pair("frog")
    out = tmp_path / "aud_only.npz"
    assert localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", audio,
                    "--out", out, "--alpha", "1.0") == 0
    maps = np.load(out)
    only_aud = min_max(upsample(torch.from_numpy(maps["aud"])[None], get_preset("tiny").image_size))[0]
    assert np.allclose(maps["heatmap"], only_aud.numpy(), atol=1e-6)


def test_model_size_image_and_16k_wav_are_not_resampled(tmp_path, monkeypatch):
    """edge preset: 224x224 image, 16 kHz audio; the inputs reach the model untouched."""
    cfg = get_preset("edge")
    assert (cfg.image_size, cfg.sample_rate) == (224, 16000)
    image_src, audio_src = tux_pair("frog")
    # a 224x224 picture and a 16 kHz wav made from the real pair (written before the spies)
    rgb = cv2.resize(load_image(image_src), (224, 224), interpolation=cv2.INTER_AREA)
    image = tmp_path / "frog224.png"
    assert cv2.imwrite(str(image), rgb[..., ::-1].copy())
    raw, rate = sf.read(str(audio_src), dtype="float32")
    audio = tmp_path / "frog16k.wav"
    sf.write(str(audio), resample(raw, rate, 16000), 16000, subtype="FLOAT")
    original_wave, _ = sf.read(str(audio), dtype="float32")
    torch.manual_seed(0)
    checkpoint = tmp_path / "edge.pt"
    save_checkpoint(checkpoint, build_model("edge", pretrained=False), half=True)

    resized = []
    real_resize = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda src, *a, **k: (resized.append(src.shape), real_resize(src, *a, **k))[1])
    import scipy.signal
    monkeypatch.setattr(scipy.signal, "resample_poly",
                        lambda *a, **k: pytest.fail("resampled a 16 kHz wav"))
    seen = {}
    real_localize = JSA.localize

    def spy(self, images, wave, alpha=None):
        seen["images"], seen["wave"] = images.clone(), wave.clone()
        return real_localize(self, images, wave, alpha)

    monkeypatch.setattr(JSA, "localize", spy)
    out = tmp_path / "frog.npz"
    assert localize("--checkpoint", checkpoint, "--image", image, "--audio", audio, "--out", out,
                    "--png", tmp_path / "frog_overlay.png") == 0
    assert resized, "the spy saw no resize at all (the overlay resizes the heatmap)"
    assert not [shape for shape in resized if len(shape) == 3], resized     # no image resize
    assert torch.equal(seen["images"], image_to_tensor(rgb))
    assert torch.equal(seen["wave"][0], torch.from_numpy(fit_length(original_wave, cfg.num_samples)))
    maps = np.load(out)
    assert maps["aud"].shape == (7, 7) and maps["heatmap"].shape == (224, 224)


# ---- one-line errors -------------------------------------------------------------------------
def test_bad_checkpoints(tiny_checkpoint, tmp_path, capsys, generated_pair):
    image, audio = generated_pair
    run = lambda ckpt: localize("--checkpoint", ckpt, "--image", image, "--audio", audio,
                                "--out", tmp_path / "x.npz")
    truncated = tmp_path / "truncated.pt"
    data = tiny_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    assert run(truncated) == 2
    assert_one_line_error(capsys, str(truncated), "corrupt or truncated")

    foreign = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), foreign)
    assert run(foreign) == 2
    assert_one_line_error(capsys, str(foreign), "not a jsa-rt checkpoint")

    official = tmp_path / "official.pth"
    torch.save({"model": {"module.slot_attn.slots": torch.zeros(1, 2, 512)}, "epoch": 1}, official)
    assert run(official) == 2
    assert_one_line_error(capsys, "convert-official")

    assert run(tmp_path / "missing.pt") == 2
    assert_one_line_error(capsys, "not found")
    assert not (tmp_path / "x.npz").exists()


def test_unreadable_image_and_audio(tiny_checkpoint, tmp_path, capsys, generated_pair):
    image, audio = generated_pair
    text_png, text_wav = tmp_path / "fake.png", tmp_path / "fake.wav"
    text_png.write_text("not a picture\n")
    text_wav.write_text("not a sound\n")
    cases = [(text_png, audio, "cannot decode image"), (tmp_path / "none.png", audio, "image file not found"),
             (image, text_wav, "cannot decode audio"), (image, tmp_path / "none.ogg", "audio file not found")]
    for img, aud, needle in cases:
        assert localize("--checkpoint", tiny_checkpoint, "--image", img, "--audio", aud,
                        "--out", tmp_path / "x.npz") == 2
        assert_one_line_error(capsys, needle)
    assert not (tmp_path / "x.npz").exists()


def test_unwritable_picture(tiny_checkpoint, tmp_path, capsys, generated_pair):
    image, audio = generated_pair
    assert localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", audio,
                    "--out", tmp_path / "x.npz", "--png", tmp_path / "overlay.unknownext") == 2
    assert_one_line_error(capsys, "cannot write", "overlay.unknownext")
    assert not (tmp_path / "x.npz").exists()              # refused before anything was written


def test_unwritable_maps_and_empty_audio(tiny_checkpoint, tmp_path, capsys, generated_pair):
    image, audio = generated_pair
    run = lambda aud, out: localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", aud,
                                    "--out", out)
    assert run(audio, image / "x.npz") == 2                # a file where the folder should be
    assert_one_line_error(capsys, "cannot write", "is a file, not a folder")
    (tmp_path / "maps").mkdir()
    assert run(audio, tmp_path / "maps") == 2              # a folder where the file should be
    assert_one_line_error(capsys, "cannot write", "is a folder")
    assert list((tmp_path / "maps").iterdir()) == []
    assert localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", audio,
                    "--out", tmp_path / "x.npz", "--png", image / "overlay.png") == 2
    assert_one_line_error(capsys, "cannot write", "overlay.png")
    assert not (tmp_path / "x.npz").exists()               # the maps are not left without their picture
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert run(empty, tmp_path / "x.npz") == 2
    assert_one_line_error(capsys, "is empty (0 bytes)")


def test_16_bit_grey_png_reads_like_its_8_bit_version(tmp_path):
    from PIL import Image
    grey = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")     # 16-bit, same picture
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    eight, sixteen = load_image(tmp_path / "g8.png"), load_image(tmp_path / "g16.png")
    assert sixteen.shape == (40, 60, 3) and sixteen.dtype == np.uint8
    assert np.array_equal(sixteen, eight)


def test_rgba_cutouts_are_composited_on_black():
    image, _ = tux_pair("frog")
    from PIL import Image
    with Image.open(image) as im:
        rgba = np.asarray(im.convert("RGBA"))
    assert (rgba[..., 3] == 0).any() and rgba[..., :3][rgba[..., 3] == 0].max() > 0   # colour under alpha 0
    rgb = load_image(image)
    assert rgb.shape == rgba.shape[:2] + (3,) and rgb.dtype == np.uint8
    assert rgb[rgba[..., 3] == 0].max() == 0
    opaque = rgba[..., 3] == 255
    assert np.array_equal(rgb[opaque], rgba[..., :3][opaque])


def test_a_wav_with_nan_samples_is_a_clear_error_not_confidence_nan(tiny_checkpoint, tmp_path, capsys,
                                                                    generated_pair):
    image, _ = generated_pair
    wave = np.random.default_rng(2).uniform(-0.3, 0.3, 16000).astype(np.float32)
    wave[8000] = np.nan
    wave[9000] = np.inf
    bad = tmp_path / "nan.wav"
    sf.write(str(bad), wave, 16000, subtype="FLOAT")
    assert localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", bad,
                    "--out", tmp_path / "x.npz") == 2
    assert_one_line_error(capsys, "nan.wav holds 2 NaN/inf sample(s), the first at 0.500 s")
    assert not (tmp_path / "x.npz").exists()


def test_out_and_png_naming_one_file_is_refused(tiny_checkpoint, tmp_path, capsys, generated_pair):
    image, audio = generated_pair
    same = tmp_path / "both.png"
    (tmp_path / "link.png").symlink_to(same)
    for png in (same, tmp_path / "link.png"):
        assert localize("--checkpoint", tiny_checkpoint, "--image", image, "--audio", audio,
                        "--out", same, "--png", png) == 2
        assert_one_line_error(capsys, "--out and --png both name", "different file names")
    assert not same.exists()


@pytest.mark.parametrize("h, w, shown", [(60, 160, (60, 160)), (900, 3000, (384, 1280))])
def test_localize_picture_keeps_the_images_own_aspect(tiny_checkpoint, tmp_path, generated_pair, h, w, shown):
    """Issue 16: the --png was the model's square input, a wide photo squeezed."""
    _, audio = generated_pair
    wide = tmp_path / "wide.png"
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = 255                                   # left half white: visible in the overlay
    assert cv2.imwrite(str(wide), rgb)
    png = tmp_path / "overlay.png"
    assert localize("--checkpoint", tiny_checkpoint, "--image", wide, "--audio", audio,
                    "--out", tmp_path / "m.npz", "--png", png) == 0
    picture = cv2.imread(str(png))
    assert picture.shape == (*shown, 3)
    left, right = picture[:, : shown[1] // 2 - 4].mean(), picture[:, shown[1] // 2 + 4:].mean()
    assert left > right + 40                                 # the picture is the photo, not stretched
