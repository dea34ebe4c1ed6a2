"""What the demo clip is made of: finding the data, loading stamps and photos, looping sounds.

Used by the scene sources (demo_scenes.py); `find_stamp_root` also tells `jsa-rt doctor` whether
the stamps are there. Data: `--data`, else $JSA_DATA, else ../shared/data next to the repository,
else (stamps only) Debian's `tuxpaint-stamps-default` (/usr/share/tuxpaint/stamps).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio_io import load_audio
from ..errors import InputError
from ..paths import REPO_DATA, data_root

DEBIAN_STAMPS = Path("/usr/share/tuxpaint/stamps")
SOUND_DBFS = -20.0               # loudness of the looped recordings
MIN_STAMP_PX = 64


def data_roots(data: str | None) -> list[Path]:
    if data:                          # a folder named with --data is the only place to look
        return [Path(data)]
    return list(dict.fromkeys([data_root(), REPO_DATA]))     # $JSA_DATA first, then ../shared/data


def find_stamp_root(data: str | None) -> Path | None:
    """The folder whose subfolders (animals/, vehicles/, ...) hold the stamps."""
    for root in data_roots(data):
        for cand in (root / "tuxpaint-stamps" / "stamps", root / "stamps", root):
            if (cand / "animals").is_dir():
                return cand
    return DEBIAN_STAMPS if not data and (DEBIAN_STAMPS / "animals").is_dir() else None


def find_backgrounds(data: str | None) -> list[Path]:
    for root in data_roots(data):
        folder = root / "backgrounds"
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if found:
                return found
    return []


def scan(stamp_root: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(sounding (png, ogg) pairs, silent pngs); spoken digits (symbols/math) are left out."""
    sounding, silent = [], []
    for png in sorted(stamp_root.rglob("*.png")):
        if "math" in png.parts:
            continue
        ogg = png.with_suffix(".ogg")
        (sounding.append((png, ogg)) if ogg.is_file() else silent.append(png))
    return sounding, silent


# ---- pixels --------------------------------------------------------------------------------------
def load_stamp(path: Path, area: float, frame: tuple[int, int]) -> np.ndarray | None:
    """BGRA float32 in [0, 1], cropped to its alpha and scaled so its box covers `area` of the
    frame (never wider or taller than 90 % of it); None if unusable (no alpha, tiny)."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] != 4 or max(img.shape[:2]) < MIN_STAMP_PX:
        return None
    ys, xs = np.nonzero(img[..., 3] > 25)
    if ys.size < 100:
        return None
    img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    w, h = frame
    scale = min(np.sqrt(area * w * h / (img.shape[0] * img.shape[1])),
                0.9 * w / img.shape[1], 0.9 * h / img.shape[0])
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return img.astype(np.float32) / 255.0


def load_background(path: Path | None, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """BGR float32 (h, w, 3): the photo scaled to cover the frame and centre-cropped, or a gradient."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
    if img is None:
        top, bottom = rng.uniform(0.3, 0.9, 3), rng.uniform(0.1, 0.6, 3)
        ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (h, w, 3)).astype(np.float32)
    scale = max(w / img.shape[1], h / img.shape[0])
    img = cv2.resize(img, (max(w, round(img.shape[1] * scale)), max(h, round(img.shape[0] * scale))),
                     interpolation=cv2.INTER_AREA)
    y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[y0:y0 + h, x0:x0 + w].astype(np.float32) / 255.0


def paste(canvas: np.ndarray, stamp: np.ndarray, x: int, y: int) -> tuple[float, float, float, float]:
    """Alpha-blend a BGRA stamp at (x, y) (clipped); returns its visible box in [0, 1] coordinates."""
    h, w = canvas.shape[:2]
    sh, sw = stamp.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    part = stamp[y0 - y:y1 - y, x0 - x:x1 - x]
    a = part[..., 3:4]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + part[..., :3] * a
    ys, xs = np.nonzero(part[..., 3] > 0.1)
    return (float(x0 + xs.min()) / w, float(y0 + ys.min()) / h,
            float(x0 + xs.max() + 1) / w, float(y0 + ys.max() + 1) / h)


# ---- sound ---------------------------------------------------------------------------------------
def loop_sound(path: Path, n: int, rate: int) -> np.ndarray | None:
    try:
        wave = load_audio(path, rate)
    except InputError:
        return None
    rms = float(np.sqrt(np.mean(wave ** 2)))
    if wave.size < rate // 4 or rms < 1e-4:
        return None
    wave = wave * (10 ** (SOUND_DBFS / 20) / rms)
    wave = np.clip(np.tile(wave, n // wave.size + 1)[:n], -1, 1)
    fade = min(n // 2, rate // 50)                      # 20 ms fades: no clicks at scene cuts
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    wave[:fade] *= ramp
    wave[n - fade:] *= ramp[::-1]
    return wave.astype(np.float32)
