"""From the model's heatmap to what the user sees: smoothing, the no-source gate, overlay and HUD.

Acoustic cameras integrate over a persistence window of a few hundred milliseconds; we do the
same with an exponential moving average whose time constant is `--persistence-ms`, so the
overlay neither flickers nor lags by more than about that long.

Learned localizers draw a heatmap even for silence or an off-screen sound, so a frame is in the
"no source" state when the audio level is under `--min-level-db` or the model's confidence is
under `--min-confidence`; then no peak is reported and the stored map fades out.

A fixed level cannot tell a source from steady background noise louder than it (a fan, traffic,
air conditioning). `--noise-margin-db` adds a gate that follows the room: the level must also be
that many dB above the noise floor, the 10th percentile of the last 30 s of levels. What sounds
through more than 90 % of that window becomes the floor too, so the option is off by default.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, replace

import numpy as np

from ..config import ModelConfig
from .preprocess import to_frame_xy
from .where import Where

COLORMAPS = ("jet", "inferno", "turbo", "hot", "viridis")
METER_FLOOR_DB = -80.0
NOISE_FLOOR_WINDOW_S = 30.0      # the noise floor is a low percentile of this much recent level
NOISE_FLOOR_PERCENTILE = 10.0
NOISE_FLOOR_MIN_S = 2.0          # history needed before the floor is trusted (before: the fixed gate only)


@dataclass
class RenderOptions:
    persistence_ms: float = 250.0
    min_level_db: float = -50.0
    noise_margin_db: float | None = None  # None: the fixed level gate only (see the module docstring)
    min_confidence: float | None = None   # None: the model's own gate, stored in its checkpoint
    box_threshold: float = 0.5      # the box encloses the peak's region above this fraction of the peak
    alpha: float = 0.45
    colormap: str = "jet"
    show_hud: bool = True


class Localizer:
    """Temporal smoothing, gating, peak and box. Holds state between frames; one per stream."""

    def __init__(self, options: RenderOptions, model_gate: float = ModelConfig.no_source_confidence):
        """`model_gate`: the model's own no-source confidence, used unless options set one."""
        self.options = options
        self.model_gate = model_gate
        self._heat: np.ndarray | None = None
        self._t: float | None = None
        self._levels: collections.deque = collections.deque()     # (t, level_db), the last 30 s
        self.level_gate_db = options.min_level_db                 # the level gate now (for the HUD)

    @property
    def min_confidence(self) -> float:
        o = self.options
        return self.model_gate if o.min_confidence is None else o.min_confidence

    def _level_gate(self, level_db: float, t: float) -> float:
        """The level under which a frame is "quiet": --min-level-db, or with --noise-margin-db the
        recent noise floor plus the margin when that is higher."""
        margin = self.options.noise_margin_db
        if margin is None:
            return self.options.min_level_db
        if self._levels and t < self._levels[-1][0]:       # media time went back (a looped file)
            self._levels.clear()
        self._levels.append((t, level_db))
        while t - self._levels[0][0] > NOISE_FLOOR_WINDOW_S:
            self._levels.popleft()
        if t - self._levels[0][0] < NOISE_FLOOR_MIN_S:
            return self.options.min_level_db
        floor = float(np.percentile([lv for _, lv in self._levels], NOISE_FLOOR_PERCENTILE))
        return max(self.options.min_level_db, floor + margin)

    def _smooth(self, heat: np.ndarray, t: float) -> np.ndarray:
        tau = self.options.persistence_ms / 1000.0
        if self._heat is None or tau <= 0 or self._heat.shape != heat.shape:
            self._heat = heat.astype(np.float32, copy=True)
        else:
            dt = max(0.0, t - (self._t if self._t is not None else t))
            w = 1.0 - math.exp(-dt / tau) if dt > 0 else 0.0
            self._heat += np.float32(w) * (heat - self._heat)
        self._t = t
        return self._heat

    def update(self, raw: Where, t: float) -> Where:
        """`raw`, the step's answer (the model's own map), smoothed at time `t` (s) and gated.
        A raw answer that already has a reason (no server answered) stays "no source"."""
        o, heatmap, confidence, level_db = self.options, raw.heatmap, raw.confidence, raw.level_db
        # a non-finite map or confidence (a diverged model) is never shown, nor smoothed into later frames
        broken = not (math.isfinite(confidence) and math.isfinite(level_db) and math.isfinite(float(heatmap.sum(dtype=np.float64))))
        if math.isfinite(level_db):
            self.level_gate_db = self._level_gate(level_db, t)
        reason = raw.reason or ("non-finite model output" if broken else
                                "quiet" if level_db < self.level_gate_db else
                                "low confidence" if confidence < self.min_confidence else "")
        # In the no-source state the map decays towards zero at the persistence rate.
        target = np.zeros_like(heatmap, dtype=np.float32) if reason else heatmap.astype(np.float32)
        heat = self._smooth(target, t)
        gated = replace(raw, heatmap=heat, confidence=confidence if math.isfinite(confidence) else 0.0,
                        active=False, reason=reason or "empty map", peak=None, box=None)
        if reason or float(heat.max()) <= 1e-6:
            return gated
        peak_yx = np.unravel_index(int(np.argmax(heat)), heat.shape)
        s_h, s_w = heat.shape
        view = raw.view
        peak = to_frame_xy((peak_yx[1] + 0.5) / s_w, (peak_yx[0] + 0.5) / s_h, view)
        box = _region_box(heat, peak_yx, o.box_threshold)
        x0, y0 = to_frame_xy(box[0] / s_w, box[1] / s_h, view)
        x1, y1 = to_frame_xy(box[2] / s_w, box[3] / s_h, view)
        return replace(gated, active=True, reason="", peak=peak, box=(x0, y0, x1, y1))


def _region_box(heat: np.ndarray, peak_yx: tuple, fraction: float) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1; exclusive ends) of the connected region around the peak."""
    import cv2
    mask = (heat >= fraction * heat[peak_yx]).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    x, y, w, h = stats[labels[peak_yx], :4]
    return int(x), int(y), int(x + w), int(y + h)


# ---- drawing ------------------------------------------------------------------------------------
def _colormap_id(name: str) -> int:
    import cv2
    return getattr(cv2, f"COLORMAP_{name.upper()}")


def draw_localization(image: np.ndarray, loc: Where, options: RenderOptions) -> np.ndarray:
    """Overlay the smoothed heatmap, the peak and the box on a BGR frame (in place, returned)."""
    import cv2
    h, w = image.shape[:2]
    view = loc.view
    x0, y0 = int(round(view[0] * w)), int(round(view[1] * h))
    x1, y1 = int(round(view[2] * w)), int(round(view[3] * h))
    heat = loc.heatmap
    if float(heat.max()) > 0.02:
        region = image[y0:y1, x0:x1]
        heat_px = np.clip(cv2.resize(heat, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR), 0, 1)
        colour = cv2.applyColorMap(cv2.convertScaleAbs(heat_px, alpha=255), _colormap_id(options.colormap))
        # Weight by the map itself so cold regions keep the camera picture (blendLinear: one pass in C).
        a = heat_px * np.float32(options.alpha)
        region[:] = cv2.blendLinear(region, colour, 1 - a, a)
    if loc.active and loc.peak is not None:
        px, py = int(loc.peak[0] * w), int(loc.peak[1] * h)
        bx0, by0, bx1, by1 = loc.box
        cv2.rectangle(image, (int(bx0 * w), int(by0 * h)), (int(bx1 * w) - 1, int(by1 * h) - 1),
                      (255, 255, 255), 2)
        cv2.drawMarker(image, (px, py), (255, 255, 255), cv2.MARKER_CROSS, 24, 2)
        cv2.circle(image, (px, py), 6, (0, 0, 255), -1)
    return image


@dataclass
class HudInfo:
    """The run's figures the HUD shows next to the frame's answer."""
    fps: float
    latency_ms: float
    backend: str
    window_s: float
    dropped: int = 0
    overflows: int = 0
    min_level_db: float = -50.0


def draw_hud(image: np.ndarray, where: Where, info: HudInfo) -> np.ndarray:
    """Text lines top-left and a vertical audio level meter on the right edge (in place)."""
    import cv2
    h, w = image.shape[:2]
    scale = max(0.45, min(1.0, w / 1280))
    state = "" if where.active else where.reason
    lines = [f"{info.fps:5.1f} fps  {info.latency_ms:4.0f} ms  {info.backend}",
             f"audio {where.level_db:6.1f} dBFS  window {info.window_s:.1f} s  conf {where.confidence:.2f}"]
    if info.dropped or info.overflows:
        lines.append(f"dropped {info.dropped}  mic overflows {info.overflows}")
    if state:
        lines.append(f"NO SOURCE ({state})")
    line_h = int(round(34 * scale))
    # A darkened panel behind the text keeps it readable on any picture.
    text_w = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines)
    panel = image[0:line_h * len(lines) + line_h // 2, 0:min(w, text_w + 16)]
    panel[:] = (panel * 0.45).astype(np.uint8)
    for i, text in enumerate(lines):
        colour = (80, 80, 255) if text.startswith("NO SOURCE") else (255, 255, 255)
        cv2.putText(image, text, (8, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1,
                    cv2.LINE_AA)
    # Level meter: green bar from METER_FLOOR_DB to 0 dBFS, a tick at the gate threshold.
    mx0, mx1, my0, my1 = w - 18, w - 8, 10, h - 10
    cv2.rectangle(image, (mx0, my0), (mx1, my1), (40, 40, 40), -1)
    frac = np.clip((where.level_db - METER_FLOOR_DB) / -METER_FLOOR_DB, 0, 1)
    top = int(my1 - frac * (my1 - my0))
    cv2.rectangle(image, (mx0, top), (mx1, my1), (0, 200, 0) if not state else (0, 160, 200), -1)
    gate = np.clip((info.min_level_db - METER_FLOOR_DB) / -METER_FLOOR_DB, 0, 1)
    gy = int(my1 - gate * (my1 - my0))
    cv2.line(image, (mx0 - 4, gy), (mx1, gy), (0, 0, 255), 1)
    return image
