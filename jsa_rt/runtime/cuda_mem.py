"""Just enough CUDA for the TensorRT backend: pinned host buffers, device buffers, one stream,
copies, and optional CUDA-graph capture. Three providers, tried in this order:

  pycuda       (Jetson users build it against JetPack's CUDA; uses the device's *primary*
                context, the one the CUDA runtime and TensorRT also use)
  cuda-python  (`cuda.bindings.runtime`, or `cuda.cudart` in older releases; primary context)
  torch        (last resort: only when neither is installed; the one path here that imports torch)

All CUDA work must happen on the thread that opened the provider (contexts are per thread).
Never verified on a GPU from the machines jsa-rt is developed on: keep this thin.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ..errors import DeviceError

PROVIDERS = ("pycuda", "cuda-python", "torch")


class _Provider:
    name = "?"
    gpu_name = "?"
    compute_capability = "0.0"

    # device memory -> int pointer; pinned host memory -> numpy array
    def alloc_device(self, nbytes: int) -> int: raise NotImplementedError
    def alloc_host(self, shape, dtype) -> np.ndarray: raise NotImplementedError
    def h2d(self, dst: int, src: np.ndarray) -> None: raise NotImplementedError
    def d2h(self, dst: np.ndarray, src: int) -> None: raise NotImplementedError
    def synchronize(self) -> None: raise NotImplementedError
    stream_handle: int = 0

    # CUDA graphs go through the runtime API (cuda-python) on whatever stream we hold
    def begin_capture(self) -> None:
        rt = _cudart()
        _ok(rt.cudaStreamBeginCapture(self.stream_handle,
                                      rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))

    def end_capture(self):
        rt = _cudart()
        graph = _ok(rt.cudaStreamEndCapture(self.stream_handle))
        return _ok(rt.cudaGraphInstantiate(graph, 0))

    def launch_graph(self, graph_exec) -> None:
        _ok(_cudart().cudaGraphLaunch(graph_exec, self.stream_handle))

    def close(self) -> None:
        pass


# ---- cuda-python ----------------------------------------------------------------------------
def _cudart():
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt      # cuda-python < 12.6
        except ImportError:
            raise DeviceError("CUDA graphs need cuda-python (pip install cuda-python); or load the "
                              "backend with cuda_graph=False") from None
    return rt


def _ok(result):
    """cuda-python calls return (err, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise DeviceError(f"CUDA error {err!s}: check the driver and that a GPU is visible "
                          f"(nvidia-smi / tegrastats)")
    return values[0] if len(values) == 1 else tuple(values) or None


class CudaPython(_Provider):
    name = "cuda-python"

    def __init__(self):
        rt = _cudart()
        self.rt = rt
        props = _ok(rt.cudaGetDeviceProperties(0))
        raw = props.name
        self.gpu_name = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).rstrip("\x00")
        self.compute_capability = f"{props.major}.{props.minor}"
        self.stream = _ok(rt.cudaStreamCreate())
        self.stream_handle = int(self.stream)
        self._device, self._host = [], []

    def alloc_device(self, nbytes):
        ptr = _ok(self.rt.cudaMalloc(max(int(nbytes), 1)))
        self._device.append(ptr)
        return int(ptr)

    def alloc_host(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = _ok(self.rt.cudaMallocHost(nbytes))
        self._host.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def h2d(self, dst, src):
        _ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                    self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, dst, src):
        _ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                    self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def synchronize(self):
        _ok(self.rt.cudaStreamSynchronize(self.stream))

    def close(self):
        for ptr in self._device:
            self.rt.cudaFree(ptr)
        for ptr in self._host:
            self.rt.cudaFreeHost(ptr)
        self._device, self._host = [], []
        self.rt.cudaStreamDestroy(self.stream)


# ---- pycuda ---------------------------------------------------------------------------------
class PyCuda(_Provider):
    name = "pycuda"

    def __init__(self):
        import pycuda.driver as cuda
        cuda.init()
        self.cuda = cuda
        dev = cuda.Device(0)
        # the primary context: shared with the CUDA runtime (TensorRT, cuda-python)
        self.ctx = dev.retain_primary_context()
        self.ctx.push()
        self.gpu_name = dev.name()
        major, minor = dev.compute_capability()
        self.compute_capability = f"{major}.{minor}"
        self.stream = cuda.Stream()
        self.stream_handle = int(self.stream.handle)
        self._keep = []

    def alloc_device(self, nbytes):
        mem = self.cuda.mem_alloc(max(int(nbytes), 1))
        self._keep.append(mem)
        return int(mem)

    def alloc_host(self, shape, dtype):
        return self.cuda.pagelocked_empty(shape, dtype)

    def h2d(self, dst, src):
        self.cuda.memcpy_htod_async(dst, src, self.stream)

    def d2h(self, dst, src):
        self.cuda.memcpy_dtoh_async(dst, src, self.stream)

    def synchronize(self):
        self.stream.synchronize()

    def close(self):
        self._keep = []
        self.ctx.pop()


# ---- torch (last resort) ---------------------------------------------------------------------
class TorchCuda(_Provider):
    name = "torch"

    def __init__(self):
        import torch
        if not torch.cuda.is_available():
            raise DeviceError("torch sees no CUDA GPU")
        self.torch = torch
        props = torch.cuda.get_device_properties(0)
        self.gpu_name = props.name
        self.compute_capability = f"{props.major}.{props.minor}"
        self.stream = torch.cuda.Stream()
        self.stream_handle = int(self.stream.cuda_stream)
        self._device, self._keep = {}, []

    def alloc_device(self, nbytes):
        t = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device="cuda")
        self._device[int(t.data_ptr())] = t
        return int(t.data_ptr())

    def alloc_host(self, shape, dtype):
        t = self.torch.empty(max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1),
                             dtype=self.torch.uint8).pin_memory()
        self._keep.append(t)
        return t.numpy()[: int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def h2d(self, dst, src):
        host = self.torch.from_numpy(np.ascontiguousarray(src).reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            self._device[dst][: host.numel()].copy_(host, non_blocking=True)

    def d2h(self, dst, src):
        host = self.torch.from_numpy(dst.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            host.copy_(self._device[src][: host.numel()], non_blocking=True)

    def synchronize(self):
        self.stream.synchronize()


_CLASSES = {"pycuda": PyCuda, "cuda-python": CudaPython, "torch": TorchCuda}


def open_cuda(prefer: str | None = None) -> _Provider:
    """The first provider that initialises (or exactly `prefer`); one-line error otherwise."""
    order = (prefer,) if prefer else PROVIDERS
    reasons = []
    for name in order:
        try:
            return _CLASSES[name]()
        except ImportError:
            reasons.append(f"{name} not installed")
        except Exception as exc:           # driver missing, no GPU, ...
            reasons.append(f"{name}: {str(exc).splitlines()[0][:80]}")
    raise DeviceError("no usable CUDA for the TensorRT backend (" + "; ".join(reasons)
                      + "); install pycuda or cuda-python on a machine with an NVIDIA GPU and driver")


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability 'M.m') of device 0, for engine cache keys."""
    cuda = open_cuda()
    try:
        return cuda.gpu_name, cuda.compute_capability
    finally:
        cuda.close()
