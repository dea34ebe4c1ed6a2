"""Build the demo's camera + microphone stand-in from real data: clip.mp4, clip.wav, truth.json.

A few scenes, each a background photo with one *sounding* Tux Paint stamp (a PNG that has an
OGG recording of that object beside it) drifting slowly across it and two *silent* stamps
(PNGs without a sound) standing still. The soundtrack of a scene is its sounding stamp's
recording, looped. Because we paste the stamps ourselves, the ground-truth box of the sounding
object is known exactly in every frame (truth.json).

Data: `--data`, else $JSA_DATA, else ../shared/data next to the repository, else Debian's
`tuxpaint-stamps-default` (/usr/share/tuxpaint/stamps; no photos there: plain gradients then).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio_io import load_audio
from ..errors import InputError

DEBIAN_STAMPS = Path("/usr/share/tuxpaint/stamps")
REPO_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# Box areas as a fraction of the frame, in the training scenes' range (jsa_rt/train/scenes.py:
# mostly 25-60 %, median 0.38), at its small end so that the object has room to move.
TARGET_AREA = (0.25, 0.40)
DISTRACTOR_AREA = (0.03, 0.07)
DRIFT = 0.12                     # how far (fraction of the frame width) the target moves per scene
SOUND_DBFS = -20.0               # loudness of the looped recordings
NOISE_DBFS = -60.0               # a quiet room under everything (real microphones are never silent)
MIN_STAMP_PX = 64


def data_roots(data: str | None) -> list[Path]:
    if data:                          # a folder named with --data is the only place to look
        return [Path(data)]
    roots = []
    if os.environ.get("JSA_DATA"):
        roots.append(Path(os.environ["JSA_DATA"]))
    roots.append(REPO_DATA)
    return roots


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


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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


# ---- the clip ------------------------------------------------------------------------------------
@dataclass
class Scene:
    name: str                 # the sounding stamp
    background: str
    distractors: list[str]


def build_clip(out_dir: str | Path, data: str | None = None, segments: int = 4, seconds: float = 4.0,
               fps: float = 30.0, size: tuple[int, int] = (640, 480), rate: int = 16000,
               seed: int = 0, progress=None) -> dict:
    """Write clip.mp4, clip.wav and truth.json into `out_dir`; returns the truth dict."""
    import cv2
    import soundfile as sf
    stamp_root = find_stamp_root(data)
    if stamp_root is None and data:
        raise InputError(f"--data {data}: no Tux Paint stamps there (DIR/tuxpaint-stamps/stamps/animals/...); "
                         f"check the path, or leave --data out to use $JSA_DATA or ../shared/data")
    if stamp_root is None:
        raise InputError("no Tux Paint stamps found: sudo apt install tuxpaint-stamps-default, "
                         "or set JSA_DATA to the data folder (see tools/setup.sh)")
    sounding, silent = scan(stamp_root)
    if len(sounding) < segments or len(silent) < 2:
        raise InputError(f"only {len(sounding)} sounding stamps under {stamp_root}: need {segments}")
    backgrounds = find_backgrounds(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    per = int(round(seconds * fps))
    n_audio = int(round(per / fps * rate))
    tmp_video = out / f".clip.partial-{os.getpid()}.mp4"
    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    audio, frames, scenes = [], [], []
    order = rng.permutation(len(sounding))
    used = 0
    for k in range(segments):
        # the next sounding stamp whose image and recording are both usable
        while True:
            if used >= len(order):
                raise InputError(f"not enough usable sounding stamps under {stamp_root}")
            png, ogg = sounding[order[used]]
            used += 1
            stamp = load_stamp(png, rng.uniform(*TARGET_AREA), size)
            sound = loop_sound(ogg, n_audio, rate) if stamp is not None else None
            if sound is not None:
                break
        bg_path = backgrounds[rng.integers(len(backgrounds))] if backgrounds else None
        bg = load_background(bg_path, w, h, rng)
        sh, sw = stamp.shape[:2]
        x_start = rng.uniform(0, max(1, w - sw - DRIFT * w))
        y_start = rng.uniform(0.05 * h, max(0.05 * h + 1, h - sh - 0.05 * h))
        sweep = (x_start / w, y_start / h, (x_start + sw) / w + DRIFT, (y_start + sh) / h)
        direction = rng.choice([-1, 1])
        if direction < 0:
            x_start += DRIFT * w
        # two silent stamps, still, away from the sounding one's whole path
        still = bg.copy()
        names = []
        for _ in range(200):
            if len(names) == 2:
                break
            d_path = silent[rng.integers(len(silent))]
            d = load_stamp(d_path, rng.uniform(*DISTRACTOR_AREA), size)
            if d is None:
                continue
            dx, dy = int(rng.uniform(0, w - d.shape[1])), int(rng.uniform(0, h - d.shape[0]))
            box = (dx / w, dy / h, (dx + d.shape[1]) / w, (dy + d.shape[0]) / h)
            if _overlaps(box, sweep):
                continue
            paste(still, d, dx, dy)
            names.append(d_path.stem)
        for i in range(per):
            x = int(round(x_start + direction * DRIFT * w * i / max(1, per - 1)))
            canvas = still.copy()
            box = paste(canvas, stamp, x, int(round(y_start)))
            writer.write(np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8))
            frames.append({"frame": len(frames), "segment": k, "name": png.stem,
                           "box": [round(v, 5) for v in box]})
        audio.append(sound)
        scenes.append(Scene(png.stem, bg_path.name if bg_path else "gradient", names))
        if progress:
            progress(f"  scene {k + 1}/{segments}: {png.stem} ({png.parent.relative_to(stamp_root)}) on "
                     f"{scenes[-1].background}, silent: {', '.join(names)}")
    writer.release()
    wave = np.concatenate(audio)
    wave = wave + rng.normal(0, 10 ** (NOISE_DBFS / 20), wave.size).astype(np.float32)
    tmp_audio = out / f".clip.partial-{os.getpid()}.wav"
    sf.write(str(tmp_audio), np.clip(wave, -1, 1), rate, subtype="PCM_16")
    truth = {"fps": fps, "size": [w, h], "sample_rate": rate, "seconds_per_scene": seconds,
             "stamp_root": str(stamp_root), "scenes": [vars(s) for s in scenes], "frames": frames}
    tmp_truth = out / f".truth.partial-{os.getpid()}.json"
    tmp_truth.write_text(json.dumps(truth, indent=1))
    os.replace(tmp_video, out / "clip.mp4")
    os.replace(tmp_audio, out / "clip.wav")
    os.replace(tmp_truth, out / "truth.json")
    return truth
