"""Model mode: time one preset or checkpoint on every backend, stage by stage, in one run.

For every backend (`jsa_rt.runtime.load_backend`): the whole call `run(frame, audio)` (uint8
frame and waveform in, numpy maps out: what an application pays) and the two branches
`run_audio` / `run_visual`. Per model stage (profiling.MODEL_STAGES: preprocess, audio front end,
audio encoder, image encoder, slot attention, maps, upsampling): on torch by calling the model's
submodules (CUDA events on GPU), on onnxruntime from its node profiler. FLOPs per stage come from
the PyTorch model, and the fp32 matmul peak is measured in the same run, so achieved GFLOP/s can
be read against what this machine can do.
"""
from __future__ import annotations

import copy
import os
import time

import numpy as np

from ..config import get_preset
from ..errors import JsaError
from . import profiling
from .profiling_env import environment

ALL_BACKENDS = ("torch", "torch-triton-graphs", "onnxruntime", "tensorrt")
FLOPS_NOTE = ("FLOPs count matmuls and convolutions only (torch FlopCounterMode): a lower bound; "
              "GFLOP/s = FLOPs / p50 latency")


def synthetic_inputs(cfg, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random RGB frame and a noise waveform of the model's input sizes."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(cfg.num_samples)).astype(np.float32)
    return frame, audio


def time_host(fn, warmup: int, iterations: int) -> list[float]:
    """Latency of a call that returns host (numpy) results, so it has finished on return."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def _load_backend(name: str, checkpoint, preset, device, threads):
    from . import load_backend
    # "torch" is eager PyTorch with its reference ops; the Triton + CUDA-graph variant is its
    # own entry (torch-triton-graphs), so the two can be read side by side.
    extra = {"kernels": "torch"} if name == "torch" else {}
    return load_backend(name, model=checkpoint, preset=None if checkpoint else preset,
                        device=device, threads=threads, **extra)


def _torch_model(checkpoint, preset, device):
    """The PyTorch model to split into stages: the checkpoint's, or random weights of a preset
    (None for an exported .onnx / TensorRT file: no stages or FLOPs from torch then)."""
    if checkpoint and str(checkpoint).endswith((".onnx", ".plan", ".engine")):
        return None
    if checkpoint:
        from ..model.checkpoint import load_checkpoint
        model, _ = load_checkpoint(checkpoint, device=device)
    else:   # the same seeded random weights the runtime backends build for a preset
        from ..export.onnx_export import random_model
        model = random_model(preset).to(device)
    return model.eval().requires_grad_(False)   # requires_grad off: FlopCounterMode needs it


def _branch_samples(backend, frame, audio, warmup, iterations) -> dict[str, list[float]]:
    state = backend.run_audio(audio)
    return {"audio_branch": time_host(lambda: backend.run_audio(audio), warmup, iterations),
            "visual_branch": time_host(lambda: backend.run_visual(frame, state), warmup, iterations)}


def _torch_stage_samples(model, frame, audio, device, warmup, iterations, progress):
    """The model stages and the plain forward of the PyTorch model, in ms."""
    from . import profiling_torch as pt

    frame_t, wave = pt.model_inputs(frame, audio, device)
    pt.check_stage_plan(model, frame_t, wave)
    plan, _ = pt.stage_plan(model, frame_t, wave)
    progress(f"  torch stages on {device} ({iterations} iterations)")
    stages = pt.time_stages(plan, warmup, iterations, device)
    images = pt.preprocess(frame_t)
    stages["forward"] = pt.time_call(lambda: model.localize(images, wave), warmup, iterations, device)
    return stages


def _flops_block(flops: dict, entry: dict, peak_gflops: float | None) -> dict:
    """GFLOP per stage and the rate achieved at the p50 latency, as a fraction of the peak."""
    def rate(count, p50_ms):
        gflops = count / (p50_ms * 1e-3) / 1e9 if p50_ms > 0 else None
        frac = gflops / peak_gflops if gflops is not None and peak_gflops else None
        return {"gflop": count / 1e9, "gflops_per_s": gflops, "fraction_of_peak": frac}

    block = {"stages": {}, "note": FLOPS_NOTE}
    for stage, stats in entry["stages"].items():
        if stage in flops:
            block["stages"][stage] = rate(flops[stage], stats["p50_ms"])
    block["total"] = rate(flops["forward"], entry["total"]["p50_ms"])
    return block


def profile_model(preset: str | None = None, checkpoint: str | None = None,
                  backends=None, device: str | None = None, warmup: int = 10,
                  iterations: int = 100, threads: int | None = None, progress=print) -> dict:
    """Measure every requested backend; return a report (see `profiling`)."""
    if not preset and not checkpoint:
        raise JsaError("profile model needs --preset NAME (random weights) or --checkpoint CKPT")
    if preset:
        try:
            get_preset(preset)
        except ValueError as e:
            raise JsaError(str(e)) from None
    if iterations < 1 or warmup < 0:
        raise JsaError("--iterations must be >= 1 and --warmup >= 0")
    names = list(backends or ALL_BACKENDS)
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch = None
        torch_threads = None
    dev = device or ("cuda" if torch is not None and torch.cuda.is_available() else "cpu")

    env = environment()
    report = profiling.new_report("model", env, {
        "preset": preset, "checkpoint": checkpoint, "device": dev, "warmup": warmup,
        "iterations": iterations, "threads": torch_threads, "backends_requested": names,
        "inputs": "random uint8 frame, 0.1 x Gaussian-noise waveform (seed 0)"})

    peak = None
    model = flops = None
    torch_stages = {}
    if torch is not None:
        from . import profiling_torch as pt
        progress(f"measuring the fp32 matmul peak on {dev}")
        peak = pt.matmul_peak(dev)
        report["peak"] = peak
        model = _torch_model(checkpoint, preset, dev)
    if model is not None:
        report["settings"]["preset"] = model.cfg.preset
        frame, audio = synthetic_inputs(model.cfg)
        flops = pt.model_flops(model, frame, audio, dev)
        if "torch" in names:
            torch_stages = _torch_stage_samples(model, frame, audio, dev, warmup, iterations,
                                                progress)
    peak_gflops = peak["fp32_gflops"] if peak else None

    for name in names:
        progress(f"backend {name}")
        try:
            if name == "torch-triton-graphs":
                from .profiling_graphs import profile_triton_graphs
                entry = profile_triton_graphs(model, dev, warmup, iterations)
            else:
                entry, cfg = _profile_backend(name, checkpoint, preset, dev, warmup, iterations,
                                              threads)
            onnx_path = entry.pop("onnx_path", None)
            if name == "onnxruntime" and entry["device"] == "cpu":
                entry = _with_stages(entry, _ort_stages(onnx_path, cfg, model, warmup, iterations,
                                                        threads, progress))
                entry["timer"] += ("; model stages: kernel times from onnxruntime's node "
                                   "profiler, summed per stage and run")
        except JsaError as e:
            report["skipped"][name] = str(e)
            progress(f"  skipped: {e}")
            continue
        if name == "torch":
            entry = _with_stages(entry, torch_stages)
            entry["timer"] += ("; model stages: " + ("CUDA events" if dev.startswith("cuda") else
                               "perf_counter") + " at stage boundaries of one chained forward")
        if flops:
            entry["flops"] = _flops_block(flops, entry, peak_gflops)
        report["backends"][name] = entry
        t = entry["total"]
        progress(f"  total p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms")
    report["notes"] = [FLOPS_NOTE] if flops else []
    return profiling.finish_report(report)


def _with_stages(entry: dict, extra: dict[str, list[float]]) -> dict:
    """Add stage samples; order: the model stages, forward, then the branches."""
    raw = dict(entry["raw_ms"]["stages"], **extra)
    order = [*profiling.MODEL_STAGES, "forward", *profiling.BRANCH_STAGES]
    ordered = {s: raw[s] for s in order if s in raw}
    ordered.update({s: v for s, v in raw.items() if s not in ordered})
    entry["raw_ms"]["stages"] = ordered
    entry["stages"] = {s: profiling.summarize(v) for s, v in ordered.items()}
    return entry


def _ort_stages(onnx_path, cfg, model, warmup, iterations, threads, progress) -> dict:
    """Per-stage samples from onnxruntime's node profiler on the backend's own full graph
    (exported here when the backend does not say which file it runs); empty if unknown."""
    import tempfile

    from .profiling_ort import ort_stage_samples

    with tempfile.TemporaryDirectory() as tmp:
        if not onnx_path or not os.path.isfile(onnx_path):
            if model is None:
                return {}
            progress("  exporting the full graph for onnxruntime's node profiler")
            onnx_path = export_full_graph(model, os.path.join(tmp, "full.onnx"))
        progress(f"  onnxruntime stages from its node profiler ({iterations} runs)")
        frame, audio = synthetic_inputs(cfg)
        return ort_stage_samples(str(onnx_path), frame, audio, warmup, iterations, threads)


def export_full_graph(model, path: str) -> str:
    """The raw-in maps-out graph, exported by the project's exporter (as deployed), quietly."""
    import contextlib
    import io
    import warnings

    from ..export.onnx_export import export_graph

    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        export_graph(copy.deepcopy(model).cpu().float(), "full", path)
    return path


def _profile_backend(name, checkpoint, preset, device, warmup, iterations, threads) -> dict:
    backend = _load_backend(name, checkpoint, preset, device, threads)
    try:
        frame, audio = synthetic_inputs(backend.config)
        total = time_host(lambda: backend.run(frame, audio), warmup, iterations)
        branches = _branch_samples(backend, frame, audio, warmup, iterations)
        path = getattr(backend, "path", None)
        describe = getattr(backend, "describe", None)
        entry = profiling.backend_entry(
            total, branches, device=getattr(backend, "device", device),
            description=describe() if callable(describe) else name,
            onnx_path=str(path) if path and str(path).endswith(".onnx") else None,
            timer="perf_counter around run(); results are numpy")
        return entry, backend.config
    finally:
        backend.close()
