"""`jsa-rt localize` and `jsa-rt convert-official`."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from ..audio_io import fit_length, load_audio, load_image, resize_image
from ..errors import InputError
from ..shipped import DEFAULT_MODEL


# ---- localize --------------------------------------------------------------------------------
def add_localize_parser(sub):
    p = sub.add_parser("localize", help="localize the sound of one image + audio pair")
    p.add_argument("--checkpoint", default=None, help=f"checkpoint path or shipped name (default {DEFAULT_MODEL})")
    p.add_argument("--image", required=True)
    p.add_argument("--audio", required=True, help="wav / ogg / flac")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--png", default=None, help="also write an overlay picture")
    p.add_argument("--alpha", type=float, default=None, help="IQR weight of the AUD map (default: the config's)")
    p.add_argument("--ogl", default=None, metavar="RESNET18_PTH",
                   help="OGL instead of IQR, with this ImageNet ResNet-18 (torchvision's resnet18-f37072fd.pth)")
    return p


def localize_pair(model, rgb: np.ndarray, wave: np.ndarray, alpha=None, object_prior=None) -> dict:
    cfg = model.cfg
    frame = torch.from_numpy(np.ascontiguousarray(resize_image(rgb, cfg.image_size)))[None]
    audio = torch.from_numpy(fit_length(wave, cfg.num_samples)).unsqueeze(0)
    with torch.inference_mode():
        image = model.preprocess_frames(frame)
        extra = {"object_prior": object_prior} if object_prior is not None else {}
        out = model.localize(image, audio, alpha=alpha, **extra)
    return {k: v[0].float().numpy() for k, v in out.items()}


PICTURE_MAX_SIDE = 1280


def picture_size(rgb: np.ndarray, max_side: int = PICTURE_MAX_SIDE) -> np.ndarray:
    """The image for `localize --png`: its own aspect (the model saw it squeezed to a square, and
    its map covers the whole frame, so the map stretches back with it), at most `max_side` wide or high."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    import cv2
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def run_localize(args) -> int:
    from ..atomic import atomic_path, refuse_same_file
    from ..overlay import overlay_heatmap, peak_xy
    from .checkpoint import load_checkpoint
    refuse_same_file({"--out": args.out, "--png": args.png})
    png_ext = Path(args.png).suffix.lower() if args.png else None
    if args.png:                     # checked first: a bad picture name must not leave the .npz alone
        import cv2
        if not png_ext or not cv2.haveImageWriter(f"x{png_ext}"):
            raise InputError(f"cannot write {args.png}: unknown picture type {png_ext or '(none)'!r}; "
                             f"use a .png or .jpg name")
    model, meta = load_checkpoint(args.checkpoint)
    cfg = model.cfg
    rgb = load_image(args.image)
    wave = load_audio(args.audio, cfg.sample_rate)
    prior = None
    if args.ogl:
        from .ogl import ObjectPrior
        prior = ObjectPrior(args.ogl)
    maps = localize_pair(model, rgb, wave, args.alpha, prior)
    picture = None
    if args.png:
        ok, picture = cv2.imencode(png_ext, np.ascontiguousarray(
            overlay_heatmap(picture_size(rgb), maps["heatmap"])[..., ::-1]))
        if not ok:
            raise InputError(f"cannot encode {args.png} (use a .png or .jpg name)")
    out = Path(args.out)
    with contextlib.ExitStack() as outputs:        # both files or neither: a failed one stops the other
        tmp = outputs.enter_context(atomic_path(out))
        if picture is not None:
            outputs.enter_context(atomic_path(args.png)).write_bytes(picture.tobytes())
        with open(tmp, "wb") as f:                 # a file object: savez adds no suffix
            np.savez(f, **{k: maps[k] for k in ("aud", "img", "heatmap", "image_slot", "audio_slot",
                                                 "confidence", "obj") if k in maps})
    written = [str(out)] + ([args.png] if picture is not None else [])
    x, y = peak_xy(maps["heatmap"])
    print(f"localized with {meta['kind']} ({cfg.preset}): peak at x={x:.2f} y={y:.2f}, "
          f"confidence {float(maps['confidence']):.2f}; wrote {', '.join(written)}; next: "
          + ("add --png map.png to see it" if picture is None else
             "jsa-rt live --camera 0 --mic default for the live view"))
    return 0


# ---- convert-official ------------------------------------------------------------------------
def add_convert_parser(sub):
    p = sub.add_parser("convert-official", help="import an official JSA checkpoint")
    p.add_argument("input", help="checkpoint saved by the authors' code (.pth)")
    p.add_argument("output", help="jsa-rt checkpoint to write (.pt)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="convert even when keys are missing or unexpected")
    return p


def run_convert(args) -> int:
    from .official import convert_official
    report = convert_official(args.input, args.output, strict=args.strict)
    for key in report["unexpected"]:
        print(f"  unexpected key (ignored): {key}")
    for key in report["missing"]:
        print(f"  missing key (left at init): {key}")
    print(f"converted {report['converted']} tensors -> {report['out']} (paper preset); next: "
          f"jsa-rt eval --checkpoint {report['out']} --data DIR --json results.json")
    return 0
