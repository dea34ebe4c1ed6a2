"""The fastest PyTorch path on a GPU: Triton slot-attention kernels, replayed as CUDA graphs.

`total` = copy the uint8 frame and waveform in, replay one graph of (normalise + localize),
copy the heatmap out: what an application pays per frame. Stages are the same model stages as
eager torch (torch_stages.stage_plan), each captured as its own graph and timed with CUDA events.
Needs a CUDA GPU and jsa_rt.kernels; raises JsaError (reported as skipped) otherwise.
"""
from __future__ import annotations

import torch

from ..errors import JsaError
from . import report as profiling
from . import torch_stages as pt
from .timing import synthetic_inputs, time_host


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
    host_frame = torch.from_numpy(frame).unsqueeze(0).pin_memory()
    host_audio = torch.from_numpy(audio).unsqueeze(0).pin_memory()
    dev_frame, dev_audio = pt.model_inputs(frame, audio, device)
    out = {}
    graph = _capture(lambda: out.update(model.localize(model.preprocess_frames(dev_frame), dev_audio)))

    def call():
        dev_frame.copy_(host_frame, non_blocking=True)
        dev_audio.copy_(host_audio, non_blocking=True)
        graph.replay()
        out["heatmap"].cpu()        # waits for the GPU, as an application would

    return time_host(call, warmup, iterations)


def profile_triton_graphs(model, device: str, warmup: int, iterations: int) -> dict:
    if model is None:
        raise JsaError("torch-triton-graphs needs a PyTorch model: give --preset or a .pt checkpoint")
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise JsaError("torch-triton-graphs needs a CUDA GPU (Triton kernels + CUDA graphs); "
                       "run on an NVIDIA machine with --device cuda")
    from .. import kernels
    if not kernels.triton_available(device):
        raise JsaError("torch-triton-graphs needs Triton and a GPU of compute capability >= 8.0; "
                       "pip install 'jsa-rt[kernels]'")
    from ..model.slot_kernels import use_kernels
    frame, audio = synthetic_inputs(model.cfg)
    before = model.slots.kernels
    use_kernels(model, "triton")
    try:
        with torch.inference_mode():
            total = _whole_call(model, frame, audio, device, warmup, iterations)
            frame_t, wave = pt.model_inputs(frame, audio, device)
            plan, _ = pt.stage_plan(model, frame_t, wave)
            graphs = []
            for name, fn in plan:      # capture in order: each stage reads the previous outputs
                graphs.append((name, _capture(fn).replay))
        stages = pt.time_stages(graphs, warmup, iterations, device)
    finally:
        use_kernels(model, before)
    return profiling.backend_entry(
        total, stages, device=device,
        timer="total: perf_counter around copy-in + graph replay + heatmap copy-out; "
              "stages: CUDA events around per-stage graph replays")
