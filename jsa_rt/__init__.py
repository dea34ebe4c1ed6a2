"""jsa-rt: real-time sound source localization with Joint Slot Attention (CVPR 2025).

Subpackages, from the bottom up: `kernels` (Triton kernels: the model's fast path), `model`
(PyTorch JSA and EZ-VSL), `train` (data, training, evaluation), `runtime` (backends behind one
interface, engine reading), `export` (ONNX, TensorRT engines, Triton model repository), `live`
(capture, pipeline, rendering), `profile` (latency reports). Importing `jsa_rt` imports no torch.

In your own loop: `jsa_rt.SoundLocator` (frames and audio in, where the sound is out; see
jsa_rt/live/locator.py).
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import jsa_rt` stays cheap (no numpy, OpenCV or backends until used).
    if name == "SoundLocator":
        from .live.locator import SoundLocator
        return SoundLocator
    raise AttributeError(f"module 'jsa_rt' has no attribute {name!r}")
