"""Model mode: time one preset or checkpoint on every backend, stage by stage, in one run.

For every backend (`jsa_rt.runtime.load_backend`): the whole call `run(frame, audio)` (uint8
frame and waveform in, numpy maps out: what an application pays) and the two branches
`run_audio` / `run_visual`. Per model stage (profiling.MODEL_STAGES: preprocess, audio front end,
audio encoder, image encoder, slot attention, maps, upsampling): on torch by calling the model's
submodules (CUDA events on GPU), on onnxruntime from its node profiler. FLOPs per stage come from
the PyTorch model, and the fp32 matmul peak is measured in the same run, so achieved GFLOP/s can
be read against what this machine can do. Every backend is also set against eager torch: its p50
speedup and how far its maps are from torch's on the same inputs (`vs_reference`).
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import get_preset
from ..errors import JsaError
from ..runtime.base import MAP_NAMES
from . import report as profiling
from .env import CpuContention, environment
from .timing import synthetic_inputs, time_host
from .video_rate import DEFAULT_TARGET_FPS

ALL_BACKENDS = ("torch", "torch-triton-graphs", "onnxruntime", "tensorrt")
FLOPS_NOTE = ("FLOPs count matmuls and convolutions only (torch FlopCounterMode): a lower bound; "
              "GFLOP/s = FLOPs / p50 latency")


@dataclass
class Run:
    """What one model-mode run measures, and how."""
    preset: str | None
    checkpoint: str | None
    device: str
    warmup: int
    iterations: int
    threads: int | None
    workdir: str              # temporary: fresh ONNX exports live here during the run
    progress: object = print


@contextlib.contextmanager
def _quiet():
    """Exporters print progress and warnings; a profile's output should stay readable."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def fresh_onnx(preset: str, workdir: str) -> str:
    """Export the preset's seeded random weights now, so the graph timed is the one the current
    code produces (a cached export can predate a model change)."""
    from ..export.onnx_export import export_all
    from ..model import random_model

    path = os.path.join(workdir, f"random-{preset}.onnx")
    if not os.path.isfile(path):
        with _quiet():
            export_all(random_model(preset), path, model_name=f"random-{preset}", log=lambda *_: None)
    return path


def export_full_graph(model, path: str) -> str:
    """The raw-in maps-out graph of `model`, exported by the project's exporter (as deployed)."""
    from ..export.onnx_export import export_graph

    with _quiet():
        export_graph(copy.deepcopy(model).cpu().float(), "full", path)
    return path


def _load_backend(name: str, run: Run):
    from ..runtime import load_backend
    # "torch" is eager PyTorch with its reference ops; the Triton + CUDA-graph variant is its
    # own entry (torch-triton-graphs), so the two can be read side by side.
    extra = {"kernels": "torch"} if name == "torch" else {}
    model = run.checkpoint
    if name == "onnxruntime" and not model:
        model = fresh_onnx(run.preset, run.workdir)
    return load_backend(name, model=model, preset=None if model else run.preset,
                        device=run.device, threads=run.threads, **extra)


def _torch_model(run: Run):
    """The PyTorch model to split into stages: the checkpoint's, or random weights of a preset
    (None for an exported .onnx / TensorRT file: no stages or FLOPs from torch then)."""
    if run.checkpoint and str(run.checkpoint).endswith((".onnx", ".plan", ".engine")):
        return None
    if run.checkpoint:
        from ..model.checkpoint import load_checkpoint
        model, _ = load_checkpoint(run.checkpoint, device=run.device)
    else:   # the same seeded random weights the runtime backends build for a preset
        from ..model import random_model
        model = random_model(run.preset).to(run.device)
    return model.eval().requires_grad_(False)   # requires_grad off: FlopCounterMode needs it


def _torch_stage_samples(model, run: Run) -> dict[str, list[float]]:
    """The model stages and the plain forward of the PyTorch model, in ms."""
    from . import torch_stages as pt

    frame_t, wave = pt.model_inputs(*synthetic_inputs(model.cfg), run.device)
    pt.check_stage_plan(model, frame_t, wave)
    plan, _ = pt.stage_plan(model, frame_t, wave)
    run.progress(f"  torch stages on {run.device} ({run.iterations} iterations)")
    stages = pt.time_stages(plan, run.warmup, run.iterations, run.device)
    images = model.preprocess_frames(frame_t)
    stages["forward"] = pt.time_call(lambda: model.localize(images, wave), run.warmup,
                                     run.iterations, run.device)
    return stages


def _profile_backend(name: str, run: Run):
    """(entry, config): the whole call and the two branches, through the runtime interface;
    `outputs` in the entry is one call's maps, for `against_reference`."""
    backend = _load_backend(name, run)
    try:
        frame, audio = synthetic_inputs(backend.config)
        total = time_host(lambda: backend.run(frame, audio), run.warmup, run.iterations)
        state = backend.run_audio(audio)
        branches = {
            "audio_branch": time_host(lambda: backend.run_audio(audio), run.warmup, run.iterations),
            "visual_branch": time_host(lambda: backend.run_visual(frame, state), run.warmup,
                                       run.iterations)}
        path = getattr(backend, "path", None)
        describe = getattr(backend, "describe", None)
        device = getattr(backend, "device", run.device)
        entry = profiling.backend_entry(
            total, branches, device=device, precision=backend_precision(backend, device),
            threads=backend_threads(backend, device),
            description=describe() if callable(describe) else name,
            onnx_path=str(path) if path and str(path).endswith(".onnx") else None,
            timer="perf_counter around run(); results are numpy",
            outputs=backend.run(frame, audio))
        return entry, backend.config
    finally:
        backend.close()


def backend_precision(backend, device: str) -> str:
    """The arithmetic a backend runs in: its own `precision` (ONNX / TensorRT exports say), else
    fp32 for PyTorch, with the TF32 switches on a CUDA device (TF32 rounds fp32 inputs)."""
    precision = getattr(backend, "precision", None)
    if precision:
        return str(precision)
    if str(device).startswith("cuda"):
        try:
            import torch
            return (f"fp32 (TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
                    f"cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'})")
        except ImportError:
            pass
    return "fp32"


def backend_threads(backend, device: str) -> int | None:
    """CPU threads a backend computes with (None on a GPU)."""
    if not str(device).startswith("cpu"):
        return None
    if getattr(backend, "name", "") == "torch":
        import torch
        return torch.get_num_threads()
    return getattr(backend, "threads", None) or os.cpu_count()


def _ort_stages(onnx_path, cfg, model, run: Run) -> tuple[dict[str, list[float]], list[float]]:
    """Per-stage samples from onnxruntime's node profiler on the backend's own full graph
    (exported here when the backend does not say which file it runs), and the length of each
    profiled run; empty if unknown."""
    from .ort_stages import ort_profile

    if not onnx_path or not os.path.isfile(onnx_path):
        if model is None:
            return {}, []
        run.progress("  exporting the full graph for onnxruntime's node profiler")
        onnx_path = export_full_graph(model, os.path.join(run.workdir, "full-for-profiler.onnx"))
    run.progress(f"  onnxruntime stages from its node profiler ({run.iterations} runs)")
    frame, audio = synthetic_inputs(cfg)
    return ort_profile(str(onnx_path), frame, audio, run.warmup, run.iterations, run.threads)


def _with_stages(entry: dict, extra: dict[str, list[float]]) -> dict:
    """Add stage samples; order: the model stages, forward, then the branches."""
    raw = dict(entry["raw_ms"]["stages"], **extra)
    order = [*profiling.MODEL_STAGES, "forward", *profiling.BRANCH_STAGES]
    ordered = {s: raw[s] for s in order if s in raw}
    ordered.update({s: v for s, v in raw.items() if s not in ordered})
    entry["raw_ms"]["stages"] = ordered
    entry["stages"] = {s: profiling.summarize(v) for s, v in ordered.items()}
    return entry


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


def _measure(name: str, run: Run, model, torch_stages) -> dict:
    """One backend's entry (raises JsaError when it cannot run here)."""
    if name == "torch-triton-graphs":
        from .graphs import profile_triton_graphs
        return profile_triton_graphs(model, run.device, run.warmup, run.iterations)
    entry, cfg = _profile_backend(name, run)
    onnx_path = entry.pop("onnx_path", None)
    if name == "onnxruntime" and entry["device"] == "cpu":
        stages, profiled_runs = _ort_stages(onnx_path, cfg, model, run)
        entry = _with_stages(entry, stages)
        entry["timer"] += ("; model stages: kernel times from onnxruntime's node profiler, "
                           "summed per stage and run")
        if profiled_runs:
            entry["profiled_run"] = profiling.summarize(profiled_runs)
            entry["stage_sum"] = profiling.stage_sum(entry, (
                "the stages are kernel times from a second, profiled session, whose runs took "
                f"{entry['profiled_run']['mean_ms']:.2f} ms on average (the profiler slows "
                "every kernel; the gaps between kernels are not in any stage), while the total "
                "times the un-profiled backend"))
    if name == "torch":
        entry = _with_stages(entry, torch_stages)
        entry["timer"] += ("; model stages: " + ("CUDA events" if run.device.startswith("cuda")
                           else "perf_counter") + " at stage boundaries of one chained forward")
        entry["stage_sum"] = profiling.stage_sum(entry, (
            "the stages are timed in their own loop of the chained model stages (no input "
            "conversion, no numpy outputs), while the total times backend.run(), "
            "in separate iterations"))
    return entry


def against_reference(report: dict, outputs: dict) -> None:
    """Each backend against a reference (eager torch when measured, else the first): its p50
    speedup and, where both ran the runtime interface on the same inputs, the largest absolute
    difference over every output map, so one run shows whether a faster backend still agrees."""
    names = list(report["backends"])
    if len(names) < 2:
        return
    ref = "torch" if "torch" in names else names[0]
    ref_p50 = report["backends"][ref]["total"]["p50_ms"]
    for name in names:
        if name == ref:
            continue
        entry = report["backends"][name]
        block = {"reference": ref, "p50_speedup": ref_p50 / entry["total"]["p50_ms"]}
        if outputs.get(name) is not None and outputs.get(ref) is not None:
            diffs = {m: float(np.max(np.abs(np.asarray(getattr(outputs[name], m), np.float64)
                                            - np.asarray(getattr(outputs[ref], m), np.float64))))
                     for m in MAP_NAMES}
            block["max_abs_diff"] = max(diffs.values())
            block["max_abs_diff_by_output"] = diffs
        entry["vs_reference"] = block


def peak_notes(report: dict) -> list[str]:
    """A warning when a stage ran faster than the measured peak allows: the peak run was
    disturbed (a shared CPU, frequency changes), so the % of peak figures are too high."""
    over = [(name, stage, block["fraction_of_peak"])
            for name, entry in report["backends"].items()
            for stage, block in [*entry.get("flops", {}).get("stages", {}).items(),
                                 ("total", entry.get("flops", {}).get("total") or {})]
            if (block.get("fraction_of_peak") or 0) > 1.0]
    if not over:
        return []
    name, stage, frac = max(over, key=lambda x: x[2])
    return [f"{len(over)} rate(s) exceed the measured fp32 peak (up to {100 * frac:.0f} %, "
            f"{name} {stage}): the peak measurement was disturbed (other processes used "
            f"{report['environment'].get('other_cpu_cores', '?')} cores), so read % of peak as "
            "relative only, or rerun on an idle machine"]


def profile_model(preset: str | None = None, checkpoint: str | None = None,
                  backends=None, device: str | None = None, warmup: int = 10,
                  iterations: int = 100, threads: int | None = None,
                  target_fps: float = DEFAULT_TARGET_FPS, progress=print) -> dict:
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
    if threads is not None and threads < 1:
        raise JsaError(f"--threads {threads}: give a thread count of 1 or more (or leave it out)")
    if not (math.isfinite(target_fps) and target_fps > 0):
        raise JsaError(f"--target-fps {target_fps:g}: give a frame rate above 0, e.g. 30")
    names = list(backends or ALL_BACKENDS)
    unknown = [n for n in names if n not in (*ALL_BACKENDS, "auto")]
    if unknown:
        raise JsaError(f"unknown backend {', '.join(map(repr, unknown))} in --backends; "
                       f"choose from {', '.join(ALL_BACKENDS)}")
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
    except ImportError:
        torch = None
    device = device or ("cuda" if torch is not None and torch.cuda.is_available() else "cpu")

    contention = CpuContention()
    report = profiling.new_report("model", environment(), {
        "preset": preset, "checkpoint": checkpoint, "device": device, "warmup": warmup,
        "iterations": iterations, "threads": torch.get_num_threads() if torch else threads,
        "backends_requested": names, "target_fps": float(target_fps),
        "frame_budget_ms": 1000.0 / target_fps,
        "inputs": "random uint8 frame, 0.1 x Gaussian-noise waveform (seed 0)"})
    with tempfile.TemporaryDirectory(prefix="jsa-profile-") as workdir:
        run = Run(preset, checkpoint, device, warmup, iterations, threads, workdir, progress)
        model = flops = None
        torch_stages: dict = {}
        outputs: dict = {}
        if torch is not None:
            from . import torch_stages as pt
            progress(f"measuring the fp32 matmul peak on {device}")
            report["peak"] = pt.matmul_peak(device)
            model = _torch_model(run)
        if model is not None:
            report["settings"]["preset"] = model.cfg.preset
            flops = pt.model_flops(model, *synthetic_inputs(model.cfg), device)
            if "torch" in names:
                torch_stages = _torch_stage_samples(model, run)
        peak_gflops = report["peak"]["fp32_gflops"] if "peak" in report else None
        for name in names:
            progress(f"backend {name}")
            try:
                entry = _measure(name, run, model, torch_stages)
            except JsaError as e:
                report["skipped"][name] = str(e)
                progress(f"  skipped: {e}")
                continue
            outputs[name] = entry.pop("outputs", None)
            if flops:
                entry["flops"] = _flops_block(flops, entry, peak_gflops)
            report["backends"][name] = entry
            progress(f"  total p50 {entry['total']['p50_ms']:.2f} ms, "
                     f"p99 {entry['total']['p99_ms']:.2f} ms")
    against_reference(report, outputs)
    report["notes"] = [FLOPS_NOTE] if flops else []
    report = profiling.finish_report(report, contention)
    report["notes"] += peak_notes(report)
    return report
