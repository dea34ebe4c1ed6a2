"""Audio and image files in, numpy arrays out. No torch: the live runtime uses this too.

Audio: wav / ogg / flac via soundfile (libsndfile), down-mixed to mono float32 and resampled
with a polyphase filter. Images: any format OpenCV or Pillow reads, returned as RGB uint8.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from .config import IMAGENET_MEAN, IMAGENET_STD
from .errors import InputError


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a mono float signal (polyphase, anti-aliased). Identity when the rates match."""
    if rate_in == rate_out:
        return np.asarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly
    ratio = Fraction(int(rate_out), int(rate_in))
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, averaging channels."""
    data = np.asarray(data, dtype=np.float32)
    return data.mean(axis=1) if data.ndim == 2 else data


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1] at `sample_rate` Hz. wav/ogg/flac (and mp3
    with a recent libsndfile) directly; the soundtrack of a video (mp4, mkv, mov...) through ffmpeg."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file not found: {path} (check the path)")
    if path.stat().st_size == 0:
        raise InputError(f"audio file {path} is empty (0 bytes): record or copy it again")
    cut = None                 # (declared, present) bytes of a WAV cut short
    try:
        import soundfile as sf
        with sf.SoundFile(str(path)) as f:
            rate, cut = f.samplerate, _cut_short(f.extra_info)
            data = f.read(dtype="float32", always_2d=False)
    except ImportError:
        raise InputError("reading audio needs soundfile: pip install soundfile") from None
    except Exception as exc:  # libsndfile's errors are RuntimeError / LibsndfileError
        data, rate = _decode_with_ffmpeg(path, sample_rate, str(exc))
    if data.size == 0:
        raise InputError(f"audio file {path} is empty")
    if cut is not None:
        raise InputError(f"audio file {path} is cut short: its header declares {cut[0]} bytes of audio, "
                         f"only {cut[1]} are there (a copy or recording that stopped early); copy or "
                         f"record it again")
    wave = to_mono(data)
    bad = ~np.isfinite(wave)
    if bad.any():      # a float wav can hold NaN / inf: it would poison every result, so say where
        raise InputError(f"audio file {path} holds {int(bad.sum())} NaN/inf sample(s), the first at "
                         f"{int(np.argmax(bad)) / rate:.3f} s: a damaged float recording; export it again")
    return resample(wave, rate, sample_rate)


def _cut_short(extra_info: str) -> tuple[int, int] | None:
    """(declared, present) data bytes when libsndfile found a WAV's data chunk cut off
    ("data : 32000 (should be 15978)"); None otherwise. The sizes a streaming writer leaves
    before it knows the length (0, 0xFFFFFFFF) are not a cut."""
    import re
    found = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", extra_info or "", re.M)
    if not found:
        return None
    declared, present = int(found.group(1)), int(found.group(2))
    return (declared, present) if present < declared < 0xFFFFFFFF and declared > 0 else None


def _decode_with_ffmpeg(path: Path, sample_rate: int, why: str) -> tuple[np.ndarray, int]:
    """A container libsndfile does not read (a video's soundtrack): ffmpeg decodes it to mono."""
    import shutil
    import subprocess
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError(f"cannot decode audio {path}: {why} (use wav, ogg or flac; for the sound of a "
                         f"video, install ffmpeg: sudo apt install ffmpeg)")
    # file: stops a name such as "take:2.mp4" reading as a protocol; aresample pads the start
    # with silence when the soundtrack begins after the picture (keeps sound and picture in
    # step); the channels stay as they are and to_mono mixes them, as for any other file
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:a:0", "-vn",
           "-af", "aresample=async=1:first_pts=0", "-ar", str(int(sample_rate)),
           "-c:a", "pcm_f32le", "-f", "wav", "-"]
    done = subprocess.run(cmd, capture_output=True, start_new_session=True)   # Ctrl-C stops us, not it
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        if any("matches no streams" in line for line in detail):
            raise InputError(f"{path} has no audio track")
        raise InputError(f"cannot decode audio {path}: {detail[-1] if detail else why} "
                         f"(use wav, ogg, flac, or a video with a soundtrack)")
    import io

    import soundfile as sf
    return sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=False)


def fit_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Tile short clips and centre-crop long ones to exactly `num_samples` (evaluation rule)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size == 0:
        return np.zeros(num_samples, np.float32)
    if wave.size < num_samples:
        wave = np.tile(wave, int(np.ceil(num_samples / wave.size)))[:num_samples]
        return wave
    start = (wave.size - num_samples) // 2
    return wave[start:start + num_samples]


def composite_on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB uint8 (H,W,3) x alpha uint8 (H,W) -> RGB uint8: transparent pixels become black.
    (Cut-outs such as Tux Paint stamps keep arbitrary colours under alpha = 0.)"""
    weight = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * weight).astype(np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3); alpha is composited on black."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path} (check the path)")
    try:
        from PIL import Image
    except ImportError:
        return _load_image_cv2(path)
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):      # 16-bit grey: Pillow's convert("RGB") would clip it to white
                grey = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                return composite_on_black(rgba[..., :3], rgba[..., 3])
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:
        raise InputError(f"cannot decode image {path}: {exc} (use png or jpg)") from None


def _load_image_cv2(path: Path) -> np.ndarray:
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot decode image {path} (use png or jpg)")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
        alpha = raw[..., 3]
        if alpha.dtype == np.uint16:
            alpha = (alpha // 257).astype(np.uint8)
        rgb = composite_on_black(rgb, alpha)
    return rgb


def camera_frames(images) -> np.ndarray:
    """Images normalised as the models take them (float (N, 3, S, S), ImageNet mean and std) -> the
    uint8 RGB frames (N, S, S, 3) a camera gives."""
    x = np.asarray(images, dtype=np.float32).transpose(0, 2, 3, 1)
    rgb = x * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (no-op when already that size): area averaging when shrinking, as
    the live path does and close to the antialiased bicubic that training applies (plain
    bicubic would alias fine texture), bicubic when enlarging."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    import cv2
    shrinking = rgb.shape[0] > size or rgb.shape[1] > size
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
