"""The "listen" variant of JSA (model/jsa.py): its localisation loss on hand-made cases, the
matching modes, the config and checkpoint round trip, the train CLI flags, ONNX parity, and the
paper variant left unchanged."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from jsa_rt.config import ModelConfig, get_preset, with_variant
from jsa_rt.errors import InputError
from jsa_rt.model import build_model, losses
from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint
from jsa_rt.model.slot_attention import slot_attention_map


def cross_entropy_np(logits: np.ndarray) -> float:
    """Mean over rows of -log softmax(row)[diagonal]; -inf logits drop out."""
    rows = [np.logaddexp.reduce(row[np.isfinite(row)]) - row[i] for i, row in enumerate(logits)]
    return float(np.mean(rows))


def loc_loss_loop(q: np.ndarray, k: np.ndarray, scale: float, tau: float) -> float:
    """The definition, one pair at a time: s_ij = max_n scale * (q_i0 - q_i1) . k_jn."""
    b = len(q)
    s = np.empty((b, b))
    for i in range(b):
        for j in range(b):
            s[i, j] = max(scale * float(np.dot(q[i, 0] - q[i, 1], k[j, n])) for n in range(k.shape[1])) / tau
    return cross_entropy_np(s) + cross_entropy_np(s.T)


# ---- the loc loss ----------------------------------------------------------------------------
def test_loc_loss_on_a_hand_made_2x2_batch():
    # audio 0's target-minus-off-target direction is +x, audio 1's is +y (scale 1, tau 1)
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]],
                      [[0.0, 2.0], [0.0, 1.0]]])                  # margins (1, 0) and (0, 1)
    k = torch.tensor([[[3.0, 0.0], [0.0, -1.0]],                  # image 0: an x-object and a -y token
                      [[1.0, 0.0], [0.0, 2.0]]])                  # image 1: weak x, strong y
    # s[i, j] = max_n margin_i . k_jn
    s = np.array([[max(3.0, 0.0), max(1.0, 0.0)],
                  [max(0.0, -1.0), max(0.0, 2.0)]])
    assert s.tolist() == [[3.0, 1.0], [0.0, 2.0]]
    by_hand = (math.log(math.exp(3) + math.exp(1)) - 3 + math.log(1 + math.exp(2)) - 2) / 2 \
        + (math.log(math.exp(3) + 1) - 3 + math.log(math.exp(1) + math.exp(2)) - 2) / 2
    got = losses.localisation_mil_loss(q, k, scale=1.0, tau=1.0)
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    # the temperature divides the scores, the scale multiplies them
    assert losses.localisation_mil_loss(q, k, scale=2.0, tau=0.5).item() == pytest.approx(
        loc_loss_loop(q.numpy(), k.numpy(), 2.0, 0.5), rel=1e-5, abs=1e-7)


def test_loc_loss_equals_the_loop_and_its_margin_is_the_maps_logit():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(4, 2, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    scale = 5 ** -0.5
    got = losses.localisation_mil_loss(q, k, scale, tau=0.7)
    assert got.item() == pytest.approx(loc_loss_loop(q.numpy(), k.numpy(), scale, 0.7), rel=1e-5)
    # the margin is the logit of the localisation map (softmax over 2 slots = sigmoid), so the
    # max over tokens is the map's peak
    margin = torch.einsum("bd,bnd->bn", (q[:, 0] - q[:, 1]) * scale, k)
    target_share = torch.softmax(torch.matmul(q, k.transpose(1, 2)) * scale, dim=1)[:, 0]
    assert torch.allclose(torch.sigmoid(margin), target_share, atol=1e-6)
    assert torch.equal(margin.argmax(1), slot_attention_map(q, k, scale, 1e-8)[:, 0].argmax(1))


def test_loc_loss_is_fp32_under_autocast():
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(4, 2, 8, generator=g), torch.randn(4, 6, 8, generator=g)
    plain = losses.localisation_mil_loss(q, k, 0.3, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = losses.localisation_mil_loss(q, k, 0.3, 0.5)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


# ---- attention matching modes ----------------------------------------------------------------
def test_matching_modes():
    g = torch.Generator().manual_seed(6)
    maps = [torch.rand(3, 2, n, generator=g).requires_grad_() for n in (9, 9, 4, 4)]
    ca_av, ia_vv, ca_va, ia_aa = maps
    image_side = ((ca_av[:, 0] - ia_vv[:, 0]) ** 2).mean()
    audio_side = ((ca_va[:, 0] - ia_aa[:, 0]) ** 2).mean()
    both = losses.attention_matching_loss(*maps)
    assert torch.equal(both, losses.attention_matching_loss(*maps, "both"))
    assert both.item() == pytest.approx((image_side + audio_side).item(), rel=1e-6)
    assert losses.attention_matching_loss(*maps, "audio_only").item() == pytest.approx(audio_side.item(), rel=1e-6)
    assert losses.attention_matching_loss(*maps, "off").item() == 0.0
    # reverse: same value as both, but the image's own map moves, the localisation map does not
    reverse = losses.attention_matching_loss(*maps, "reverse")
    assert reverse.item() == pytest.approx(both.item(), rel=1e-6)
    grads = torch.autograd.grad(reverse, [ca_av, ia_vv], allow_unused=True)
    assert grads[0] is None and grads[1].abs().sum() > 0
    grads = torch.autograd.grad(losses.attention_matching_loss(*maps, "both"), [ca_av, ia_vv], allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[1] is None
    with pytest.raises(ValueError, match="matching mode"):
        losses.attention_matching_loss(*maps, "sideways")


# ---- config and checkpoint -------------------------------------------------------------------
def test_variant_config_defaults_and_validation():
    tiny = get_preset("tiny")
    assert (tiny.variant, tiny.match, tiny.iqr_alpha) == ("paper", "both", 0.4)
    listen = with_variant(tiny, "listen")
    assert (listen.variant, listen.match, listen.iqr_alpha) == ("listen", "audio_only", 1.0)
    tuned = listen.with_overrides(iqr_alpha=0.8)
    assert with_variant(tuned, "listen") is tuned                          # already listen: settings kept
    assert with_variant(listen, "paper") == tiny
    with pytest.raises(ValueError, match="unknown model variant 'loud'"):
        tiny.with_overrides(variant="loud")
    with pytest.raises(ValueError, match="unknown model variant"):
        with_variant(tiny, "loud")
    with pytest.raises(ValueError, match="matching mode 'most'"):
        ModelConfig.from_dict({**tiny.to_dict(), "match": "most"})
    # a config stored before the variants existed is the paper variant
    old = {k: v for k, v in tiny.to_dict().items() if k not in ("variant", "match", "w_loc", "tau_loc")}
    assert ModelConfig.from_dict(old) == tiny


def test_variant_round_trips_through_a_checkpoint(tmp_path):
    cfg = with_variant(get_preset("tiny"), "listen").with_overrides(match="reverse", tau_loc=0.5, w_loc=2.0)
    model = build_model(cfg, pretrained=False)
    save_checkpoint(tmp_path / "listen.pt", model)
    loaded, meta = load_checkpoint(tmp_path / "listen.pt")
    assert loaded.cfg == meta["config"] == cfg
    assert (loaded.cfg.variant, loaded.cfg.match, loaded.cfg.iqr_alpha) == ("listen", "reverse", 1.0)
    # an old checkpoint (config without the new keys) loads as the paper variant
    ckpt = torch.load(tmp_path / "listen.pt", weights_only=True)
    for key in ("variant", "match", "w_loc", "tau_loc"):
        del ckpt["config"][key]
    ckpt["config"]["iqr_alpha"] = 0.4
    torch.save(ckpt, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    assert old.cfg == get_preset("tiny")


# ---- the model's loss ------------------------------------------------------------------------
def tiny_batch(cfg, batch=4):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g),
            torch.randn(batch, cfg.num_samples, generator=g) * 0.1)


def test_paper_variant_loss_is_unchanged(monkeypatch):
    """The same numbers as before the variants existed (recorded on the tiny preset, seed 0),
    and the loc term is never computed."""
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).train()
    images, wave = tiny_batch(cfg)
    monkeypatch.setattr(losses, "localisation_mil_loss", lambda *a, **k: pytest.fail("loc computed"))
    torch.manual_seed(2)
    total, terms = model.loss(images, wave)
    assert set(terms) == {"cotr", "recon", "div", "match"}
    recorded = {"cotr": 2.9263033866882324, "recon": 1.1947662830352783, "div": 1.7913762331008911,
                "match": 0.0001508865098003298}
    for name, value in recorded.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-5), name
    assert total.item() == pytest.approx(3.2400062084198, rel=1e-5)


def test_listen_loss_terms_and_gradient_to_the_audio_encoder():
    cfg = with_variant(get_preset("tiny"), "listen")
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).train()
    images, wave = tiny_batch(cfg)
    torch.manual_seed(2)
    total, terms = model.loss(images, wave)
    assert set(terms) == {"cotr", "recon", "div", "match", "loc"}
    torch.manual_seed(2)
    out = model(images, wave)                                      # same random draws
    expected_loc = losses.localisation_mil_loss(out["audio"].query, out["image"].keys, cfg.dim ** -0.5, cfg.tau_loc)
    assert terms["loc"].item() == pytest.approx(expected_loc.item(), rel=1e-5)
    expected_match = losses.attention_matching_loss(out["ca_av"], out["ia_vv"], out["ca_va"], out["ia_aa"], "audio_only")
    assert terms["match"].item() == pytest.approx(expected_match.item(), rel=1e-5)
    assert total.item() == pytest.approx((terms["cotr"] + 0.1 * terms["recon"] + 0.1 * terms["div"]
                                          + 100.0 * terms["match"] + cfg.w_loc * terms["loc"]).item(), rel=1e-6)
    # the loc term alone trains the audio encoder (and the image encoder)
    audio_params = [p for p in model.audio_encoder.parameters() if p.requires_grad]
    image_params = [p for p in model.image_encoder.parameters() if p.requires_grad]
    grads = torch.autograd.grad(terms["loc"], audio_params + image_params, retain_graph=True, allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads[:len(audio_params)]) > 0
    assert sum(g.abs().sum() for g in grads[len(audio_params):]) > 0
    total.backward()


def test_listen_matching_does_not_pull_the_localisation_map(monkeypatch):
    cfg = with_variant(get_preset("tiny"), "listen")
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).train()
    images, wave = tiny_batch(cfg)
    seen = {}
    real = losses.attention_matching_loss

    def spy(ca_av, ia_vv, ca_va, ia_aa, mode="both"):
        seen["mode"] = mode
        value = real(ca_av, ia_vv, ca_va, ia_aa, mode)
        seen["grad"] = torch.autograd.grad(value, ca_av, retain_graph=True, allow_unused=True)[0]
        return value
    monkeypatch.setattr(losses, "attention_matching_loss", spy)
    model.loss(images, wave)
    assert seen["mode"] == "audio_only" and seen["grad"] is None


# ---- train CLI -------------------------------------------------------------------------------
def parse(*argv):
    from jsa_rt.train import trainer
    parser = argparse.ArgumentParser()
    trainer.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "unused", *argv])
    args.model = args.model or "jsa"
    return trainer.resolve_configs(args)[0]


def test_train_cli_variant_flags(tmp_path):
    assert parse("--preset", "tiny") == get_preset("tiny")
    cfg = parse("--preset", "tiny", "--variant", "listen")
    assert (cfg.variant, cfg.match, cfg.iqr_alpha) == ("listen", "audio_only", 1.0)
    cfg = parse("--preset", "tiny", "--variant", "listen", "--match", "reverse")
    assert (cfg.variant, cfg.match) == ("listen", "reverse")
    assert parse("--preset", "tiny", "--match", "off").match == "off"
    # JSON settings go on top of the variant's defaults; the flags on top of both
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"variant": "listen", "iqr_alpha": 0.7, "tau_loc": 0.1}}))
    cfg = parse("--preset", "tiny", "--config", str(config))
    assert (cfg.variant, cfg.match, cfg.iqr_alpha, cfg.tau_loc) == ("listen", "audio_only", 0.7, 0.1)
    assert parse("--preset", "tiny", "--config", str(config), "--match", "both").match == "both"
    config.write_text(json.dumps({"model": {"variant": "loud"}}))
    with pytest.raises(InputError, match="unknown model variant"):
        parse("--preset", "tiny", "--config", str(config))
    with pytest.raises(InputError, match="jsa only"):
        parse("--preset", "tiny", "--model", "ezvsl", "--variant", "listen")
    with pytest.raises(SystemExit):
        parse("--preset", "tiny", "--variant", "loud")


def test_resume_keeps_the_runs_variant(tmp_path):
    stored = with_variant(get_preset("tiny"), "listen").with_overrides(match="reverse", iqr_alpha=0.9)
    torch.save({"config": stored.to_dict()}, tmp_path / "last.pt")
    out = ("--preset", "tiny", "--out", str(tmp_path))
    assert parse(*out, "--resume") == stored
    assert parse(*out) == get_preset("tiny")                       # a new run: the preset's
    assert parse(*out, "--resume", "--variant", "paper").variant == "paper"     # explicit wins


# ---- export ----------------------------------------------------------------------------------
def test_listen_model_exports_to_onnx_and_matches_torch(tmp_path):
    from engine_helpers import contrast_model
    from jsa_rt.export import onnx_export as oe
    from jsa_rt.model.wrappers import MAP_OUTPUTS, RawLocalizer
    from jsa_rt.runtime.ort_backend import OrtBackend, run_onnx
    torch.set_num_threads(2)
    model = contrast_model("tiny")
    paper_model = contrast_model("tiny")
    model.cfg = with_variant(model.cfg, "listen")
    path = oe.export_all(model, tmp_path / "listen.onnx", graphs=("full",), model_name="listen",
                         log=lambda *_: None)["full"]
    backend = OrtBackend(path, device="cpu")
    assert (backend.config.variant, backend.config.iqr_alpha) == ("listen", 1.0)
    feeds = oe.example_inputs(model.cfg)
    with torch.no_grad():
        ref = RawLocalizer(model)(torch.from_numpy(feeds["frame"]), torch.from_numpy(feeds["wave"]))
        paper = RawLocalizer(paper_model)(torch.from_numpy(feeds["frame"]), torch.from_numpy(feeds["wave"]))
    got = run_onnx(path, feeds)
    for name, expected in zip(MAP_OUTPUTS, ref):
        np.testing.assert_allclose(got[name], expected.numpy(), atol=1e-4, err_msg=name)
    # the heatmap is the AUD map alone (IQR weight 1): different from the paper model's
    heatmap = dict(zip(MAP_OUTPUTS, ref))["heatmap"]
    assert not torch.allclose(heatmap, dict(zip(MAP_OUTPUTS, paper))["heatmap"], atol=1e-3)


# ---- hard negatives from the same frame (`frame` term, frames given to `loc`) ---------------------
def two_sounds_one_frame(same_place: bool):
    """Items 0 and 1: one frame (an x-object at token 0, a y-object at token 1) with two
    soundtracks; item 2: another frame with one soundtrack. Margins: sound 0 +x, sound 1 +y
    (or +x too when `same_place`), sound 2 +x."""
    q = torch.zeros(3, 2, 2)
    q[0, 0] = torch.tensor([1.0, 0.0])
    q[1, 0] = torch.tensor([1.0, 0.0]) if same_place else torch.tensor([0.0, 1.0])
    q[2, 0] = torch.tensor([1.0, 0.0])
    frame = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    k = torch.stack([frame, frame, torch.tensor([[2.0, 0.0], [0.0, 0.0]])])
    return q, k, torch.tensor([0, 0, -1])


def test_frame_loss_on_hand_made_frames():
    q, k, frames = two_sounds_one_frame(same_place=False)
    # each sound owns its object's token: at token 0 sound 0 scores 2 against sound 1's 0
    by_hand = math.log(1 + math.exp(-2))
    assert losses.same_frame_loss(q, k, 1.0, 1.0, frames).item() == pytest.approx(by_hand, rel=1e-6)
    # a map that does not depend on the sound owns nothing: log(number of soundtracks)
    q_blind, _, _ = two_sounds_one_frame(same_place=True)
    assert losses.same_frame_loss(q_blind, k, 1.0, 1.0, frames).item() == pytest.approx(math.log(2), rel=1e-6)
    # the temperature divides the margins
    assert losses.same_frame_loss(q, k, 1.0, 0.5, frames).item() == pytest.approx(math.log(1 + math.exp(-4)), rel=1e-5)


def test_frame_loss_without_a_shared_frame_is_zero_and_keeps_the_graph():
    q, k, _ = two_sounds_one_frame(same_place=False)
    q.requires_grad_(True)
    loss = losses.same_frame_loss(q, k, 1.0, 1.0, torch.tensor([0, 1, -1]))
    assert loss.item() == 0.0
    loss.backward()
    assert q.grad is not None


def test_own_loss_on_hand_made_frames():
    q, k, frames = two_sounds_one_frame(same_place=False)
    # each sound's map on the frame is softmax([2, 0]) over the two tokens; it owns its own
    # token with share sigmoid(2) and the other's with sigmoid(-2)
    p = 1 / (1 + math.exp(-2))
    by_hand = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert losses.peak_ownership_loss(q, k, 1.0, 1.0, frames).item() == pytest.approx(by_hand, rel=1e-6)
    q_blind, _, _ = two_sounds_one_frame(same_place=True)
    assert losses.peak_ownership_loss(q_blind, k, 1.0, 1.0, frames).item() == pytest.approx(math.log(2), rel=1e-6)
    loss = losses.peak_ownership_loss(q, k, 1.0, 1.0, torch.tensor([0, 1, -1]))
    assert loss.item() == 0.0


def test_own_loss_sees_a_shared_saliency_that_the_frame_loss_cannot():
    """Both sounds peak on a salient third token (a query part every sound shares), so the peak
    does not follow the sound. `frame` scores this like the clean frame (the shared part cancels
    in the softmax over sounds); `own` is near log 2, and its gradient shrinks the shared part."""
    frame = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    k = frame.expand(2, 3, 3)
    frames = torch.tensor([0, 0])

    def queries(shared: float):
        q = torch.zeros(2, 2, 3)
        q[0, 0] = torch.tensor([1.0, 0.0, shared])
        q[1, 0] = torch.tensor([0.0, 1.0, shared])
        return q

    clean, salient = queries(0.0), queries(3.0).requires_grad_(True)
    assert losses.same_frame_loss(salient, k, 1.0, 1.0, frames).item() == pytest.approx(
        losses.same_frame_loss(clean, k, 1.0, 1.0, frames).item(), rel=1e-6)
    own_salient = losses.peak_ownership_loss(salient, k, 1.0, 1.0, frames)
    assert own_salient.item() > 0.65 > 0.45 > losses.peak_ownership_loss(clean, k, 1.0, 1.0, frames).item()
    own_salient.backward()
    assert (salient.grad[:, 0, 2] > 0).all()          # descent lowers the shared component


@pytest.mark.parametrize("term", [losses.same_frame_loss, losses.peak_ownership_loss])
def test_frame_terms_have_finite_gradients_beside_items_without_a_shared_frame(term):
    """An item alone in its frame has no share (a log of nothing); its row must not turn the
    whole gradient into NaN (the first training step of a run with `own` did)."""
    torch.manual_seed(0)
    q = torch.randn(6, 2, 4, requires_grad=True)
    term(q, torch.randn(6, 5, 4), 1.0, 1.0, torch.tensor([0, 0, -1, 1, 1, 2])).backward()
    assert torch.isfinite(q.grad).all() and q.grad[[0, 1, 3, 4]].abs().sum() > 0
    assert q.grad[[2, 5]].abs().sum() == 0


def test_loc_loss_does_not_use_a_frames_other_soundtrack_as_a_negative():
    q, k, frames = two_sounds_one_frame(same_place=False)
    qn, kn = q.numpy(), k.numpy()
    s = np.array([[max(float(np.dot(qn[i, 0], kn[j, n])) for n in range(2)) for j in range(3)] for i in range(3)])
    masked = s.copy()
    masked[0, 1] = masked[1, 0] = -np.inf
    got = losses.localisation_mil_loss(q, k, 1.0, 1.0, frames).item()
    assert got == pytest.approx(cross_entropy_np(masked) + cross_entropy_np(masked.T), rel=1e-6)
    assert got < losses.localisation_mil_loss(q, k, 1.0, 1.0).item()
    # EZ-VSL's loss leaves them out the same way
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert losses.ezvsl_mil_loss(a, k, 1.0, frames).item() < losses.ezvsl_mil_loss(a, k, 1.0).item()


def test_listen_model_adds_the_frame_terms_only_with_their_weights_and_frames():
    cfg = with_variant(get_preset("tiny"), "listen").with_overrides(w_frame=0.5, w_own=0.25)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).train()
    images, wave = tiny_batch(cfg)
    torch.manual_seed(2)
    total, terms = model.loss(images, wave, torch.tensor([3, 3, -1, -1]))
    assert set(terms) == {"cotr", "recon", "div", "match", "loc", "frame", "own"}
    assert terms["frame"].item() > 0 and terms["own"].item() > 0
    assert total.item() == pytest.approx((terms["cotr"] + 0.1 * terms["recon"] + 0.1 * terms["div"]
                                          + 100.0 * terms["match"] + terms["loc"] + 0.5 * terms["frame"]
                                          + 0.25 * terms["own"]).item(), rel=1e-6)
    torch.manual_seed(2)
    assert not {"frame", "own"} & set(model.loss(images, wave)[1])
    cfg_frame_only = cfg.with_overrides(w_own=0.0)
    torch.manual_seed(0)
    terms = build_model(cfg_frame_only, pretrained=False).train().loss(images, wave, torch.tensor([3, 3, -1, -1]))[1]
    assert "frame" in terms and "own" not in terms
    for name in ("w_frame", "w_own"):
        with pytest.raises(ValueError, match=name):
            ModelConfig.from_dict(cfg.to_dict() | {name: -1.0})
