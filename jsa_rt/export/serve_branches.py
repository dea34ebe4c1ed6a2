"""What `jsa-rt serve` binds to Triton: one exported graph called with whole batches (Branch), on
onnxruntime here (OrtBranch) or on a TensorRT engine (serve_trt.TrtBranch).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class Branch:
    """One exported graph, called with whole batches: `inputs` and `outputs` map names to (numpy
    type, dims after the batch axis); `meta` is the graph's jsa-rt metadata; `run` runs a batch."""
    inputs: dict
    outputs: dict
    meta: dict

    def run(self, feeds: dict) -> dict:
        raise NotImplementedError

    def __call__(self, **feeds) -> dict:
        out = self.run(feeds)
        # Triton needs at least one dim per sample: a per-sample scalar (confidence) goes out as (B, 1)
        return {n: a.reshape(len(a), -1) if a.ndim == 1 else a for n, a in out.items()}

    def tensors(self, kind: str):
        from pytriton.model_config import Tensor
        spec = self.inputs if kind == "inputs" else self.outputs
        return [Tensor(name=n, dtype=t, shape=tuple(-1 if not isinstance(d, int) else d for d in dims) or (1,))
                for n, (t, dims) in spec.items()]

    def close(self) -> None:
        pass


class OrtBranch(Branch):
    """One exported graph on onnxruntime."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort
        if not path.is_file():
            raise InputError(f"graph not found: {path}; export it with `jsa-rt export-onnx --dynamic-batch "
                             f"--graphs audio,visual`")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.meta = self.session.get_modelmeta().custom_metadata_map
        self.inputs = {i.name: (ORT_TYPES[i.type], i.shape[1:]) for i in self.session.get_inputs()}
        # outputs that only echo an input (the visual graph's audio_slot) stay home: the client has it
        self.outputs = {o.name: (ORT_TYPES[o.type], o.shape[1:]) for o in self.session.get_outputs()
                        if o.name not in self.inputs}
        fixed = [i.name for i in self.session.get_inputs() if isinstance(i.shape[0], int)]
        if fixed:
            raise InputError(f"{path.name}: input {fixed[0]} has a fixed batch size, so Triton cannot batch "
                             f"it; export with `jsa-rt export-onnx --dynamic-batch --graphs audio,visual`")

    def run(self, feeds: dict) -> dict:
        names = list(self.outputs)
        return dict(zip(names, self.session.run(names, feeds)))
