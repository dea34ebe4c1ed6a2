"""The fastest PyTorch path on a GPU: Triton slot-attention kernels, replayed as CUDA graphs.

`total` = copy the uint8 frame and waveform in, replay one graph of (normalise + localize),
copy the heatmap out: what an application pays per frame. Stages are the same six stages as
eager torch, each captured as its own graph and timed with CUDA events.
Needs a CUDA GPU and jsa_rt.kernels; raises JsaError (reported as skipped) otherwise.
"""
from __future__ import annotations

import torch

from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..errors import JsaError
from . import profiling
from . import profiling_torch as pt
from .profiling_model import synthetic_inputs, time_host


def _capture(fn, warmup: int = 3) -> torch.cuda.CUDAGraph:
    """Warm `fn` up on a side stream (as CUDA graphs require), then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _whole_call(model, frame, audio, device, warmup, iterations) -> list[float]:
    host_frame = torch.from_numpy(frame).pin_memory()
    host_audio = torch.from_numpy(audio).pin_memory()
    dev_frame = torch.empty(host_frame.shape, dtype=torch.uint8, device=device)
    dev_audio = torch.empty(host_audio.shape, dtype=torch.float32, device=device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = {}

    def forward():
        images = (dev_frame.permute(2, 0, 1).unsqueeze(0).float() / 255.0 - mean) / std
        out.update(model.localize(images.contiguous(), dev_audio.unsqueeze(0)))

    graph = _capture(forward)

    def call():
        dev_frame.copy_(host_frame, non_blocking=True)
        dev_audio.copy_(host_audio, non_blocking=True)
        graph.replay()
        out["heatmap"].cpu()        # waits for the GPU, as an application would

    return time_host(call, warmup, iterations)


def profile_triton_graphs(model, device: str, warmup: int, iterations: int) -> dict:
    if model is None or not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise JsaError("torch-triton-graphs needs a CUDA GPU (Triton kernels + CUDA graphs); "
                       "run on an NVIDIA machine with --device cuda")
    try:
        from ..kernels import gru_update, slot_attention_step  # noqa: F401  (availability)
    except ImportError as e:
        raise JsaError(f"torch-triton-graphs needs the Triton kernels ({e}); "
                       "pip install 'jsa-rt[kernels]'") from None
    frame, audio = synthetic_inputs(model.cfg)
    model.slots.set_kernels("triton")
    try:
        with torch.inference_mode():
            total = _whole_call(model, frame, audio, device, warmup, iterations)
            images, wave = pt.model_inputs(frame, audio, device)
            plan, _ = pt.stage_plan(model, images, wave)
            graphs = []
            for name, fn in plan:      # capture in order: each stage reads the previous outputs
                graphs.append((name, _capture(fn).replay))
        stages = pt.time_stages(graphs, warmup, iterations, device)
    finally:
        model.slots.set_kernels("torch")
    return profiling.backend_entry(
        total, stages, device=device,
        timer="total: perf_counter around copy-in + graph replay + heatmap copy-out; "
              "stages: CUDA events around per-stage graph replays")
