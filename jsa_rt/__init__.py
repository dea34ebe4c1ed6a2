"""jsa-rt: real-time sound source localization with Joint Slot Attention (CVPR 2025).

Subpackages: `model` (PyTorch JSA and EZ-VSL), `train` (data, training, evaluation),
`export` (ONNX, TensorRT engines), `runtime` (backends behind one interface), `live`
(capture, pipeline, rendering), `kernels` (Triton kernels). Importing `jsa_rt` imports no torch.
"""
__version__ = "0.1.0"
