"""Heatmap-over-image pictures (numpy + OpenCV, no torch): shared by localize, eval and live."""
from __future__ import annotations

import numpy as np


def overlay_heatmap(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 (H,W,3) + heatmap in [0,1] (any size) -> RGB uint8 with a JET overlay."""
    import cv2
    h, w = rgb.shape[:2]
    heat = cv2.resize(np.clip(heatmap, 0, 1).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (rgb.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)


def peak_xy(heatmap: np.ndarray) -> tuple[float, float]:
    """Peak position as (x, y) in [0, 1] image coordinates (pixel centres)."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return (x + 0.5) / heatmap.shape[1], (y + 0.5) / heatmap.shape[0]
