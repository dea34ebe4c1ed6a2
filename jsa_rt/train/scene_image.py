"""Compose one scene image: a background, silent distractors, and (usually) the sounding target.

Everything is drawn from one `numpy.random.Generator`, so a scene is a pure function of its seed.
Work is in float32 RGB in [0, 1]; the caller encodes the result.

Boxes: an object's box is the tight box of its pasted alpha (alpha > ALPHA_MIN), before any
later object covers part of it (amodal, as annotators draw boxes), clipped to the frame.
Coordinates are normalised to [0, 1] as (x0, y0, x1, y1) with x1/y1 exclusive pixel edges.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scene_catalog import PHOTO_BACKGROUNDS, Stamp

ALPHA_MIN = 0.1
_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
          "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
          "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
          "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass(frozen=True)
class ObjectSpec:
    """What to paste: a stamp, or a digit (Tux Paint image or font glyph chosen at random)."""
    name: str
    stamp: Stamp | None = None
    digit: int | None = None


@dataclass
class Placed:
    name: str
    role: str                      # "target" | "distractor"
    box: tuple[float, float, float, float]
    mask: np.ndarray               # bool (S, S): the object's alpha > ALPHA_MIN as pasted
    area: float                    # box area as a fraction of the frame


# ---- loading ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _load_rgba(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return _crop_to_alpha(rgba)


@functools.lru_cache(maxsize=16)
def _load_rgb(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] > ALPHA_MIN)
    if ys.size == 0:
        return rgba
    return rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _font_digit(digit: int, font_path: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.truetype(font_path, 160)
    canvas = Image.new("L", (200, 220), 0)
    ImageDraw.Draw(canvas).text((20, 0), str(digit), fill=255, font=font)
    alpha = np.asarray(canvas, dtype=np.float32) / 255.0
    rgba = np.zeros(alpha.shape + (4,), np.float32)
    rgba[..., 3] = alpha
    return _crop_to_alpha(rgba)


def _recolour(rgba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tux Paint's 'colorable' stamps are black shapes the user paints: give them a random colour."""
    out = rgba.copy()
    colour = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    shade = 1.0 - rgba[..., :3].mean(axis=2, keepdims=True)          # black -> full colour
    out[..., :3] = colour * shade + rgba[..., :3] * (1 - shade)
    return out


def load_object(spec: ObjectSpec, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """RGBA float array cropped to its alpha, and whether it may be mirrored."""
    if spec.digit is not None:
        fonts = [f for f in _FONTS if Path(f).is_file()]
        if spec.stamp is not None and (not fonts or rng.random() < 0.5):
            rgba = _load_rgba(spec.stamp.image)
            # 32 px source: upscale now and harden the soft bicubic alpha edge
            rgba = _resize(rgba, rgba.shape[1] * 4, rgba.shape[0] * 4)
            rgba[..., 3] = np.clip((rgba[..., 3] - 0.5) * 2.5 + 0.5, 0, 1)
        else:
            rgba = _font_digit(spec.digit, fonts[int(rng.integers(len(fonts)))])
        return _recolour(rgba, rng), False
    stamp = spec.stamp
    rgba = _load_rgba(stamp.image)
    if "colorable" in stamp.flags:
        rgba = _recolour(rgba, rng)
    return rgba, "nomirror" not in stamp.flags


# ---- geometry -----------------------------------------------------------------------------------
def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2
    w, h = max(1, int(w)), max(1, int(h))
    shrink = w < img.shape[1]
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0, 1)


def _rotate(rgba: np.ndarray, degrees: float) -> np.ndarray:
    import cv2
    h, w = rgba.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos) + 2, int(h * cos + w * sin) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(rgba, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return _crop_to_alpha(np.clip(out, 0, 1))


def transform_object(rgba: np.ndarray, mirror_ok: bool, area: float, size: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Scale so the object's box covers about `area` of a size x size frame; rotate, flip, relight."""
    h, w = rgba.shape[:2]
    aspect = w / h
    tw, th = np.sqrt(area * aspect) * size, np.sqrt(area / aspect) * size
    fit = min(1.0, 0.96 * size / tw, 0.96 * size / th)     # very elongated stamps: as large as fits
    out = _resize(rgba, round(tw * fit), round(th * fit))
    if rng.random() < 0.5:
        out = _rotate(out, rng.uniform(-12, 12))
    if mirror_ok and rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.copy()
    gain = rng.uniform(0.75, 1.2) * (1 + rng.uniform(-0.08, 0.08, 3))    # local light and tint
    out[..., :3] = np.clip(out[..., :3] * gain, 0, 1)
    if out.shape[0] > size or out.shape[1] > size:                      # rotation grew it past the frame
        scale = size / max(out.shape[:2])
        out = _resize(out, out.shape[1] * scale, out.shape[0] * scale)
    return out


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    size_y, size_x = mask.shape
    ys, xs = np.nonzero(mask)
    return (xs.min() / size_x, ys.min() / size_y, (xs.max() + 1) / size_x, (ys.max() + 1) / size_y)


def _alpha_on_canvas(obj: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    """The object's alpha placed with its top-left at (x, y), clipped to the canvas."""
    alpha = np.zeros((size, size), np.float32)
    h, w = obj.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
    if x1 > x0 and y1 > y0:
        alpha[y0:y1, x0:x1] = obj[y0 - y:y1 - y, x0 - x:x1 - x, 3]
    return alpha


def _paste(canvas: np.ndarray, obj: np.ndarray, x: int, y: int, rng: np.random.Generator) -> np.ndarray:
    import cv2
    size = canvas.shape[0]
    alpha = _alpha_on_canvas(obj, x, y, size)
    if rng.random() < 0.5:      # soft contact shadow, offset down and to one side
        k = int(rng.integers(3, 8)) * 2 + 1
        dx, dy = int(rng.integers(-6, 7)), int(rng.integers(2, 9))
        shadow = cv2.GaussianBlur(np.roll(alpha, (dy, dx), axis=(0, 1)), (k, k), 0)
        canvas *= (1 - rng.uniform(0.2, 0.45) * shadow)[..., None]
    rgb = np.zeros_like(canvas)
    h, w = obj.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
    rgb[y0:y1, x0:x1] = obj[y0 - y:y1 - y, x0 - x:x1 - x, :3]
    canvas[:] = canvas * (1 - alpha[..., None]) + rgb * alpha[..., None]
    return alpha > ALPHA_MIN


# ---- backgrounds --------------------------------------------------------------------------------
def _background(rng: np.random.Generator, backgrounds: list[str], size: int) -> tuple[np.ndarray, str]:
    photos = [p for p in backgrounds if Path(p).stem in PHOTO_BACKGROUNDS]
    textures = [p for p in backgrounds if p not in photos]
    choice = rng.choice(["photo", "photo_crop", "texture", "synthetic"], p=[0.3, 0.2, 0.3, 0.2])
    if choice in ("photo", "photo_crop") and photos:
        path = photos[int(rng.integers(len(photos)))]
        img = _load_rgb(path)
        h, w = img.shape[:2]
        # "photo": the whole photograph (short side fitted, long side shifted); "photo_crop": a zoom
        side = min(h, w) if choice == "photo" else int(min(h, w) * rng.uniform(0.3, 0.7))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img = _resize(img[y:y + side, x:x + side], size, size)
        name = f"{choice}:{Path(path).stem}"
    elif choice == "texture" and textures:
        path = textures[int(rng.integers(len(textures)))]
        img = _load_rgb(path)
        side = int(min(img.shape[:2]) * rng.uniform(0.25, 1.0))
        y, x = (int(rng.integers(0, s - side + 1)) for s in img.shape[:2])
        img = _resize(img[y:y + side, x:x + side], size, size)
        img = np.rot90(img, int(rng.integers(4))).copy()
        tint = rng.uniform(0.4, 1.1, 3).astype(np.float32)       # grey textures get a colour
        img = np.clip(img * tint + rng.uniform(-0.1, 0.15), 0, 1)
        name = f"texture:{Path(path).stem}"
    else:
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
        low = _resize(rng.normal(0, 1, (8, 8, 3)).astype(np.float32) * 0.5 + 0.5, size, size) - 0.5
        img = np.clip(c0 * (1 - t) + c1 * t + 0.15 * low, 0, 1)
        name = "synthetic"
    return img.astype(np.float32), name


# ---- global camera effects ------------------------------------------------------------------------
def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2
    size = img.shape[0]
    warmth = rng.uniform(-0.1, 0.1)
    img = img * np.array([1 + warmth, 1.0, 1 - warmth], np.float32)
    img = (img - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.12, 0.12)
    img = np.clip(img, 0, 1) ** rng.uniform(0.75, 1.35)
    if rng.random() < 0.4:      # uneven lighting: a linear light fall-off across the frame
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
        ramp = 1 + rng.uniform(0.15, 0.45) * (np.cos(angle) * xx + np.sin(angle) * yy)
        img = img * ramp[..., None].astype(np.float32)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.5, 2.0)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    elif rng.random() < 0.1:    # motion blur
        n = int(rng.integers(5, 12))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1.0 / n
        m = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, m, (n, n))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


# ---- the scene -------------------------------------------------------------------------------------
def _overlap(a: tuple, b: tuple) -> float:
    """Fraction of box a that lies inside box b."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)


def compose_image(rng: np.random.Generator, size: int, backgrounds: list[str],
                  target: ObjectSpec | None, target_area: float,
                  distractors: list[ObjectSpec], peers: list[ObjectSpec] = (),
                  background: tuple[np.ndarray, str] | None = None) -> tuple[np.ndarray, list[Placed], str]:
    """Returns (RGB float32 image, placed objects with the target first if any, background name).

    `peers` are objects of other sounding classes shown as large as the target and clear of it
    (role "peer"): the frame alone cannot tell which of them sounds. `background` replaces the
    drawn background (a real photo, already size x size)."""
    canvas, bg_name = (background[0].copy(), background[1]) if background else _background(rng, backgrounds, size)
    placed: list[Placed] = []
    target_obj = target_xy = target_alpha = None
    if target is not None:
        rgba, mirror_ok = load_object(target, rng)
        target_obj = transform_object(rgba, mirror_ok, target_area, size, rng)
        h, w = target_obj.shape[:2]
        target_xy = (int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)))
        target_alpha = _alpha_on_canvas(target_obj, *target_xy, size) > ALPHA_MIN
    target_box = _box_of(target_alpha) if target_alpha is not None else None
    placed_peers = _place_peers(rng, size, peers, target_area, [target_box] if target_box else [])

    # Decide where each distractor goes before drawing: behind the target (kept mostly clear of it)
    # or in front (an occluder hiding at most a quarter of the target).
    behind, front = [], []
    for spec in distractors:
        rgba, mirror_ok = load_object(spec, rng)
        obj = transform_object(rgba, mirror_ok, rng.uniform(0.03, 0.16), size, rng)
        h, w = obj.shape[:2]
        in_front = target_alpha is not None and rng.random() < 0.25
        for _ in range(25):
            # up to a quarter of a distractor may hang outside the frame
            x = int(rng.integers(-w // 4, size - 3 * w // 4 + 1))
            y = int(rng.integers(-h // 4, size - 3 * h // 4 + 1))
            mask = _alpha_on_canvas(obj, x, y, size) > ALPHA_MIN
            if not mask.any():
                continue
            if target_alpha is None:
                break
            if in_front:
                if (mask & target_alpha).sum() <= 0.25 * target_alpha.sum():
                    break
            elif _overlap(_box_of(mask), target_box) <= 0.3:
                break
        else:
            in_front = False   # no acceptable spot: put it behind wherever it landed last
        if not mask.any():
            x, y = (size - w) // 2, (size - h) // 2
        (front if in_front else behind).append((spec, obj, x, y))

    for spec, obj, x, y in behind:
        mask = _paste(canvas, obj, x, y, rng)
        placed.append(Placed(spec.name, "distractor", _box_of(mask), mask, _box_area(mask)))
    for spec, obj, x, y in placed_peers:
        mask = _paste(canvas, obj, x, y, rng)
        placed.append(Placed(spec.name, "peer", _box_of(mask), mask, _box_area(mask)))
    if target is not None:
        mask = _paste(canvas, target_obj, *target_xy, rng)
        placed.insert(0, Placed(target.name, "target", _box_of(mask), mask, _box_area(mask)))
    for spec, obj, x, y in front:
        mask = _paste(canvas, obj, x, y, rng)
        placed.append(Placed(spec.name, "distractor", _box_of(mask), mask, _box_area(mask)))
    return _camera(canvas, rng), placed, bg_name


def _place_peers(rng: np.random.Generator, size: int, peers: list[ObjectSpec], area: float,
                 taken: list[tuple]) -> list[tuple]:
    """Each peer about as large as the target, its box overlapping no other sounding object's
    box by more than 10 % (shrunk until it fits)."""
    out = []
    taken = list(taken)
    for spec in peers:
        rgba, mirror_ok = load_object(spec, rng)
        scale = rng.uniform(0.7, 1.3)
        for _ in range(6):
            obj = transform_object(rgba, mirror_ok, area * scale, size, rng)
            h, w = obj.shape[:2]
            for _ in range(30):
                x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
                box = (x / size, y / size, (x + w) / size, (y + h) / size)
                if all(_overlap(box, t) <= 0.1 and _overlap(t, box) <= 0.1 for t in taken):
                    break
            else:
                scale *= 0.75
                continue
            break
        taken.append(box)
        out.append((spec, obj, x, y))
    return out


def _box_area(mask: np.ndarray) -> float:
    x0, y0, x1, y1 = _box_of(mask)
    return (x1 - x0) * (y1 - y0)
