"""From 7x7 attention maps to the 224x224 localisation heatmap (method.md section 5)."""
import functools

import numpy as np
import torch


def min_max(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Normalise each (H, W) map of a (B, H, W) batch to [0, 1]."""
    flat = x.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(x)


@functools.lru_cache(maxsize=8)
def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bicubic resampling, as PyTorch computes it (A = -0.75,
    align_corners False, border indices clamped). numpy, so no tensor outlives a trace."""
    a = -0.75

    def cubic(x):      # Keys' kernel
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0

    weights = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        base = int(np.floor(src))
        t = src - base
        for offset in range(-1, 3):
            weights[i, min(max(base + offset, 0), n_in - 1)] += cubic(offset - t)
    weights.setflags(write=False)
    return weights


def bicubic_matrix(grid: int, size: int, dtype=torch.float32) -> torch.Tensor:
    """The (size, grid) upsampling matrix as a CPU tensor; models keep it as a buffer, so it
    moves with `.to(device)` and no host copy happens inside a CUDA graph or a trace."""
    return torch.tensor(_bicubic_matrix(grid, size), dtype=dtype)


@functools.lru_cache(maxsize=8)
def _smoothing_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) 1-D Gaussian smoothing of a map's rows, normalised per output position over the
    positions that exist (zero padding, renormalised): a map's border is not pulled towards 0."""
    if sigma <= 0:
        return np.eye(n)
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2) * (np.abs(d) <= int(np.ceil(2 * sigma)))
    return g / g.sum(axis=1, keepdims=True)


def upsample_matrix(grid: int, size: int, smoothing: float = 0.0, dtype=torch.float32) -> torch.Tensor:
    """The (size, grid) matrix that smooths a (grid x grid) map (`smoothing`: Gaussian sigma in
    tokens) and upsamples it bicubically, both linear and separable, so one matrix does both."""
    return torch.tensor(_bicubic_matrix(grid, size) @ _smoothing_matrix(grid, float(smoothing)), dtype=dtype)


def upsample(maps: torch.Tensor, size: int, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """(B, g, g) -> (B, size, size), bicubic, align_corners False (and smoothed first when the
    model's `matrix` says so: upsample_matrix).

    Bicubic resampling is separable and linear, so it is two small matmuls with a fixed
    (size x g) matrix: the same numbers as F.interpolate, and several times faster in
    onnxruntime / TensorRT than a Resize node."""
    if matrix is None or matrix.shape[1] != maps.shape[-1]:     # e.g. OGL's object map on another grid
        matrix = bicubic_matrix(maps.shape[-1], size, maps.dtype)
    w = matrix.to(device=maps.device, dtype=maps.dtype)
    return torch.matmul(torch.matmul(w, maps), w.T)


def fuse(primary: torch.Tensor, prior: torch.Tensor, alpha: float, size: int,
         matrix: torch.Tensor | None = None) -> torch.Tensor:
    """IQR (prior = IMG map) or OGL (prior = object map): norm(alpha*AUD + (1-alpha)*prior),
    each upsampled and min-max normalised first."""
    a = min_max(upsample(primary, size, matrix))
    b = min_max(upsample(prior, size, matrix))
    return min_max(alpha * a + (1 - alpha) * b)


def object_prior(layer4: torch.Tensor) -> torch.Tensor:
    """OGL's object map: channel-mean |layer4| of an ImageNet ResNet-18, (B,C,g,g) -> (B,g,g)."""
    return layer4.abs().mean(dim=1)
