"""Benchmark the EXPERIMENT slot_loop.py (the whole slot loop of one modality in one persistent
launch) against eager PyTorch and its CUDA-graph replay, on the module tools/bench_kernels.py
times; plus its numerics against a float64 reference. Writes benchmarks/kernels_slot_loop_<card>.json.

    python kernels/experiments/bench_slot_loop.py               # paper + edge, batch 1 and 16, both modes
    python kernels/experiments/bench_slot_loop.py --smoke       # one persistent launch vs the reference
    python kernels/experiments/bench_slot_loop.py --dry-run     # CPU + interpreter: checks this script only
"""
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))                  # slot_loop.py beside this file
spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "tools" / "bench_kernels.py")
bench = importlib.util.module_from_spec(spec)  # also puts the checkout's jsa_rt on the path
spec.loader.exec_module(bench)

import torch  # noqa: E402

import slot_loop  # noqa: E402
from jsa_rt.config import get_preset  # noqa: E402
from jsa_rt.kernels import reference  # noqa: E402


class LoopSlots(bench.JointSlots):
    """The benchmark's module, with one more way to run it: kernels="triton-loop <mode>"."""

    def forward(self, v_tokens, a_tokens, kernels="torch"):
        if not kernels.startswith("triton-loop"):
            return super().forward(v_tokens, a_tokens, kernels)
        c, mode = self.cfg, kernels.split()[1]
        img, aud = (slot_loop.slot_iterations(x, self.slots0, m.params(), c.iterations, c.dim ** -0.5,
                                              c.attn_eps, backend="triton", mode=mode)
                    for x, m in ((v_tokens, self.img), (a_tokens, self.aud)))
        return self.outputs(img, aud, "triton")


def methods(modes) -> list:
    loops = [(f"triton-loop {mode}{graph}", f"triton-loop {mode}", bool(graph))
             for mode in modes for graph in ("", "+cudagraph")]
    return bench.METHODS[:2] + loops            # eager and its graph replay: the speed-ups' baselines


def loop_numerics(log, preset="paper") -> dict:
    """fp32/fp16/bf16 tokens (fp32 inside) vs float64 of the same rounded inputs."""
    out = {}
    torch.manual_seed(1)
    cfg = get_preset(preset)
    D, N, S = cfg.dim, cfg.image_tokens, cfg.num_slots
    params = reference.random_params(D, cfg.mlp_hidden, device=bench.DEVICE)
    p64 = {k: v.double() for k, v in params.items()}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        x = torch.randn(4, N, D, device=bench.DEVICE).to(dtype)
        s0 = torch.randn(S, D, device=bench.DEVICE)
        got = slot_loop.slot_iterations(x, s0, params, cfg.iterations, D ** -0.5, cfg.attn_eps, backend="triton")
        want = reference.slot_iterations(x.double(), s0.double(), p64, cfg.iterations, D ** -0.5, cfg.attn_eps)
        out[name] = {"loop_slots": bench.rel_error(got[0], want[0]), "loop_attn": bench.rel_error(got[3], want[3])}
        log({"numerics": name, **out[name]})
    return out


def smoke() -> int:
    """One persistent-kernel call at the paper size vs the reference: exit 0 when it agrees."""
    cfg = get_preset("paper")
    params = reference.random_params(cfg.dim, cfg.mlp_hidden, device="cuda")
    x, s0 = torch.randn(1, 49, cfg.dim, device="cuda"), torch.randn(2, cfg.dim, device="cuda")
    t0 = time.perf_counter()
    got = slot_loop.slot_iterations(x, s0, params, cfg.iterations, cfg.dim ** -0.5, cfg.attn_eps, backend="triton")
    torch.cuda.synchronize()
    want = reference.slot_iterations(x.double(), s0.double(), {k: v.double() for k, v in params.items()},
                                     cfg.iterations, cfg.dim ** -0.5, cfg.attn_eps)
    err = max(bench.rel_error(g, w) for g, w in zip(got, want))
    print(f"smoke: persistent slot loop, first call {time.perf_counter() - t0:.1f} s, max rel err {err:.2e}")
    return 0 if err < 1e-5 else 1


def main(argv=None) -> int:
    ap = bench.parser(__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["persistent", "phased"], choices=["persistent", "phased"])
    ap.add_argument("--smoke", action="store_true", help=smoke.__doc__)
    args = ap.parse_args(argv)
    args.no_compile = True                      # torch.compile is timed by tools/bench_kernels.py
    if not bench.ready(args, "bench_slot_loop"):
        return 2
    if args.smoke:
        return smoke()
    return bench.run(args, "kernels_slot_loop", "the slot-loop experiment (kernels/experiments/slot_loop.py): "
                     "both modalities, LN_in + K/V + T iterations + cross maps", methods(args.modes), LoopSlots,
                     loop_numerics)


if __name__ == "__main__":
    sys.exit(main())
