"""`jsa-rt eval`: localisation, retrieval and false-alarm metrics for any checkpoint.

Runs `model.localize(images, wave)` in batches over a dataset (datasets.py layouts), scores
every sample with metrics.py, and writes:
- OUT.json: the summary (keys `n`, `ciou50`, `auc`, `pointing`, `false_alarm`, `retrieval`,
  `by_size`, ... as fractions in [0, 1]; `n` = samples with a box or mask that were scored),
- OUT.csv: one row per sample, OUT.md: a markdown table (x100, as papers report),
- OUT.png: a grid of maps over images with the ground truth outlined.
The last three go to --out-dir (default: beside OUT.json).

Multi-source ("pair") splits, whose scenes carry a `group` (one frame written once per sounding
object), add `pairs` to the JSON (`follows`: share of frames where every soundtrack puts the peak
on its own object, `chance`, `never_moves`, `wrong_object`, ... see `evaluate.pair_summary`), `ci95.follows`
and `ci95.wrong_object`, the CSV columns `group`, `follows` (the frame's, on each of its rows,
for `jsa-rt compare`) and `wrong_object`, and OUT_pairs.png: a few frames once per sound.

The loop and the summary are in evaluate.py, the files in eval_report.py; this is the command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..args import non_negative_int, positive_int
from ..atomic import write_text
from ..errors import InputError
from ..shipped import DEFAULT_MODEL
from .datasets import FORMATS, guess_format, open_dataset
from .eval_report import markdown_table, write_csv, write_grid, write_pairs
from .evaluate import evaluate, torch_device


def _threshold(text: str) -> str | float:
    if text == "median":
        return "median"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use 'median' or a number such as 0.6") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a fixed threshold lies in [0, 1]")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="cIoU/AUC, pointing, retrieval, false alarms of a checkpoint on a dataset",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_MODEL, help=f"checkpoint .pt or shipped name (default {DEFAULT_MODEL}), or a deployed graph: an "
                        f".onnx export (onnxruntime) or a TensorRT plan, scored as it runs live")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default=None,
                   help="torch: the checkpoint (default for .pt and shipped names); onnxruntime / tensorrt: the "
                        "deployed graph that `live` runs (a shipped name's ONNX, an .onnx file, a plan)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default="test", help="split for scenes/avsbench (default test)")
    p.add_argument("--annotations", type=Path, default=None,
                   help="VGG-SS JSON / Flickr id list / scenes annotation file (overrides --split)")
    p.add_argument("--format", choices=FORMATS, default=None, help="data layout (default: guessed from the folder)")
    p.add_argument("--threshold", type=_threshold, default="median",
                   help="cIoU binarisation: 'median' (EZ-VSL, default) or a fixed value such as 0.6 (JSA scripts)")
    p.add_argument("--alpha", type=float, default=None, help="IQR weight of the audio map (default: the model's; 0.4 official scripts, 0.6 paper)")
    p.add_argument("--fa-threshold", type=float, default=None,
                   help="confidence above which a no-source scene is a false alarm (default: the model's "
                        "no_source_confidence, 0.3, chosen on val)")
    p.add_argument("--ogl", default=None, metavar="RESNET18_PTH",
                   help="OGL instead of IQR: fuse the audio map with the object map of this ImageNet "
                        "ResNet-18 (torchvision's resnet18-f37072fd.pth)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--workers", type=non_negative_int, default=0, help="data loading processes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="cpu | cuda | auto")
    p.add_argument("--limit", type=non_negative_int, default=0, help="evaluate only the first N samples (quick look)")
    p.add_argument("--grid", type=non_negative_int, default=16, help="examples in the PNG grid (0: none)")
    p.add_argument("--json", required=True, type=Path, help="summary JSON to write")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for the CSV, markdown and PNG (default: beside --json)")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    """A checkpoint; deployed graphs (.onnx, TensorRT plans) come through export/graph_eval.py."""
    import torch
    from ..model.checkpoint import load_checkpoint
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    device = torch_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=device)
    return evaluate_and_report(args, model, meta, device)


def evaluate_and_report(args: argparse.Namespace, model, meta: dict, device: str) -> int:
    """Score `model` (meta: its kind and config) on --data and write the JSON, CSV, table and pictures."""
    fmt = args.format or guess_format(args.data, args.annotations)
    dataset = open_dataset(fmt, args.data, meta["config"], args.split, args.annotations)
    if args.limit:
        dataset.samples = dataset.samples[:args.limit]
    for sample_id, reason in dataset.missing:
        print(f"skipped {sample_id}: {reason}", file=sys.stderr)
    started = time.monotonic()
    prior = None
    if getattr(args, "ogl", None):
        if getattr(model, "kind", None) == "deployed":
            raise InputError("--ogl needs a checkpoint (the ResNet-18 object map is fused in torch); "
                             "a deployed graph has its fusion built in")
        from ..model.ogl import ObjectPrior
        prior = ObjectPrior(args.ogl).to(device)
    summary, rows, examples = evaluate(model, dataset, args.batch_size, args.threshold, args.alpha,
                                       args.fa_threshold, device, args.workers, args.grid, not args.quiet,
                                       object_prior=prior)
    summary["fusion"] = "ogl" if prior is not None else "iqr"
    for item in summary["skipped_items"][len(dataset.missing):]:
        print(f"skipped {item['id']}: {item['reason']}", file=sys.stderr)
    summary.update(checkpoint=str(args.checkpoint), kind=meta["kind"], preset=meta["config"].preset,
                   data=str(args.data), format=fmt, split=args.split if not args.annotations else str(args.annotations),
                   seconds=round(time.monotonic() - started, 1))
    if summary["n"] == 0 and not summary["n_read"]:     # nothing to report: write no result files
        raise InputError(f"no sample of {args.data} could be read ({summary['skipped']} skipped); see the messages above")
    out_dir = args.out_dir or args.json.parent
    stem = args.json.stem
    write_text(args.json, json.dumps(summary, indent=1))
    write_csv(out_dir / f"{stem}.csv", rows)
    title = f"{meta['kind']} ({meta['config'].preset}) on {args.data.name} / {summary['split']}"
    write_text(out_dir / f"{stem}.md", markdown_table(summary, title))
    write_grid(out_dir / f"{stem}.png", [e for e in examples if e["grid"]])
    pairs = summary.get("pairs")
    if pairs:
        write_pairs(out_dir / f"{stem}_pairs.png", [e for e in examples if e["group"] is not None])

    def pct(x, key=None):
        ci = summary["ci95"].get(key) if key else None
        text = "n/a" if x is None else f"{100 * x:.1f}"
        return f"{text} [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]" if ci and x is not None else text
    ret = summary["retrieval"] or {"a2i": {"r1": None}, "i2a": {"r1": None}}
    print(f"evaluated {summary['n']} samples ({summary['n_read']} read, {summary['skipped']} skipped): "
          f"cIoU@0.5 {pct(summary['ciou50'], 'ciou50')}, AUC {pct(summary['auc'])}, "
          f"pointing {pct(summary['pointing'], 'pointing')}, R@1 a2i {pct(ret['a2i']['r1'], 'r1_a2i')} "
          f"i2a {pct(ret['i2a']['r1'], 'r1_i2a')}, false alarm {pct(summary['false_alarm'])} "
          f"(brackets: 95 % intervals); wrote {args.json} and {stem}.csv/.md/.png in {out_dir}; "
          f"next: jsa-rt compare {out_dir / f'{stem}.csv'} OTHER.csv (another model on the same split)")
    if pairs:
        print(f"pair scenes: follows {pct(pairs['follows'], 'follows')} of {pairs['groups']} frames (chance "
              f"{pct(pairs['chance'])}, a map that never moves {pct(pairs['never_moves'])}); peak on another "
              f"object {pct(pairs['wrong_object'], 'wrong_object')} of {pairs['scenes']} scenes"
              + (f"; wrote {stem}_pairs.png" if args.grid else ""))
    return 0
