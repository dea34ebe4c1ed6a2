"""The running side of FakeTensorRT (tests/fake_tensorrt.py), and a stand-in CUDA provider.

NOT TensorRT and NOT CUDA: FakeContext has the documented IExecutionContext calls jsa-rt makes
(set_input_shape, get_tensor_shape, set_tensor_address, execute_async_v3). It refuses input shapes
outside the plan's optimization profile (set_input_shape returns False, as TensorRT's does),
derives output shapes from the batch set on the inputs, and on execute runs the plan's ONNX graph
on onnxruntime, reading and writing the "device" buffers of FakeCuda, so tests can check what a
batch returns. Every call is recorded in the FakeTensorRT's `calls` with the calling thread.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np

DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT32": np.int32,
          "INT64": np.int64, "BOOL": np.bool_}
DEVICE: dict[int, np.ndarray] = {}          # "device pointer" -> its bytes
_POINTERS = itertools.count(0x10000, 0x1000)


class FakeCuda:
    """The cuda_mem provider interface on host memory; device pointers are keys of DEVICE."""
    name, gpu_name, compute_capability, stream_handle = "fake-cuda", "NVIDIA Fake GPU", "9.0", 7

    def __init__(self):
        self.closed, self.threads = False, set()

    def _seen(self):
        self.threads.add(threading.get_ident())

    def alloc_device(self, nbytes):
        self._seen()
        pointer = next(_POINTERS)
        DEVICE[pointer] = np.zeros(max(int(nbytes), 1), np.uint8)
        return pointer

    def alloc_host(self, shape, dtype):
        self._seen()
        return np.zeros(shape, dtype)

    def h2d(self, dst, src):
        self._seen()
        DEVICE[dst][:src.nbytes] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)

    def d2h(self, dst, src):
        self._seen()
        dst.reshape(-1).view(np.uint8)[:] = DEVICE[src][:dst.nbytes]

    def synchronize(self):
        self._seen()

    def close(self):
        self._seen()
        self.closed = True


class FakeContext:
    def __init__(self, fake, engine):
        self.fake, self.desc = fake, engine.desc
        self.specs = {t["name"]: t for t in self.desc["inputs"] + self.desc["outputs"]}
        self.input_names = [t["name"] for t in self.desc["inputs"]]
        self.shapes, self.addresses, self.session = {}, {}, None

    def _record(self, *call):
        self.fake.calls.append(call + (threading.get_ident(),))

    def set_input_shape(self, name, shape):
        shape = tuple(int(d) for d in shape)
        self._record("context.set_input_shape", name, shape)
        dims = self.specs[name]["shape"]
        low, _, high = (self.desc["profiles"] or [{}])[0].get(name, (dims, dims, dims))
        if len(shape) != len(dims) or not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        dims = self.specs[name]["shape"]
        batches = {s[0] for n, s in self.shapes.items() if self.specs[n]["shape"][0] < 0}
        if name in self.input_names or len(self.shapes) < len(self.input_names) or len(batches) != 1:
            return tuple(dims)                     # not derivable yet: -1 where dynamic
        return tuple(batches.pop() if d < 0 else d for d in dims)

    def set_tensor_address(self, name, pointer):
        self._record("context.set_tensor_address", name)
        self.addresses[name] = pointer
        return True

    def _array(self, name, shape):
        dtype = np.dtype(DTYPES[self.specs[name]["dtype"]])
        return DEVICE[self.addresses[name]][:int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)

    def execute_async_v3(self, stream):
        self._record("context.execute_async_v3", stream)
        outputs = [t["name"] for t in self.desc["outputs"]]
        if set(self.shapes) != set(self.input_names) or set(self.addresses) != set(self.specs):
            return False
        if self.session is None:
            import onnxruntime as ort
            self.session = ort.InferenceSession(self.desc["onnx"], providers=["CPUExecutionProvider"])
        feeds = {n: self._array(n, self.shapes[n]).copy() for n in self.input_names}
        for name, value in zip(outputs, self.session.run(outputs, feeds)):
            target = self._array(name, self.get_tensor_shape(name))
            assert target.shape == value.shape, (name, target.shape, value.shape)
            target[...] = value
        return True
