"""Benchmark the joint slot-attention module on a GPU: eager PyTorch, PyTorch replayed from a CUDA
graph, torch.compile, and the product's Triton kernels (jsa_rt/kernels/); plus numerics against a
float64 reference.

The module is what the model runs after its encoders: for both modalities LN_in, K/V, T slot
iterations (LN, q, attention, GRUCell, residual MLP), then the cross-modal maps ca_va / ca_av.
Prints a table and writes benchmarks/kernels_<card>.json (atomically, after every configuration).
The kernel experiments' benchmarks build on this one (kernels/experiments/bench_slot_loop.py).

    python tools/bench_kernels.py                      # paper + edge presets, batch 1 and 16
    python tools/bench_kernels.py --dry-run            # CPU + interpreter: checks this script only
"""
import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
# drop tools/ from the path: a tools/profile.py would shadow the stdlib module torch.compile imports
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
import jsa_rt.kernels as K  # noqa: E402
from jsa_rt.config import get_preset  # noqa: E402
from jsa_rt.kernels import reference  # noqa: E402


class ModalitySlots(nn.Module):
    """One modality's slot attention, laid out like the model's (LayerNorms, q/k/v, GRUCell, MLP)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.norm_input, self.norm_slots, self.norm_pre_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        with torch.no_grad():             # non-trivial LayerNorm affines, as after training
            for norm in (self.norm_input, self.norm_slots, self.norm_pre_ff):
                norm.weight.normal_(1.0, 0.1)
                norm.bias.normal_(0.0, 0.1)

    def params(self) -> dict:
        return reference.params_from_modules(self.norm_input, self.to_q, self.to_k, self.to_v, self.gru,
                                             self.mlp, self.norm_slots, self.norm_pre_ff)

    def loop(self, x, slots0, iters, eps, kernels):
        """(slots, q_last, k, attn_last); kernels: torch | triton-ops (step + GRU tail kernels)."""
        B, _, D = x.shape
        xn = self.norm_input(x)
        k, v = self.to_k(xn), self.to_v(xn)
        slots = slots0.expand(B, -1, -1)
        S = slots.shape[1]
        for _ in range(iters):
            q = self.to_q(self.norm_slots(slots))
            if kernels == "torch":
                updates, attn = reference.slot_attention_step(q, k, v, D ** -0.5, eps)
                h = self.gru(updates.reshape(B * S, D), slots.reshape(B * S, D))
            else:
                updates, attn = K.slot_attention_step(q, k, v, D ** -0.5, eps, backend="triton")
                gi = F.linear(updates.reshape(B * S, D), self.gru.weight_ih, self.gru.bias_ih)
                gh = F.linear(slots.reshape(B * S, D), self.gru.weight_hh, self.gru.bias_hh)
                h = K.gru_update(gi, gh, slots.reshape(B * S, D), backend="triton")
            slots = h.reshape(B, S, D)
            slots = slots + self.mlp(self.norm_pre_ff(slots))
        return slots, q, k, attn


class JointSlots(nn.Module):
    """Both modalities + the cross-modal maps (method.md section 3)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.slots0 = nn.Parameter(torch.randn(cfg.num_slots, cfg.dim))
        self.img, self.aud = ModalitySlots(cfg.dim, cfg.mlp_hidden), ModalitySlots(cfg.dim, cfg.mlp_hidden)

    def forward(self, v_tokens, a_tokens, kernels="torch"):
        """kernels: torch | triton-ops (step + GRU tail kernels per modality) | joint | joint-torch
        (both modalities advanced together, kernels/joint_loop.py, with Triton or torch ops)."""
        c = self.cfg
        if kernels in ("joint", "joint-torch"):
            from jsa_rt.kernels.joint_loop import joint_slot_iterations, pack_joint
            if getattr(self, "_packed", None) is None:           # weights packed once
                self._packed = pack_joint(self.img.params(), self.aud.params())
            backend = "torch" if kernels == "joint-torch" else "triton"
            img, aud = joint_slot_iterations(v_tokens, a_tokens, self.slots0, self._packed, c.iterations,
                                             c.dim ** -0.5, c.attn_eps, backend=backend)
            return self.outputs(img, aud, backend)
        img = self.img.loop(v_tokens, self.slots0, c.iterations, c.attn_eps, kernels)
        aud = self.aud.loop(a_tokens, self.slots0, c.iterations, c.attn_eps, kernels)
        return self.outputs(img, aud, "torch")

    def outputs(self, img, aud, backend) -> dict:
        """The slots, the intra-modal maps, and the cross maps (their step on `backend`)."""
        (sv, qv, kv, ia_vv), (sa, qa, ka, ia_aa) = img, aud
        scale, eps = self.cfg.dim ** -0.5, self.cfg.attn_eps
        step = lambda q, k: K.slot_attention_step(q, k, k, scale, eps, backend=backend)[1]  # noqa: E731
        return {"slots_v": sv, "slots_a": sa, "ia_vv": ia_vv, "ia_aa": ia_aa,
                "ca_va": step(qv, ka), "ca_av": step(qa, kv)}


# (label, JointSlots.forward's `kernels`, replayed from a CUDA graph); the first two are the
# baselines every speed-up is stated against
METHODS = [
    ("eager", "torch", False),
    ("eager+cudagraph", "torch", True),
    ("triton-ops (step+gru kernels)", "triton-ops", False),
    ("joint: both modalities batched, torch ops +cudagraph", "joint-torch", True),
    ("joint: both modalities batched + triton step/gru", "joint", False),
    ("joint: both modalities batched + triton step/gru +cudagraph", "joint", True),
]


# ---- timing -------------------------------------------------------------------------------------
DEVICE = "cuda"      # "cpu" only for --dry-run (interpreter, tiny sizes): checks this script, times nothing real


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, calls: int, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time per call of `calls` back-to-back calls (CPU launch included)."""
    for _ in range(3):
        fn()
    sync()
    if DEVICE == "cpu":
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) * 1e3 / calls
    results = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        results.append(start.elapsed_time(end) / calls)
    return sorted(results)[len(results) // 2]


def graphed(fn):
    """Capture fn() once into a CUDA graph; returns (replay, outputs of the captured call)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def rel_errors(got: dict, ref: dict) -> dict:
    def err(a, b):
        a, b = a.double(), b.double()
        if not torch.isfinite(a).all():
            return float("inf")
        return ((a - b).abs().max() / b.abs().max()).item()
    return {name: err(got[name], ref[name]) for name in ref}


# ---- one configuration ----------------------------------------------------------------------------
def bench_config(preset, batch, audio_tokens, calls, do_compile, log, methods=METHODS, module_cls=JointSlots):
    cfg = get_preset(preset)
    torch.manual_seed(0)
    module = module_cls(cfg).to(DEVICE).eval()
    v_tok = torch.randn(batch, cfg.image_tokens, cfg.dim, device=DEVICE)
    a_tok = torch.randn(batch, audio_tokens, cfg.dim, device=DEVICE)
    with torch.no_grad():
        ref = module_cls(cfg).to(DEVICE).double()
        ref.load_state_dict(module.state_dict())
        want = ref(v_tok.double(), a_tok.double())
    rows = []

    def add(method, fn, graph=False):
        row = {"preset": preset, "batch": batch, "dim": cfg.dim, "image_tokens": cfg.image_tokens,
               "audio_tokens": audio_tokens, "iterations": cfg.iterations, "method": method}
        try:
            with torch.no_grad():
                if graph:
                    if DEVICE != "cuda":
                        raise RuntimeError("CUDA graphs need a GPU")
                    replay, out = graphed(fn)
                    replay()
                    sync()
                    row["ms"] = time_ms(replay, calls)
                else:
                    out = fn()
                    row["ms"] = time_ms(fn, calls)
                errs = rel_errors(out, want)
            row["max_rel_err_vs_fp64"] = max(errs.values())
            row["rel_err_vs_fp64"] = errs
        except Exception as exc:             # one broken method must not lose the others' numbers
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
        log(row)

    for label, kernels, graph in methods:
        add(label, lambda k=kernels: module(v_tok, a_tok, k), graph=graph)
    if do_compile:
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(lambda v, a: module(v, a, "torch"))
            with torch.no_grad():
                compiled(v_tok, a_tok)
            sync()
            compile_s = time.perf_counter() - t0
        except Exception as exc:
            compile_s = None
            rows.append({"preset": preset, "batch": batch, "method": "torch.compile",
                         "error": f"{type(exc).__name__}: {exc}"[:500]})
        if compile_s is not None:
            add("torch.compile", lambda: compiled(v_tok, a_tok))
            rows[-1]["compile_s"] = round(compile_s, 1)
    eager = next((r["ms"] for r in rows if r["method"] == "eager" and "ms" in r), None)
    graph = next((r["ms"] for r in rows if r["method"] == "eager+cudagraph" and "ms" in r), None)
    for r in rows:
        if "ms" in r:
            r["speedup_vs_eager"] = round(eager / r["ms"], 2) if eager else None
            r["speedup_vs_cudagraph"] = round(graph / r["ms"], 2) if graph else None
    return rows


def dtype_numerics(log, preset="paper") -> dict:
    """fp16/bf16 inputs (fp32 softmax inside) vs float64 of the same rounded inputs; fp32 too."""
    out = {}
    torch.manual_seed(1)
    cfg = get_preset(preset)
    D, N, S = cfg.dim, cfg.image_tokens, cfg.num_slots
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        q, k, v = (torch.randn(4, n, D, device=DEVICE).to(dtype) for n in (S, N, N))
        u, a = K.slot_attention_step(q, k, v, D ** -0.5, cfg.attn_eps, backend="triton")
        ru, ra = reference.slot_attention_step(q.double(), k.double(), v.double(), D ** -0.5, cfg.attn_eps)
        out[name] = {"step_updates": rel_error(u, ru), "step_attn": rel_error(a, ra)}
        log({"numerics": name, **out[name]})
    return out


def rel_error(got, want) -> float:
    return ((got.double() - want).abs().max() / want.abs().max()).item()


def card_slug() -> str:
    if DEVICE != "cuda":
        return "cpu-dry-run"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")


def write_json(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def print_table(rows):
    print(f"\n{'preset':7} {'batch':>5}  {'method':34} {'ms':>8} {'x eager':>8} {'x graph':>8} {'rel err':>9}")
    for r in rows:
        if "ms" not in r:
            print(f"{r['preset']:7} {r['batch']:5}  {r['method']:34} ERROR {r.get('error', '')[:60]}")
            continue
        x = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
        print(f"{r['preset']:7} {r['batch']:5}  {r['method']:34} {r['ms']:8.3f} {x(r['speedup_vs_eager'])} "
              f"{x(r['speedup_vs_cudagraph'])} {r['max_rel_err_vs_fp64']:9.1e}")


def parser(description: str, out_dir: Path = ROOT / "benchmarks") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--presets", nargs="+", default=["paper", "edge"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--audio-tokens", type=int, default=16, help="audio tokens per clip (paper: 16)")
    ap.add_argument("--calls", type=int, default=50, help="calls per timing repeat")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    ap.add_argument("--compile-budget-s", type=float, default=240,
                    help="skip torch.compile for configurations started after this many seconds")
    ap.add_argument("--out-dir", default=str(out_dir))
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU + Triton interpreter, tiny preset: exercises this script only")
    return ap


def ready(args, name: str) -> bool:
    """Pick the device (the dry run: CPU, tiny sizes, a scratch folder); False when there is no GPU."""
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
        args.presets, args.batches, args.calls, args.no_compile = ["tiny"], [2], 1, True
        args.out_dir = args.out_dir if args.out_dir != str(ROOT / "benchmarks") else f"/tmp/{name}_dry"
    elif not torch.cuda.is_available():
        print(f"{name}: no CUDA device; run it on an NVIDIA GPU (the kernels' CPU tests are "
              "tests/test_kernels.py)")
        return False
    torch.backends.cuda.matmul.allow_tf32 = False      # fp32 means fp32 (PyTorch's default)
    torch.backends.cudnn.allow_tf32 = False
    return True


def run(args, stem: str, module: str, methods=METHODS, module_cls=JointSlots, numerics=dtype_numerics) -> int:
    """Every (batch, preset) configuration of `methods`, then `numerics`; writes <out-dir>/<stem>_<card>.json."""
    import triton
    started = time.perf_counter()
    path = Path(args.out_dir) / f"{stem}_{card_slug()}.json"
    data = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (interpreter dry run)",
            "capability": list(torch.cuda.get_device_capability()) if DEVICE == "cuda" else None,
            "torch": torch.__version__, "triton": triton.__version__, "calls_per_repeat": args.calls,
            "module": module, "results": [], "numerics_by_dtype": None}
    log = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    for batch in args.batches:              # batch 1 first: the targets are stated there
        for preset in args.presets:
            do_compile = not args.no_compile and time.perf_counter() - started < args.compile_budget_s
            data["results"] += bench_config(preset, batch, args.audio_tokens, args.calls, do_compile, log,
                                            methods, module_cls)
            write_json(path, data)
    try:
        data["numerics_by_dtype"] = numerics(log, "paper" if DEVICE == "cuda" else "tiny")
    except Exception as exc:
        data["numerics_by_dtype"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    write_json(path, data)
    print_table(data["results"])
    print(f"\nwrote {path} ({time.perf_counter() - started:.0f} s); commit it under benchmarks/")
    return 0


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    if not ready(args, "bench_kernels"):
        return 2
    return run(args, "kernels", "joint slot attention: both modalities, LN_in + K/V + T iterations + cross maps")


if __name__ == "__main__":
    sys.exit(main())
