"""PyTorch backend: the model itself (eager), CPU or CUDA. The only backend that imports torch.

It runs the same raw-in wrappers the ONNX graphs are exported from (export/wrappers.py), so
its numbers are the reference the other backends are compared with. On CUDA it can use the
fused Triton kernels (kernels="triton"; "auto" uses them where they can run, model/slot_kernels.py)
and replay the visual branch as a CUDA graph (cuda_graph=True: static input buffers, one launch
per frame).
"""
from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model=None, preset: str | None = None, device: str | None = None,
                 kernels: str = "auto", cuda_graph: bool = False, threads: int | None = None):
        import torch
        from ..model import wrappers
        from ..model.slot_kernels import use_kernels
        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceError("torch sees no CUDA GPU: use --device cpu (or check the driver with nvidia-smi)")
        self.device = device
        if threads:
            torch.set_num_threads(threads)
        self.model = self._load(model, preset).to(device).eval()
        step = use_kernels(self.model, kernels)          # once, for the device the model now lives on
        self.kernels = step.name if step is not None else "n/a"      # what "auto" chose
        self.config = self.model.cfg
        self.full = wrappers.RawLocalizer(self.model).to(device).eval()
        self.audio = wrappers.RawAudioBranch(self.model).to(device).eval()
        self.visual = wrappers.RawVisualBranch(self.model).to(device).eval()
        self._graph = None
        self.cuda_graph = cuda_graph and device == "cuda"

    @staticmethod
    def _load(model, preset):
        if model is not None and not isinstance(model, (str, bytes)) and hasattr(model, "localize"):
            return model                                 # an nn.Module already
        if model is None and preset is not None:
            from ..model import random_model
            return random_model(preset)
        from ..model.checkpoint import load_checkpoint
        return load_checkpoint(model, device="cpu")[0]

    def _tensors(self, *arrays):
        return [self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]

    @staticmethod
    def _numpy(names, outputs) -> dict:
        return {n: o.detach().float().cpu().numpy() for n, o in zip(names, outputs)}

    def _run_full(self, frame, wave):
        from ..model.wrappers import MAP_OUTPUTS
        with self.torch.inference_mode():
            return self._numpy(MAP_OUTPUTS, self.full(*self._tensors(frame, wave)))

    def _run_audio(self, wave):
        from ..model.wrappers import AUDIO_OUTPUTS
        with self.torch.inference_mode():
            query, slot = self.audio(*self._tensors(wave))
        return {AUDIO_OUTPUTS[0]: query, AUDIO_OUTPUTS[1]: slot}      # stays on the device

    def _run_visual(self, frame, state):
        from ..model.wrappers import MAP_OUTPUTS
        frame_t, = self._tensors(frame)
        query, slot = _as_tensor(self, state["audio_query"]), _as_tensor(self, state["audio_slot"])
        if self.cuda_graph:
            return self._numpy(MAP_OUTPUTS, self._replay(frame_t, query, slot))
        with self.torch.inference_mode():
            return self._numpy(MAP_OUTPUTS, self.visual(frame_t, query, slot))

    # ---- CUDA graph replay of the visual branch --------------------------------------------------
    def _replay(self, frame, query, slot):
        torch = self.torch
        if self._graph is None:
            self._static_in = [frame.clone(), query.clone(), slot.clone()]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):                                  # warm-up (autotuning, allocator)
                    self.visual(*self._static_in)
            torch.cuda.current_stream().wait_stream(stream)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph), torch.inference_mode():
                self._static_out = self.visual(*self._static_in)
        for dst, src in zip(self._static_in, (frame, query, slot)):
            dst.copy_(src)
        self._graph.replay()
        return self._static_out

    def describe(self) -> str:
        extra = ", CUDA graph" if self.cuda_graph else ""
        return f"torch ({self.device}, kernels {self.kernels}{extra}, preset {self.config.preset})"

    def close(self):
        self._graph = None


def _as_tensor(backend, value):
    if isinstance(value, np.ndarray):
        return backend.torch.from_numpy(value).to(backend.device)
    return value.to(backend.device)
