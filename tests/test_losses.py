"""The JSA losses (method.md section 4) and EZ-VSL's loss on small hand-made cases.

Expected values are computed here with numpy from the formulas, never copied from a run.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jsa_rt.config import get_preset
from jsa_rt.model import build_model, losses
from jsa_rt.model.decoders import SpatialBroadcastDecoder


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def cross_entropy_np(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of -log softmax(row)[label]; -inf logits drop out of the sum."""
    rows = [np.logaddexp.reduce(row[np.isfinite(row)]) - row[label] for row, label in zip(logits, labels)]
    return float(np.mean(rows))


def symmetric_infonce_np(cos: np.ndarray, tau: float, masked: np.ndarray | None = None) -> float:
    logits = cos / tau
    if masked is not None:
        logits = np.where(masked, -np.inf, logits)
    labels = np.arange(len(cos))
    return cross_entropy_np(logits, labels) + cross_entropy_np(logits.T, labels)


# ---- contrastive (InfoNCE) -------------------------------------------------------------------
@pytest.mark.parametrize("tau", [1.0, 0.03])
def test_infonce_on_two_pairs_with_known_cosines(tau):
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    audio = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    cos = np.array([[0.8, 0.0], [0.6, 1.0]])                              # <p^v_i, p^a_j>
    expected = symmetric_infonce_np(cos, tau)
    # rows: CE([.8, 0], 0), CE([.6, 1], 1); columns: CE([.8, .6], 0), CE([0, 1], 1)
    if tau == 1.0:
        by_hand = 0.5 * (math.log(math.exp(0.8) + 1) - 0.8 + math.log(math.exp(0.6) + math.e) - 1.0) \
                  + 0.5 * (math.log(math.exp(0.8) + math.exp(0.6)) - 0.8 + math.log(1 + math.e) - 1.0)
        assert expected == pytest.approx(by_hand, rel=1e-12)
    # float32 log-sum-exp of logits ~27 (tau 0.03): absolute error ~1e-7
    got = losses.contrastive_loss(image, audio, tau)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the slots are L2-normalised first: scaling them changes nothing
    scaled = losses.contrastive_loss(image * 3.0, audio * 0.2, tau)
    assert scaled.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_infonce_is_symmetric_in_the_two_directions():
    g = torch.Generator().manual_seed(1)
    image, audio = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    a = losses.contrastive_loss(image, audio, 0.1)
    b = losses.contrastive_loss(audio, image, 0.1)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    pv, pa = (torch.nn.functional.normalize(x, dim=1).double().numpy() for x in (image, audio))
    assert a.item() == pytest.approx(symmetric_infonce_np(pv @ pa.T, 0.1), rel=1e-5)


# ---- k-reciprocal false negatives ------------------------------------------------------------
# Slots on the unit circle (angles in degrees). With k = 2 each sample's neighbour set is itself
# plus its nearest other sample.
#   image: 0-1 mutual, 2-3 mutual, 4 -> 3          audio: 0-1 mutual, 2 -> 3, 3-4 mutual
# j in Nv(i) and Na(i):  (0,1) (1,0) (2,3) (4,3).  Reciprocal: only 0<->1.
#   (2,3): both modalities agree 2 -> 3, but 3's audio neighbour is 4: not reciprocal.
#   (3,4): mutual in audio, but image 3 -> 2: not a neighbour in both modalities.
IMAGE_DEG = [0, 10, 100, 110, 200]
AUDIO_DEG = [0, 10, 100, 130, 135]


def constructed_batch():
    return (torch.tensor([unit(d) for d in IMAGE_DEG]), torch.tensor([unit(d) for d in AUDIO_DEG]))


def test_k_reciprocal_mask_on_a_constructed_batch():
    image, audio = constructed_batch()
    mask = losses.k_reciprocal_false_negatives(image, audio, k=2)
    expected = np.zeros((5, 5), bool)
    expected[0, 1] = expected[1, 0] = True
    assert np.array_equal(mask.numpy(), expected)


def test_k_reciprocal_mask_extremes_and_scale():
    image, audio = constructed_batch()
    assert not losses.k_reciprocal_false_negatives(image, audio, k=1).any()   # only itself
    everything = losses.k_reciprocal_false_negatives(image, audio, k=5)
    assert np.array_equal(everything.numpy(), ~np.eye(5, dtype=bool))          # never the diagonal
    assert np.array_equal(losses.k_reciprocal_false_negatives(image * 7, audio * 0.1, k=2).numpy(),
                          losses.k_reciprocal_false_negatives(image, audio, k=2).numpy())
    # k larger than the batch is clamped, not an error
    assert np.array_equal(losses.k_reciprocal_false_negatives(image, audio, k=50).numpy(),
                          everything.numpy())


def test_infonce_with_false_negatives_removed():
    image, audio = constructed_batch()
    cos = image.double().numpy() @ audio.double().numpy().T
    masked = np.zeros((5, 5), bool)
    masked[0, 1] = masked[1, 0] = True
    tau = 0.5
    expected = symmetric_infonce_np(cos, tau, masked)
    assert expected != pytest.approx(symmetric_infonce_np(cos, tau), rel=1e-3)   # masking matters
    assert losses.contrastive_loss(image, audio, tau, k=2).item() == pytest.approx(expected, rel=1e-5)
    # every negative masked: each row keeps only its positive, so the loss is exactly 0
    assert losses.contrastive_loss(image, audio, tau, k=5).item() == 0.0


def test_false_negative_mask_takes_no_gradient():
    image, audio = constructed_batch()
    image.requires_grad_(True)
    audio.requires_grad_(True)
    losses.contrastive_loss(image, audio, 0.5, k=2).backward()
    assert torch.isfinite(image.grad).all() and torch.isfinite(audio.grad).all()


# ---- attention matching, divergence, reconstruction --------------------------------------------
def test_attention_matching_is_mse_on_target_rows_with_stopgrad():
    ca_av = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]], requires_grad=True)   # (1, 2, 3)
    ia_vv = torch.tensor([[[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]]], requires_grad=True)
    ca_va = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], requires_grad=True)               # (1, 2, 2)
    ia_aa = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]], requires_grad=True)
    expected = ((0.3 ** 2 + 0.05 ** 2 + 0.25 ** 2) / 3) + ((0.5 ** 2 + 0.5 ** 2) / 2)
    loss = losses.attention_matching_loss(ca_av, ia_vv, ca_va, ia_aa)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert ia_vv.grad is None and ia_aa.grad is None                        # targets are detached
    assert ca_av.grad[0, 0].abs().sum() > 0 and ca_av.grad[0, 1].abs().sum() == 0   # slot 0 only
    assert torch.allclose(ca_av.grad[0, 0], 2 * torch.tensor([0.3, -0.05, -0.25]) / 3)


def test_slot_divergence_is_relu_of_cosine():
    slots = torch.tensor([
        [[2.0, 0.0], [0.6, 0.8]],        # cos = 0.6
        [[1.0, 0.0], [-1.0, 1.0]],       # cos = -0.707 -> ReLU -> 0
        [[0.0, 3.0], [0.0, 0.5]],        # cos = 1
    ])
    assert losses.slot_divergence_loss(slots).item() == pytest.approx((0.6 + 0.0 + 1.0) / 3, rel=1e-6)


def test_reconstruction_loss_is_mse_against_detached_tokens():
    recon = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 4.0]]], requires_grad=True)
    loss = losses.reconstruction_loss(recon, tokens)
    assert loss.item() == pytest.approx((0 + 4 + 9 + 0) / 4)
    loss.backward()
    assert tokens.grad is None and recon.grad is not None


def test_spatial_broadcast_decoder_layout_and_mixing():
    torch.manual_seed(0)
    dec = SpatialBroadcastDecoder(dim=6, hidden=8, height=2, width=3)
    pos = dec.position_embedding()
    assert pos.shape == (6, 6)
    for h in range(2):
        for w in range(3):                                  # row-major: column ++ row embedding
            expected = torch.cat([dec.col_embed.weight[w], dec.row_embed.weight[h]])
            assert torch.equal(pos[h * 3 + w], expected)
    slots = torch.randn(4, 2, 6)
    out = dec(slots)
    assert out.shape == (4, 6, 6)
    raw = dec.mlp(slots[:, :, None, :] + pos)                               # (B, S, HW, D+1)
    weights = raw[..., -1:].softmax(dim=1)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4, 6, 1))
    assert torch.allclose(out, (weights * raw[..., :-1]).sum(dim=1), atol=1e-6)


# ---- EZ-VSL ----------------------------------------------------------------------------------
def test_ezvsl_mil_loss_takes_the_max_over_image_locations():
    audio = torch.tensor([[1.0, 0.0], [0.0, 2.0]])                       # (B=2, D)
    image = torch.tensor([[[1.0, 1.0], [-1.0, 0.0]],                      # (B=2, N=2, D)
                          [[0.0, 1.0], [1.0, -1.0]]])
    s = 1 / math.sqrt(2)
    # scores[i, j] = max_n cos(audio_i, image_j,n)
    scores = np.array([[max(s, -1.0), max(0.0, s)],
                       [max(s, 0.0), max(1.0, -s)]])
    tau = 0.5
    labels = np.arange(2)
    expected = cross_entropy_np(scores / tau, labels) + cross_entropy_np(scores.T / tau, labels)
    assert losses.ezvsl_mil_loss(audio, image, tau).item() == pytest.approx(expected, rel=1e-5)


# ---- composition inside the model ------------------------------------------------------------
def test_jsa_total_loss_uses_the_official_weights_and_scaled_k():
    cfg = get_preset("tiny").with_overrides(knn_reference_batch=8)      # batch 8 -> k = knn_k
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False).train()
    images = torch.randn(8, 3, cfg.image_size, cfg.image_size)
    wave = torch.randn(8, cfg.num_samples) * 0.1
    torch.manual_seed(123)
    total, terms = model.loss(images, wave)
    assert set(terms) == {"cotr", "recon", "div", "match"}
    assert (cfg.w_recon, cfg.w_div, cfg.w_match) == (0.1, 0.1, 100.0)
    expected_total = terms["cotr"] + 0.1 * terms["recon"] + 0.1 * terms["div"] + 100.0 * terms["match"]
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)
    # same random draws (token masks, spectrogram masks) -> recompute each term from the outputs
    torch.manual_seed(123)
    out = model(images, wave)
    img, aud = out["image"], out["audio"]
    expected = {
        "cotr": losses.contrastive_loss(img.slots[:, 0], aud.slots[:, 0], cfg.tau, k=cfg.knn_k),
        "recon": losses.reconstruction_loss(model.image_decoder(img.slots), out["image_tokens"])
                 + losses.reconstruction_loss(model.audio_decoder(aud.slots), out["audio_tokens"]),
        "div": losses.slot_divergence_loss(img.slots) + losses.slot_divergence_loss(aud.slots),
        "match": losses.attention_matching_loss(out["ca_av"], out["ia_vv"], out["ca_va"], out["ia_aa"]),
    }
    # the batch does have k-reciprocal pairs, so the k the model used matters
    assert losses.k_reciprocal_false_negatives(img.slots[:, 0], aud.slots[:, 0], cfg.knn_k).any()
    assert terms["cotr"].item() != pytest.approx(
        losses.contrastive_loss(img.slots[:, 0], aud.slots[:, 0], cfg.tau, k=1).item(), rel=1e-4)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5), name
        assert torch.isfinite(terms[name])


def test_ezvsl_model_loss_is_its_mil_loss():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg, kind="ezvsl", pretrained=False).eval()
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    wave = torch.randn(3, cfg.num_samples) * 0.1
    total, terms = model.loss(images, wave)
    out = model(images, wave)
    assert set(terms) == {"mil"}
    expected = losses.ezvsl_mil_loss(out["audio_emb"], out["image_tokens"], cfg.tau)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_small_batches_keep_a_working_false_negative_mask(monkeypatch):
    """At the tiny preset's batch of 8 the scaled k would be 0; it is floored at 2 (the item and
    its nearest neighbour), never 1, which would mask nothing."""
    cfg = get_preset("tiny")
    assert cfg.knn_k * 8 // cfg.knn_reference_batch < 2
    seen = []
    real = losses.contrastive_loss

    def spy(image_slots, audio_slots, tau, k=0):
        seen.append(k)
        return real(image_slots, audio_slots, tau, k)
    monkeypatch.setattr(losses, "contrastive_loss", spy)
    model = build_model(cfg, pretrained=False).train()
    model.loss(torch.randn(8, 3, cfg.image_size, cfg.image_size), torch.randn(8, cfg.num_samples) * 0.1)
    assert seen == [2]


def test_mixed_precision_training_sees_the_fp32_features_and_maps():
    """Under autocast (bf16 on GPU; CPU autocast here) the spectrogram and the slot-attention maps
    are still computed in fp32, equal to the fp32 path, as evaluation computes them."""
    from jsa_rt.model.slot_attention import slot_attention_map
    cfg = get_preset("tiny")
    model = build_model(cfg, pretrained=False).eval()
    t = torch.arange(cfg.num_samples) / cfg.sample_rate
    wave = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 1e-3 * torch.randn(cfg.num_samples)).unsqueeze(0)
    q, k = torch.randn(2, 2, 32), torch.randn(2, 49, 32)
    plain_spec, plain_map = model.frontend(wave), slot_attention_map(q, k, 32 ** -0.5, 1e-8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed_spec, mixed_map = model.frontend(wave), slot_attention_map(q, k, 32 ** -0.5, 1e-8)
    assert mixed_spec.dtype == torch.float32 and mixed_map.dtype == torch.float32
    assert torch.equal(mixed_spec, plain_spec) and torch.equal(mixed_map, plain_map)


DDP_GRADS = """
import sys, torch, torch.distributed as dist
from jsa_rt.model import build_model
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
kind, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = build_model("tiny", kind, pretrained=False).eval()       # eval: no random masks
cfg = model.cfg
torch.manual_seed(1)
images, wave = torch.randn(8, 3, cfg.image_size, cfg.image_size), torch.randn(8, cfg.num_samples) * 0.1
rows = slice(rank * 4, rank * 4 + 4)                             # this rank's half of the batch
total, terms = model.loss(images[rows], wave[rows])
total.backward()
for p in model.parameters():                                     # what DDP does: average over ranks
    if p.grad is not None:
        dist.all_reduce(p.grad)
        p.grad /= world
if rank == 0:
    torch.save({"first": {k: v.item() for k, v in terms.items()},
                "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None}}, out)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("kind", ["jsa", "ezvsl"])
def test_ddp_contrastive_terms_see_the_whole_batch(kind, tmp_path):
    """Two gloo processes with 4 samples each take the same step as one process with all 8:
    the contrastive term is computed over the global batch (as the official DataParallel code
    does), not over each rank's quarter of the negatives."""
    import os
    import subprocess
    import sys
    script, out = tmp_path / "ddp.py", tmp_path / "grads.pt"
    script.write_text(DDP_GRADS)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29541" if kind == "jsa" else "29542", str(script), kind, str(out)],
                          capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    model = build_model("tiny", kind, pretrained=False).eval()
    cfg = model.cfg
    torch.manual_seed(1)
    images, wave = torch.randn(8, 3, cfg.image_size, cfg.image_size), torch.randn(8, cfg.num_samples) * 0.1
    total, terms = model.loss(images, wave)
    total.backward()
    contrastive = "cotr" if kind == "jsa" else "mil"
    assert ddp["first"][contrastive] == pytest.approx(terms[contrastive].item(), rel=1e-5)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ddp["grads"].keys()
    for name, g in grads.items():      # equal up to float32 summation order
        assert (ddp["grads"][name] - g).abs().max() <= 1e-3 * g.abs().max() + 1e-9, name


GATHER_UNEVEN = """
import sys, torch, torch.distributed as dist
from jsa_rt.model.losses import whole_batch
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
everything, weights = torch.randn(8, 3, 2), torch.randn(8, 3, 2)
rows = slice(0, 3) if rank == 0 else slice(3, 8)                  # 3 and 5 rows: a batch lost items
mine = everything[rows].clone().requires_grad_()
(gathered,) = whole_batch(mine.transpose(1, 2).transpose(1, 2))    # a non-contiguous path, as in a model
(gathered * weights).sum().backward()
ok = torch.equal(gathered, everything) and torch.allclose(mine.grad, 2 * weights[rows])   # both ranks' losses
print("OK" if ok else "BAD", rank)
dist.destroy_process_group()
"""


def test_whole_batch_gathers_uneven_ranks_with_their_gradients(tmp_path):
    import os
    import subprocess
    import sys
    script = tmp_path / "gather.py"
    script.write_text(GATHER_UNEVEN)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29543", str(script)],
                          capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("OK") == 2 and "BAD" not in done.stdout, done.stdout
