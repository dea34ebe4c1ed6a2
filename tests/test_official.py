"""`jsa-rt convert-official`: a synthetic checkpoint in the official layout (method.md section 9)
converts into a `paper` model whose maps and target slots equal an independent functional
implementation of the official forward, written below directly on the official key names.

The synthetic weights: a random paper model, every BatchNorm/LayerNorm statistic and affine
parameter perturbed away from its default (so a swapped norm would show), q/k weights scaled up
so the maps are peaked, renamed to the official keys, prefixed with `module.` and wrapped as
{"model", "optimizer", "epoch"}.
"""
from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from jsa_rt.cli import main
from jsa_rt.config import get_preset
from jsa_rt.model import build_model
from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint
from jsa_rt.model.official import convert_official

torch.set_num_threads(1)
CFG = get_preset("paper")

# our key prefix -> official key prefix; first match wins (the test's own table, written from
# method.md section 9, independent of jsa_rt.model.official)
OURS_TO_OFFICIAL = [
    ("image_encoder.proj.", "imgnet.proj."),
    ("image_encoder.backbone.", "imgnet."),
    ("audio_encoder.backbone.conv1.", "audnet.conv1_1."),
    ("audio_encoder.backbone.", "audnet."),
    ("audio_encoder.proj.", "audnet.proj.0."),
    ("slots.initial_slots", "slot_attn.slots"),
    ("slots.image.mask_token", "slot_attn.mask_token_img"),
    ("slots.audio.mask_token", "slot_attn.mask_token_aud"),
    ("slots.image.", "slot_attn.img_"),
    ("slots.audio.", "slot_attn.aud_"),
    ("image_decoder.row_embed.", "img_decoder.pos_emb.row_embed."),
    ("image_decoder.col_embed.", "img_decoder.pos_emb.col_embed."),
    ("image_decoder.mlp.", "img_decoder.mlp."),
    ("audio_decoder.row_embed.", "aud_decoder.pos_emb.row_embed."),
    ("audio_decoder.col_embed.", "aud_decoder.pos_emb.col_embed."),
    ("audio_decoder.mlp.", "aud_decoder.mlp."),
]


def official_name(ours: str) -> str:
    for prefix, official in OURS_TO_OFFICIAL:
        if ours.startswith(prefix):
            return official + ours[len(prefix):]
    raise AssertionError(f"no official name for {ours}")


def synthetic_official_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_model(CFG, pretrained=False)
    state = {}
    for key, value in model.state_dict().items():
        value = value.clone()
        if key.endswith("running_mean"):
            value = 0.1 * torch.randn_like(value)
        elif key.endswith("running_var"):
            value = torch.empty_like(value).uniform_(0.5, 1.5)
        elif key.endswith("num_batches_tracked"):
            value = torch.tensor(1234)
        elif value.ndim == 1 and key.endswith(".weight"):           # BatchNorm / LayerNorm scale
            value = 1 + 0.1 * torch.randn_like(value)
        elif value.ndim == 1 and key.endswith(".bias"):
            value = value + 0.1 * torch.randn_like(value)
        elif key.endswith(("to_q.weight", "to_k.weight")):
            value = 6 * value        # peaked maps, as after training (random init: nearly flat)
        state[official_name(key)] = value
    return state


# ---- the official forward, functionally, on official key names ---------------------------------
def batch_norm(x, sd, prefix):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=False, eps=1e-5)


def resnet18_layer4(x, sd, net, stem):
    """torchvision ResNet-18 up to layer4; `stem` is conv1 (image) or conv1_1 (audio)."""
    x = F.relu(batch_norm(F.conv2d(x, sd[f"{net}.{stem}.weight"], stride=2, padding=3), sd, f"{net}.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for layer, stride in zip(range(1, 5), (1, 2, 2, 2)):
        for block in range(2):
            p, s = f"{net}.layer{layer}.{block}", stride if block == 0 else 1
            out = F.relu(batch_norm(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=1), sd, f"{p}.bn1"))
            out = batch_norm(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                x = batch_norm(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd, f"{p}.downsample.1")
            x = F.relu(out + x)
    return x


def official_spectrogram(wave):
    window = torch.hann_window(512)
    spec = torch.stft(wave, 512, 160, window=window, center=True, pad_mode="reflect", return_complex=True)
    return torch.log(spec.abs() ** 2 + 1e-7).div(12).unsqueeze(1)      # (B, 1, 257, 501)


def attention(q, k, gamma=1.0):
    a = torch.softmax(q @ k.transpose(1, 2) * 512 ** -0.5 * gamma, dim=1) + 1e-8
    return a / a.sum(dim=2, keepdim=True)


def official_slots(x, sd, m):
    """method.md section 3 for modality m in {img, aud}: -> slots, last queries, keys."""
    p = f"slot_attn.{m}"
    norm = lambda t, name: F.layer_norm(t, (512,), sd[f"{p}_{name}.weight"], sd[f"{p}_{name}.bias"])
    linear = lambda t, name: F.linear(t, sd[f"{p}_{name}.weight"], sd[f"{p}_{name}.bias"])
    x = norm(x, "norm_input")
    k, v = linear(x, "to_k"), linear(x, "to_v")
    s = sd["slot_attn.slots"].expand(x.shape[0], -1, -1)
    for _ in range(5):
        q = linear(norm(s, "norm_slots"), "to_q")
        u = attention(q, k) @ v
        gi = F.linear(u, sd[f"{p}_gru.weight_ih"], sd[f"{p}_gru.bias_ih"]).chunk(3, dim=-1)
        gh = F.linear(s, sd[f"{p}_gru.weight_hh"], sd[f"{p}_gru.bias_hh"]).chunk(3, dim=-1)
        r, z = torch.sigmoid(gi[0] + gh[0]), torch.sigmoid(gi[1] + gh[1])
        s = (1 - z) * torch.tanh(gi[2] + r * gh[2]) + z * s
        hidden = F.relu(F.linear(norm(s, "norm_pre_ff"), sd[f"{p}_mlp.0.weight"], sd[f"{p}_mlp.0.bias"]))
        s = s + F.linear(hidden, sd[f"{p}_mlp.2.weight"], sd[f"{p}_mlp.2.bias"])
    return s, q, k


def official_decoder(slots, sd, d, height, width):
    """Spatial broadcast: slot + (column ++ row embedding) -> MLP -> softmax-mixed features."""
    cols = sd[f"{d}.pos_emb.col_embed.weight"][:width]
    rows = sd[f"{d}.pos_emb.row_embed.weight"][:height]
    pos = torch.cat([cols[None].expand(height, -1, -1), rows[:, None].expand(-1, width, -1)], -1).flatten(0, 1)
    x = slots[:, :, None, :] + pos
    for i in (0, 2, 4):
        x = F.relu(F.linear(x, sd[f"{d}.mlp.{i}.weight"], sd[f"{d}.mlp.{i}.bias"]))
    x = F.linear(x, sd[f"{d}.mlp.6.weight"], sd[f"{d}.mlp.6.bias"])
    return (x[..., -1:].softmax(dim=1) * x[..., :-1]).sum(dim=1)


def official_forward(sd, images, wave, alpha):
    v = F.conv2d(resnet18_layer4(images, sd, "imgnet", "conv1"), sd["imgnet.proj.weight"], sd["imgnet.proj.bias"])
    v = v.flatten(2).transpose(1, 2)                                              # (B, 49, 512)
    a = F.conv2d(resnet18_layer4(official_spectrogram(wave), sd, "audnet", "conv1_1"),
                 sd["audnet.proj.0.weight"], sd["audnet.proj.0.bias"])
    a = a.amax(dim=2).transpose(1, 2)                                             # (B, 16, 512)
    slots_v, q_v, k_v = official_slots(v, sd, "img")
    slots_a, q_a, k_a = official_slots(a, sd, "aud")
    b = images.shape[0]
    aud = attention(q_a, k_v, 0.1)[:, 0].view(b, 7, 7)
    img = attention(q_v, k_v, 0.1)[:, 0].view(b, 7, 7)
    up = lambda m: F.interpolate(m[:, None], size=(224, 224), mode="bicubic", align_corners=False)[:, 0]
    norm = lambda m: (m - m.amin((1, 2), keepdim=True)) / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
    return {
        "aud": aud, "img": img, "heatmap": norm(alpha * norm(up(aud)) + (1 - alpha) * norm(up(img))),
        "image_slot": F.normalize(slots_v[:, 0], dim=-1), "audio_slot": F.normalize(slots_a[:, 0], dim=-1),
        "ia_vv": attention(q_v, k_v), "ia_aa": attention(q_a, k_a),
        "ca_va": attention(q_v, k_a), "ca_av": attention(q_a, k_v),
        "image_recon": official_decoder(slots_v, sd, "img_decoder", 7, 7),
        "audio_recon": official_decoder(slots_a, sd, "aud_decoder", 1, 16),
    }


def sample_inputs():
    g = torch.Generator().manual_seed(7)
    images = torch.randn(1, 3, 224, 224, generator=g)
    t = torch.arange(CFG.num_samples) / CFG.sample_rate
    chirp = torch.sin(2 * math.pi * (300 + 400 * t) * t) * (0.5 + 0.4 * torch.sin(2 * math.pi * 1.5 * t))
    wave = (0.3 * chirp + 0.05 * torch.randn(CFG.num_samples, generator=g))[None].float()
    return images, wave


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(state dict without prefix, path of the wrapped `module.`-prefixed file)."""
    state = synthetic_official_state()
    path = tmp_path_factory.mktemp("official") / "jsa_official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": []}]},
                "epoch": 42}, path)
    return state, path


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory):
    """Converted through the CLI: (path, captured stdout)."""
    _, path = official
    out = tmp_path_factory.mktemp("converted") / "paper-from-official.pt"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["convert-official", str(path), str(out)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue()


# ---- tests -----------------------------------------------------------------------------------
def test_synthetic_file_has_the_official_layout(official):
    state, _ = official
    assert len(state) == 307
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["audnet.conv1_1.weight"] == (64, 1, 7, 7) and "audnet.conv1.weight" not in shapes
    assert shapes["imgnet.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["imgnet.proj.weight"] == shapes["audnet.proj.0.weight"] == (512, 512, 1, 1)
    assert shapes["slot_attn.slots"] == (1, 2, 512)
    assert shapes["slot_attn.mask_token_img"] == shapes["slot_attn.mask_token_aud"] == (1, 1, 512)
    assert shapes["slot_attn.img_gru.weight_ih"] == (3 * 512, 512)
    assert shapes["slot_attn.aud_mlp.0.weight"] == (1024, 512)
    assert "img_decoder.pos_emb.row_embed.weight" in shapes and "aud_decoder.mlp.6.bias" in shapes
    assert not any(".fc." in k or k.startswith(("imgnet.fc", "audnet.fc")) for k in state)
    groups = {k.split(".")[0] for k in state}
    assert groups == {"imgnet", "audnet", "slot_attn", "img_decoder", "aud_decoder"}
    assert sum(k.startswith("slot_attn.") for k in state) == 43


def test_converted_model_equals_the_official_forward(official, converted):
    state, _ = official
    out_path, stdout = converted
    assert str(out_path) in stdout and "jsa-rt eval" in stdout          # summary + next step
    model, meta = load_checkpoint(out_path)
    assert meta["kind"] == "jsa" and meta["config"].preset == "paper"
    assert meta["extra"]["source"] == "official" and meta["extra"]["epoch"] == 42
    images, wave = sample_inputs()
    with torch.no_grad():
        expected = official_forward(state, images, wave, CFG.iqr_alpha)
        ours = model.localize(images, wave)
        ours.update({k: v for k, v in model(images, wave).items() if k.startswith(("ia_", "ca_"))})
        fwd = model(images, wave)
        ours["image_recon"] = model.image_decoder(fwd["image"].slots)
        ours["audio_recon"] = model.audio_decoder(fwd["audio"].slots)
    # the test is not vacuous: the maps are not flat (the min-max heatmap divides rounding
    # errors by their range) and the two target slots differ
    for key in ("aud", "img"):
        assert expected[key].max() - expected[key].min() > 2e-3, key
    assert (expected["image_slot"] - expected["audio_slot"]).abs().max() > 0.1
    for key, value in expected.items():
        assert ours[key].shape == value.shape, key
        err = (ours[key] - value).abs().max().item()
        assert err < 1e-5, f"{key}: max abs difference {err:.2e}"


def test_bare_state_dict_without_prefix_converts_the_same(official, converted, tmp_path):
    state, _ = official
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    report = convert_official(bare, tmp_path / "bare.pt")
    assert report["missing"] == [] and report["unexpected"] == [] and report["epoch"] is None
    a = torch.load(tmp_path / "bare.pt", weights_only=False)["state_dict"]
    b = torch.load(converted[0], weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_and_unexpected_keys_are_named(official, tmp_path, capsys):
    state, _ = official
    broken = dict(state)
    del broken["slot_attn.aud_gru.bias_hh"]
    broken["slot_attn.img_extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"model": {f"module.{k}": v for k, v in broken.items()}, "epoch": 3}, path)

    assert main(["convert-official", str(path), str(tmp_path / "strict.pt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "slots.audio.gru.bias_hh" in err and "slot_attn.img_extra_head.weight" in err
    assert "--no-strict" in err
    assert not (tmp_path / "strict.pt").exists()

    assert main(["convert-official", str(path), str(tmp_path / "loose.pt"), "--no-strict"]) == 0
    out = capsys.readouterr().out
    assert "slots.audio.gru.bias_hh" in out and "slot_attn.img_extra_head.weight" in out
    loose = torch.load(tmp_path / "loose.pt", weights_only=False)["state_dict"]
    assert torch.equal(loose["slots.audio.gru.weight_hh"], state["slot_attn.aud_gru.weight_hh"])


def test_non_jsa_files_get_a_one_line_error(tmp_path, capsys):
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    text = tmp_path / "readme.pth"
    text.write_text("not a checkpoint at all\n")
    # right names, wrong sizes: a tiny model dressed up in official names
    torch.manual_seed(0)
    tiny = {official_name(k): v for k, v in build_model("tiny", pretrained=False).state_dict().items()}
    small = tmp_path / "small.pth"
    torch.save({"model": tiny}, small)
    cases = {resnet: "slot_attn", text: "not a readable PyTorch file", small: "shape",
             tmp_path / "missing.pth": "not found"}
    for path, needle in cases.items():
        assert main(["convert-official", str(path), str(tmp_path / "out.pt")]) == 2, path
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert str(path) in err or path is small, err
        assert needle in err, err
    assert not (tmp_path / "out.pt").exists()


def test_a_jsa_rt_checkpoint_needs_no_conversion(tmp_path, capsys):
    ours = tmp_path / "tiny.pt"
    save_checkpoint(ours, build_model("tiny", pretrained=False))
    assert main(["convert-official", str(ours), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already a jsa-rt checkpoint" in err, err
    assert not (tmp_path / "out.pt").exists()
