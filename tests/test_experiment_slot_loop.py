"""EXPERIMENT kernels/experiments/slot_loop.py (not part of the product, not on jsa_rt's import
path): the persistent one-launch slot loop against the float64 PyTorch reference.

The module is loaded from its file. Runs on CPU under the Triton interpreter by default, compiled
with JSA_KERNELS_DEVICE=cuda (tools/gpu_checks.sh). Outputs and workspaces are allocated
NaN-filled (`poisoned`), so an element the kernel forgets to write fails the comparison.
"""
import importlib.util
import sys
from pathlib import Path

from kernel_helpers import DEVICE, poison_empty, randn, rel_err, skip_unless_runnable

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
EXPERIMENT = Path(__file__).resolve().parents[1] / "kernels" / "experiments" / "slot_loop.py"


def load_experiment(path: Path):
    spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


slot_loop = load_experiment(EXPERIMENT)
from jsa_rt.kernels import reference  # noqa: E402

skip_unless_runnable(slot_loop.slot_loop_kernel)


@pytest.fixture
def poisoned(monkeypatch):
    poison_empty(monkeypatch)
    slot_loop._WORKSPACES.clear()
    yield
    slot_loop._WORKSPACES.clear()


# ---- whole slot loop ----------------------------------------------------------------------------
LOOP_CASES = [  # B, N, S, D, H, iters, mode, token dtype, per-batch slots0
    (2, 49, 2, 32, 64, 3, "persistent", torch.float32, False),
    (1, 16, 3, 64, 128, 5, "phased", torch.float32, False),
    (3, 1, 7, 32, 64, 2, "phased", torch.float16, True),
    (2, 196, 2, 16, 32, 2, "persistent", torch.bfloat16, False),
]


@pytest.mark.parametrize("B,N,S,D,H,iters,mode,dtype,per_batch", LOOP_CASES)
def test_slot_iterations_match_float64_reference(poisoned, B, N, S, D, H, iters, mode, dtype, per_batch):
    params = reference.random_params(D, H, device=DEVICE, generator=torch.Generator().manual_seed(B * N))
    x = randn(B, N, D, dtype=dtype, scale=2.0)
    slots0 = randn(*((B, S, D) if per_batch else (S, D)))
    got = slot_loop.slot_iterations(x, slots0, params, iters, D ** -0.5, 1e-8, backend="triton", mode=mode)
    want = reference.slot_iterations(x.double(), slots0.double(), {k: v.double() for k, v in params.items()},
                                     iters, D ** -0.5, 1e-8)
    names = ("slots", "q_last", "k", "attn_last")
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        assert rel_err(g, w) < 1e-5, name       # fp32 inside whatever the token dtype


def test_slot_iterations_repeat_calls_and_param_update():
    # the persistent kernel resets its barrier counter; a parameter update must repack the cache
    params = reference.random_params(32, 64, device=DEVICE, generator=torch.Generator().manual_seed(0))
    x, slots0 = randn(2, 16, 32, seed=1), randn(2, 32, seed=2)
    first = slot_loop.slot_iterations(x, slots0, params, 3, 32 ** -0.5, 1e-8, backend="triton")[0].clone()
    again = slot_loop.slot_iterations(x, slots0, params, 3, 32 ** -0.5, 1e-8, backend="triton")[0]
    assert rel_err(again, first) < 1e-6
    with torch.no_grad():
        params["mlp.2.bias"].add_(1.0)
    moved = slot_loop.slot_iterations(x, slots0, params, 3, 32 ** -0.5, 1e-8, backend="triton")[0]
    want = reference.slot_iterations(x, slots0, params, 3, 32 ** -0.5, 1e-8)[0]
    assert rel_err(moved, want) < 1e-5 and rel_err(moved, first) > 1e-3


def test_slot_iterations_new_params_never_hit_a_stale_cache():
    # regression (seen on the H100): a freed parameter's memory reused by a new tensor with the
    # same version counter must not return the old packed weights
    x, slots0 = randn(1, 16, 32, seed=1), randn(2, 32, seed=2)
    for seed in range(3):
        params = reference.random_params(32, 64, device=DEVICE, generator=torch.Generator().manual_seed(seed))
        got = slot_loop.slot_iterations(x, slots0, params, 2, 32 ** -0.5, 1e-8, backend="triton")[0]
        assert rel_err(got, reference.slot_iterations(x, slots0, params, 2, 32 ** -0.5, 1e-8)[0]) < 1e-5
        del params


def test_slot_iterations_gradients_match_reference():
    D, H = 16, 32
    params = reference.random_params(D, H, device=DEVICE, generator=torch.Generator().manual_seed(3))
    x, slots0 = randn(2, 16, D, seed=1), randn(2, D, seed=2)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    twins = {k: v.clone().requires_grad_() for k, v in params.items()}
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    weights = [randn(2, 2, D, seed=5), randn(2, 2, 16, seed=6)]
    outs = slot_loop.slot_iterations(xs[0], slots0, leaves, 2, D ** -0.5, 1e-8, backend="triton")
    ref = reference.slot_iterations(xs[1], slots0, twins, 2, D ** -0.5, 1e-8)
    ((outs[0] * weights[0]).sum() + (outs[3] * weights[1]).sum()).backward()
    ((ref[0] * weights[0]).sum() + (ref[3] * weights[1]).sum()).backward()
    assert rel_err(xs[0].grad, xs[1].grad) < 1e-4
    for name in ("gru.weight_hh", "to_q.weight", "mlp.0.weight", "norm_input.weight"):
        assert rel_err(leaves[name].grad, twins[name].grad) < 1e-4, name
