#!/usr/bin/env python3
"""Benchmark: eager PyTorch vs the onnxruntime backend, batch 1, fp32, on this machine's CPU.

Targets (issue 4): `paper` preset, one full forward through onnxruntime >= 1.4x faster than
eager PyTorch on the same inputs in the same run; `edge` under 40 ms. Also reports achieved
GFLOP/s (conv + matmul FLOPs counted on the ONNX graph) against the machine's measured fp32
matmul peak. Runs are interleaved (torch, ort, torch, ort, ...) so a noisy shared machine hurts
both alike; medians are reported. Writes benchmarks/backends-<machine>.json.

    python tools/bench_backends.py [--presets paper,edge] [--iters 20] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# tools/ holds profile.py, which would shadow the standard library's `profile` (torch needs it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "tools"]
sys.path.insert(0, str(REPO))


def machine_name() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1]
                break
    except OSError:
        pass
    cpu = re.sub(r"\(r\)|\(tm\)|cpu|@.*", "", cpu.lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-")
    return f"{cpu}-{os.cpu_count()}core-{platform.machine()}"


def count_flops(onnx_path: Path) -> float:
    """Multiply-adds x2 of Conv, MatMul and Gemm, from shape-inferred tensor shapes."""
    import onnx
    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out:
                total += 2.0 * np.prod(out) * np.prod(w[1:])          # per output: Cin/g * kh * kw
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                k = a[-2] if node.op_type == "Gemm" and any(
                    at.name == "transA" and at.i for at in node.attribute) else a[-1]
                total += 2.0 * np.prod(out) * k
    return total


def matmul_peak_gflops(threads: int, size: int = 1024, repeats: int = 10) -> dict:
    """Best-of-N fp32 GEMM throughput through torch (oneDNN/MKL) and numpy (OpenBLAS)."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best_torch = min(_time(lambda: torch.mm(a, b)) for _ in range(repeats))
    an, bn = a.numpy(), b.numpy()
    best_np = min(_time(lambda: an @ bn) for _ in range(repeats))
    flops = 2.0 * size ** 3
    return {"torch_gflops": flops / best_torch / 1e9, "numpy_gflops": flops / best_np / 1e9,
            "fp32_gflops": flops / min(best_torch, best_np) / 1e9, "size": size}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stats(samples) -> dict:
    ms = np.asarray(samples) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "mean_ms": float(ms.mean()), "samples": len(ms)}


def bench_preset(preset: str, iters: int, threads: int, workdir: Path) -> dict:
    import torch
    from jsa_rt.export.onnx_export import example_inputs, export_all
    from jsa_rt.model import random_model
    from jsa_rt.runtime.ort_backend import OrtBackend
    from jsa_rt.runtime.torch_backend import TorchBackend

    torch.set_num_threads(threads)
    model = random_model(preset)
    onnx_path = workdir / f"{preset}.onnx"
    print(f"[{preset}] exporting ...", flush=True)
    export_all(model, onnx_path, graphs=("full",), model_name=f"random-{preset}", log=lambda *_: None)
    torch_b = TorchBackend(model=model, device="cpu", kernels="torch", threads=threads)
    ort_b = OrtBackend(onnx_path, device="cpu", threads=threads)
    ex = example_inputs(model.cfg)
    frame, wave = ex["frame"][0], ex["wave"][0]
    a, b = torch_b.run(frame, wave), ort_b.run(frame, wave)
    agree = float(np.abs(a.image_slot - b.image_slot).max())
    for _ in range(3):                                          # warm-up
        torch_b.run(frame, wave), ort_b.run(frame, wave)
    t_torch, t_ort = [], []
    for i in range(iters):                                      # interleaved
        t_torch.append(_time(lambda: torch_b.run(frame, wave)))
        t_ort.append(_time(lambda: ort_b.run(frame, wave)))
    flops = count_flops(onnx_path)
    s_torch, s_ort = stats(t_torch), stats(t_ort)
    result = {
        "torch_eager": s_torch, "onnxruntime": s_ort,
        "speedup_ort_vs_torch": s_torch["median_ms"] / s_ort["median_ms"],
        "gflop_per_forward": flops / 1e9,
        "achieved_gflops": {"torch_eager": flops / (s_torch["median_ms"] / 1e3) / 1e9,
                            "onnxruntime": flops / (s_ort["median_ms"] / 1e3) / 1e9},
        "max_abs_diff_image_slot": agree,
    }
    print(f"[{preset}] torch {s_torch['median_ms']:.1f} ms, onnxruntime {s_ort['median_ms']:.1f} ms "
          f"(x{result['speedup_ort_vs_torch']:.2f}), {flops / 1e9:.2f} GFLOP/forward", flush=True)
    torch_b.close(), ort_b.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="paper,edge")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/backends-<machine>.json)")
    args = p.parse_args(argv)
    import onnxruntime
    import torch
    machine = machine_name()
    peak = matmul_peak_gflops(args.threads)
    print(f"machine {machine}: fp32 matmul peak {peak['fp32_gflops']:.1f} GFLOP/s "
          f"({args.threads} threads)", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in [s.strip() for s in args.presets.split(",") if s.strip()]:
            results[preset] = bench_preset(preset, args.iters, args.threads, Path(tmp))
            for backend, gflops in results[preset]["achieved_gflops"].items():
                results[preset].setdefault("fraction_of_peak", {})[backend] = gflops / peak["fp32_gflops"]
    targets = {}
    if "paper" in results:
        targets["paper_ort_speedup_ge_1.4"] = results["paper"]["speedup_ort_vs_torch"] >= 1.4
    if "edge" in results:
        targets["edge_ort_under_40ms"] = results["edge"]["onnxruntime"]["median_ms"] < 40.0
    report = {
        "schema": "jsa-rt-bench-backends/1", "machine": machine,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {"batch": 1, "precision": "fp32", "threads": args.threads, "iters": args.iters,
                     "weights": "random (timing only)", "device": "cpu"},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
        "peak": peak, "presets": results, "targets_met": targets,
    }
    out = Path(args.out) if args.out else REPO / "benchmarks" / f"backends-{machine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}: targets {targets}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
