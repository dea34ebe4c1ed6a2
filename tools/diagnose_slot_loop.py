"""Throwaway GPU diagnostic: which factor breaks the failing loop case, and where the time goes."""
import os, sys, time
from pathlib import Path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
import torch
import jsa_rt.kernels as K
from jsa_rt.kernels import reference, slot_loop

def case(B, N, S, D, H, iters, mode, dtype, per_batch):
    torch.manual_seed(0)
    p = reference.random_params(D, H, device="cuda")
    x = (torch.randn(B, N, D, device="cuda") * 2).to(dtype)
    s0 = torch.randn(*((B, S, D) if per_batch else (S, D)), device="cuda")
    got = K.slot_iterations(x, s0, p, iters, D ** -0.5, 1e-8, backend="triton", mode=mode)
    want = reference.slot_iterations(x.double(), s0.double(), {k: v.double() for k, v in p.items()}, iters, D ** -0.5, 1e-8)
    errs = [((g.double() - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)]
    print(f"B{B} N{N} S{S} D{D} it{iters} {mode} {dtype} per_batch={per_batch}: slots/q/k/attn " + " ".join(f"{e:.1e}" for e in errs), flush=True)

F = dict(B=3, N=1, S=7, D=32, H=64, iters=2, mode="phased", dtype=torch.float16, per_batch=True)
for change in [{}, {"mode": "persistent"}, {"dtype": torch.float32}, {"per_batch": False}, {"S": 2}, {"N": 16},
               {"B": 1}, {"B": 2}, {"S": 9}, {"iters": 1}]:
    try:
        case(**{**F, **change})
    except Exception as e:
        print(change, "ERROR", e)

p = reference.random_params(512, 1024, device="cuda")
x, s0 = torch.randn(1, 49, 512, device="cuda"), torch.randn(2, 512, device="cuda")
def timed(iters, mode):
    fn = lambda: K.slot_iterations(x, s0, p, iters, 512 ** -0.5, 1e-8, backend="triton", mode=mode)
    for _ in range(3): fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): fn()
    g.replay(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50): g.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / 50 * 1e6
for progs in ["8", "16", "32", "64", "132"]:
    os.environ["JSA_SLOT_LOOP_PROGRAMS"] = progs
    print(f"persistent paper b1 N49 programs={progs}: iters=1 {timed(1, 'persistent'):.0f} us, iters=5 {timed(5, 'persistent'):.0f} us", flush=True)
os.environ.pop("JSA_SLOT_LOOP_PROGRAMS")
print(f"phased paper b1 N49 (graph): iters=1 {timed(1, 'phased'):.0f} us, iters=5 {timed(5, 'phased'):.0f} us", flush=True)
