"""Run a trained model at another input size, output stride or map smoothing: the same weights on a finer (or coarser) token grid.

The encoders are convolutional and the localisation map is computed per image token, so a model
trained at 224 x 224 (a 7 x 7 grid at stride 32) runs unchanged at 384 x 384 (12 x 12). With
`--stride 16` an EfficientNet-Lite0 model also dilates its last stride-2 stage: 384 x 384 then
gives 24 x 24 tokens, whose even positions are the stride-32 tokens exactly. Only the
training-only image decoder has a learned position embedding per grid row and column; it is
interpolated to the new grid so that training can go on from the result.

    python tools/set_image_size.py CHECKPOINT SIZE OUT.pt [--stride 16] [--map-smoothing 0.75] [--fp16]

Measure before shipping: `jsa-rt eval` the result against the original on every split
(edge-jsa-listen ships at 384, chosen on val in session 14, and was then trained on at 384 with
`jsa-rt train --init` in session 15; README, Listening).
"""
import argparse
import sys
from pathlib import Path

# this folder would come first on sys.path, where tools/profile.py shadows the standard `profile`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from jsa_rt.args import non_negative_float  # noqa: E402
from jsa_rt.errors import JsaError  # noqa: E402
from jsa_rt.model import on_grid  # noqa: E402
from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint .pt or shipped name")
    p.add_argument("size", type=int, help="the new square input size, a multiple of the model's stride")
    p.add_argument("out", help="the checkpoint to write")
    p.add_argument("--stride", type=int, default=None,
                   help="the image encoder's output stride (EfficientNet-Lite0: 32 or 16); default: unchanged")
    p.add_argument("--map-smoothing", type=non_negative_float, default=None, metavar="SIGMA",
                   help="Gaussian sigma, in tokens, that smooths the maps before upsampling (0: none); default: unchanged")
    p.add_argument("--fp16", action="store_true", help="store the weights as fp16 (how models are shipped)")
    args = p.parse_args(argv)
    try:
        model, meta = load_checkpoint(args.checkpoint)
        resized = on_grid(model, args.size, args.stride, args.map_smoothing).eval()
    except (JsaError, ValueError) as exc:  # e.g. 150: "... must be a multiple of image_stride 16; try 144"
        print(f"error: {exc}", file=sys.stderr)
        return 2
    old = meta["config"]
    extra = dict(meta["extra"])
    changes = f", stride {resized.cfg.image_stride}" if resized.cfg.image_stride != old.image_stride else ""
    if resized.cfg.map_smoothing != old.map_smoothing:
        changes += f", map smoothing {resized.cfg.map_smoothing:g} tokens"
    note = f"set to {args.size}{changes} (grid {resized.cfg.grid}) by tools/set_image_size.py"
    before = extra.get("image_size")          # set before: keep the size it was trained at
    extra["image_size"] = (f"{before}; then {note}" if before
                           else f"trained at {old.image_size} (grid {old.grid}), {note}")
    save_checkpoint(args.out, resized, extra=extra, half=args.fp16)
    print(f"wrote {args.out}: {old.image_size} -> {args.size} ({old.grid} x {old.grid} -> "
          f"{resized.cfg.grid} x {resized.cfg.grid} tokens); next: jsa-rt eval --checkpoint {args.out} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
