"""Torch-side measurements for model mode: per-stage timing, FLOPs, and the fp32 matmul peak.

The stage plan splits "uint8 frame + waveform -> heatmap" into the stages of
profiling.MODEL_STAGES: preprocess (what the exported graph does to the frame), audio front end,
audio encoder, image encoder, slot attention, maps (sharpened attention maps, target slots,
confidence) and upsampling (bicubic, min-max, IQR blend). It calls the model's own submodules in
the order `JSA.localize` does; `check_stage_plan` proves on every run that chaining the stages
reproduces `localize`, so the split cannot silently drift from the model.
Imported only on the torch path (it imports torch at the top).
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from ..model import maps as model_maps
from .env import numpy_matmul_gflops
from .ort_stages import ort_matmul_gflops


# ---- inputs --------------------------------------------------------------------------------
def model_inputs(frame: np.ndarray, audio: np.ndarray, device: str):
    """uint8 (S,S,3) RGB frame and float32 waveform -> (1,S,S,3) uint8 and (1,L) float tensors."""
    frame_t = torch.from_numpy(np.ascontiguousarray(frame)).to(device).unsqueeze(0)
    wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(device).unsqueeze(0)
    return frame_t, wave


# ---- the stage plan ------------------------------------------------------------------------
def stage_plan(model, frame_t, wave) -> tuple[list[tuple[str, callable]], dict]:
    """[(stage, fn)] that, run in order, compute `model.localize` of the raw inputs into `ctx`."""
    cfg: ModelConfig = model.cfg
    slots = model.slots
    ctx: dict = {}

    def preprocess_frame():
        ctx["images"] = model.preprocess_frames(frame_t)

    def audio_frontend():
        ctx["spec"] = model.frontend(wave)

    def audio_encoder():
        ctx["audio_tokens"] = model.audio_encoder(ctx["spec"])

    def image_encoder():
        ctx["image_tokens"] = model.image_encoder(ctx["images"])

    def slot_attention():   # both loops, as localize runs them (jointly with Triton on CUDA)
        ctx["img_state"], ctx["aud_state"] = slots.both(ctx["image_tokens"], ctx["audio_tokens"])

    def maps_fusion():      # the gamma-sharpened 7x7 maps, the normalised target slots, confidence
        aud = ctx["aud_state"]
        ctx.update(model.target_maps(ctx["img_state"], aud.query, F.normalize(aud.slots[:, 0], dim=-1)))

    def upsample():         # bicubic to image size, min-max, IQR blend
        ctx["heatmap"] = model_maps.fuse(ctx["aud"], ctx["img"], cfg.iqr_alpha, cfg.image_size,
                                         model.upsample_matrix)

    plan = [("preprocess", preprocess_frame), ("audio_frontend", audio_frontend), ("audio_encoder", audio_encoder),
            ("image_encoder", image_encoder), ("slot_attention", slot_attention),
            ("maps_fusion", maps_fusion), ("upsample", upsample)]
    return plan, ctx


@torch.inference_mode()
def check_stage_plan(model, frame_t, wave, atol: float = 1e-5) -> float:
    """Run the plan and `localize`; return the max heatmap difference, raise if they disagree."""
    plan, ctx = stage_plan(model, frame_t, wave)
    for _, fn in plan:
        fn()
    reference = model.localize(model.preprocess_frames(frame_t), wave)
    diff = float((ctx["heatmap"] - reference["heatmap"]).abs().max())
    diff = max(diff, float((ctx["confidence"] - reference["confidence"]).abs().max()))
    if not diff <= atol:
        raise RuntimeError(f"profiling stage plan differs from model.localize by {diff:.3g}; "
                           "update jsa_rt/profile/torch_stages.stage_plan to match the model")
    return diff


# ---- timing --------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, warmup: int, iterations: int, device: str) -> list[float]:
    """Latency of `fn()` in ms, one sample per call; CUDA events on GPU, perf_counter on CPU."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        _sync(device)
        samples = []
        cuda = device.startswith("cuda")
        for _ in range(iterations):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def time_stages(plan, warmup: int, iterations: int, device: str) -> dict[str, list[float]]:
    """Run the whole chain each iteration and time every stage inside it (realistic caches).

    On GPU, events mark the stage boundaries and the host waits once per iteration, so the
    stage times are GPU times without extra synchronisation between stages.
    """
    samples = {name: [] for name, _ in plan}
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        for _ in range(warmup):
            for _, fn in plan:
                fn()
        _sync(device)
        for _ in range(iterations):
            if cuda:
                events = [torch.cuda.Event(enable_timing=True) for _ in range(len(plan) + 1)]
                events[0].record()
                for (_, fn), ev in zip(plan, events[1:]):
                    fn()
                    ev.record()
                events[-1].synchronize()
                for i, (name, _) in enumerate(plan):
                    samples[name].append(events[i].elapsed_time(events[i + 1]))
            else:
                t_prev = time.perf_counter()
                for name, fn in plan:
                    fn()
                    now = time.perf_counter()
                    samples[name].append((now - t_prev) * 1e3)
                    t_prev = now
    return samples


# ---- FLOPs ---------------------------------------------------------------------------------
def count_flops(fn) -> int:
    """Matmul and convolution FLOPs of one call (torch's FlopCounterMode; elementwise ops,
    norms and softmax are not counted, so this is a lower bound on the work)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def model_flops(model, frame, audio, device) -> dict[str, int]:
    """FLOPs of each stage, of the whole forward and of the two branches."""
    frame_t, wave = model_inputs(frame, audio, device)
    images = model.preprocess_frames(frame_t)
    plan, _ = stage_plan(model, frame_t, wave)
    flops = {name: count_flops(fn) for name, fn in plan}
    flops["forward"] = count_flops(lambda: model.localize(images, wave))
    flops["audio_branch"] = count_flops(lambda: model.audio_branch(wave))
    with torch.inference_mode():
        branch = model.audio_branch(wave)
    flops["visual_branch"] = count_flops(lambda: model.visual_branch(images, **branch))
    return flops


# ---- the machine's measured peak -----------------------------------------------------------
def _torch_gemm_gflops(n: int, repeats: int, device: str) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best_ms = min(time_call(lambda: torch.mm(a, b), warmup=2, iterations=repeats, device=device))
    return 2.0 * n ** 3 / (best_ms * 1e-3) / 1e9


def matmul_peak(device: str, size: int | None = None, repeats: int = 10) -> dict:
    """The machine's fp32 GEMM throughput in GFLOP/s, measured now: the physical limit that
    achieved rates are read against. On CPU with every core (torch.mm and numpy, the best), and
    with one thread for reference; on GPU with TF32 off (fp32 counted as fp32)."""
    if device.startswith("cuda"):
        n = size or 8192
        old_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            gflops = _torch_gemm_gflops(n, repeats, device)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
        return {"fp32_gflops": gflops, "torch_gflops": gflops, "size": n, "device": device,
                "method": f"best of {repeats} fp32 {n}x{n} torch.mm, TF32 off"}
    n = size or 1024
    threads_now, cores = torch.get_num_threads(), os.cpu_count() or 1
    by_threads = {}
    try:
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            by_threads[threads] = {"torch": _torch_gemm_gflops(n, repeats, device),
                                   "numpy": numpy_matmul_gflops(n, repeats, threads),
                                   "onnxruntime": ort_matmul_gflops(n, repeats, threads)}
    finally:
        torch.set_num_threads(threads_now)
    best = {t: max(g or 0.0 for g in v.values()) for t, v in by_threads.items()}
    # On a shared machine the all-core run can lose to one thread: the limit is the best seen.
    return {"fp32_gflops": max(best.values()), "single_thread_gflops": best[1], "threads": cores,
            "size": n, "device": device, "by_threads": {str(t): v for t, v in by_threads.items()},
            "method": f"best of {repeats} fp32 {n}x{n} GEMMs (torch, numpy, onnxruntime) on all "
                      f"{cores} cores; single thread {best[1]:.1f} GFLOP/s"}


