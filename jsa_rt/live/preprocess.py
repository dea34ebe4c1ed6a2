"""Camera frame -> the model's square RGB input, and the way back for drawing.

`resize` squeezes the whole frame into the square (nothing is lost; shapes stretch a little, as
at evaluation). `center` crops the largest centred square first (no distortion; the edges are
not seen). Either way the returned `view` box says where the model's square lies in the frame,
in [0, 1] coordinates, so maps can be drawn back onto the full frame.
"""
from __future__ import annotations

import math

import numpy as np

CROP_MODES = ("resize", "center")


def model_input(bgr: np.ndarray, size: int, mode: str = "resize") -> tuple[np.ndarray, tuple]:
    """BGR uint8 (H, W, 3) -> (RGB uint8 (size, size, 3), view (x0, y0, x1, y1) in [0, 1])."""
    import cv2
    h, w = bgr.shape[:2]
    view = (0.0, 0.0, 1.0, 1.0)
    if mode == "center" and h != w:
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        bgr = bgr[y0:y0 + side, x0:x0 + side]
        view = (x0 / w, y0 / h, (x0 + side) / w, (y0 + side) / h)
    elif mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROP_MODES}")
    if bgr.shape[0] != size or bgr.shape[1] != size:
        shrinking = bgr.shape[0] > size
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), view


def to_frame_xy(x: float, y: float, view: tuple) -> tuple[float, float]:
    """A point in the model square ([0, 1]) -> the same point in full-frame [0, 1] coordinates."""
    x0, y0, x1, y1 = view
    return x0 + x * (x1 - x0), y0 + y * (y1 - y0)


def bearing_deg(x: float, y: float, hfov_deg: float, width: int, height: int) -> tuple[float, float]:
    """A full-frame point ([0, 1] coordinates) -> (azimuth, elevation) in degrees from the optical
    axis, for a pinhole camera with this horizontal field of view and square pixels: azimuth
    positive to the right, elevation positive up. What a robot turns its head by."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {hfov_deg}")
    half = math.tan(math.radians(hfov_deg) / 2)
    ray_x = (x - 0.5) * 2 * half                       # the ray (ray_x, ray_y, 1), focal length 1
    ray_y = (y - 0.5) * 2 * half * height / width
    return math.degrees(math.atan(ray_x)), math.degrees(math.atan2(-ray_y, math.hypot(1.0, ray_x)))
