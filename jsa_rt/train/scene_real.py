"""Scene frames made of real photographs (the cut-out frames are in scene_image.py).

- `mosaic`: 2-4 whole photos as the tiles of one frame. The photos are object-centred
  (Caltech-101, or a COCO object cropped with a margin), so a tile's rectangle is its object's box.
- `coco_frame`: a COCO photo, square-cropped around one boxed object; every boxed object keeps
  its (clipped) box, so the objects of other sounding classes are the frame's silent candidates.

Both return float32 RGB in [0, 1] and boxes normalised (x0, y0, x1, y1), like scene_image.
"""
from __future__ import annotations

import functools

import numpy as np

from .classmap import CocoImage, Photo
from .scene_image import _camera, _resize

MIN_VISIBLE = 0.5          # a COCO object cut by the crop keeps its box only if half of it shows


@functools.lru_cache(maxsize=256)
def _load_photo(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def photo_crop(photo: Photo, rng: np.random.Generator, margin: float = 0.15) -> np.ndarray:
    """The photo, or for a COCO object its box widened by `margin` on each side."""
    img = _load_photo(photo.path)
    if photo.box is None:
        return img
    h, w = img.shape[:2]
    x0, y0, x1, y1 = photo.box
    mx, my = (x1 - x0) * margin * rng.uniform(0.5, 1.5), (y1 - y0) * margin * rng.uniform(0.5, 1.5)
    a, b = int(max(0, (x0 - mx)) * w), int(max(0, (y0 - my)) * h)
    c, d = int(min(1, (x1 + mx)) * w), int(min(1, (y1 + my)) * h)
    return img[b:max(d, b + 1), a:max(c, a + 1)]


def fill_tile(img: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Centre-crop to the tile's aspect (a little random zoom and shift), then resize."""
    ih, iw = img.shape[:2]
    aspect = w / h
    cw, ch = (iw, iw / aspect) if iw / ih < aspect else (ih * aspect, ih)
    zoom = rng.uniform(0.85, 1.0)
    cw, ch = max(1, int(cw * zoom)), max(1, int(ch * zoom))
    x = int(rng.integers(0, iw - cw + 1))
    y = int(rng.integers(0, ih - ch + 1))
    out = _resize(img[y:y + ch, x:x + cw], w, h)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def mosaic_layout(count: int, rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """Tile rectangles (normalised) for 2, 3 or 4 photos."""
    if count == 2:
        cut = rng.uniform(0.4, 0.6)
        return [(0, 0, cut, 1), (cut, 0, 1, 1)] if rng.random() < 0.7 else [(0, 0, 1, cut), (0, cut, 1, 1)]
    if count == 3:
        cut = rng.uniform(0.45, 0.55)
        return [(0, 0, cut, 1), (cut, 0, 1, 0.5), (cut, 0.5, 1, 1)]
    if count == 4:
        return [(0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), (0, 0.5, 0.5, 1), (0.5, 0.5, 1, 1)]
    raise ValueError(f"a mosaic has 2-4 tiles, not {count}")


def mosaic(rng: np.random.Generator, size: int, photos: list[Photo]) -> tuple[np.ndarray, list[tuple]]:
    """One frame of len(photos) tiles, in order; returns (image, tile boxes in photo order)."""
    rects = mosaic_layout(len(photos), rng)
    order = rng.permutation(len(rects))               # which photo goes in which tile
    canvas = np.zeros((size, size, 3), np.float32)
    boxes = [None] * len(photos)
    gutter = int(rng.integers(0, 4))
    for i, photo in enumerate(photos):
        x0, y0, x1, y1 = rects[order[i]]
        a, b, c, d = (int(round(v * size)) for v in (x0, y0, x1, y1))
        a2, b2 = a + (gutter if a else 0), b + (gutter if b else 0)
        canvas[b2:d, a2:c] = fill_tile(photo_crop(photo, rng), c - a2, d - b2, rng)
        boxes[i] = (a2 / size, b2 / size, c / size, d / size)
    return _camera(canvas, rng), boxes


def coco_frame(rng: np.random.Generator, size: int, image: CocoImage,
               focus: int) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """A square crop of a COCO photo that keeps object `focus` whole where it fits; returns
    (image, [(class, box)] of the objects at least MIN_VISIBLE inside the crop)."""
    img = _load_photo(image.path)
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.8, 1.0))
    fx0, fy0, fx1, fy1 = image.objects[focus][1]
    # slide the square so the focus object is inside it when possible
    lo_x, hi_x = max(0, int(fx1 * w) - side), min(w - side, int(fx0 * w))
    lo_y, hi_y = max(0, int(fy1 * h) - side), min(h - side, int(fy0 * h))
    x = int(rng.integers(min(lo_x, hi_x), max(lo_x, hi_x) + 1)) if w > side else 0
    y = int(rng.integers(min(lo_y, hi_y), max(lo_y, hi_y) + 1)) if h > side else 0
    x, y = min(max(x, 0), w - side), min(max(y, 0), h - side)
    crop = _resize(img[y:y + side, x:x + side], size, size)
    objects = []
    for name, (x0, y0, x1, y1) in image.objects:
        bx0, by0 = (x0 * w - x) / side, (y0 * h - y) / side
        bx1, by1 = (x1 * w - x) / side, (y1 * h - y) / side
        cx0, cy0, cx1, cy1 = max(bx0, 0), max(by0, 0), min(bx1, 1), min(by1, 1)
        full = (bx1 - bx0) * (by1 - by0)
        if cx1 > cx0 and cy1 > cy0 and (cx1 - cx0) * (cy1 - cy0) >= MIN_VISIBLE * full:
            objects.append((name, (cx0, cy0, cx1, cy1)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
        objects = [(n, (1 - b[2], b[1], 1 - b[0], b[3])) for n, b in objects]
    return _camera(crop, rng), objects
