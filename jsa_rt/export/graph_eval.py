"""`jsa-rt eval` on what is deployed: an ONNX export (fp32, fp16 weights, int8) or a TensorRT
plan, scored with the same metrics and files as a checkpoint, so an export's accuracy is
measured, not assumed. Checkpoints and shipped names go to train/eval_cli.py unchanged.

It lives above the runtime (a backend runs the graph) and the trainer's evaluation (the
metrics), which is why the `eval` command enters here.
"""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..runtime import load_backend
from ..runtime.batch import BackendModel
from ..train import eval_cli

GRAPH_SUFFIXES = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt"}

add_parser = eval_cli.add_parser


def graph_backend(checkpoint: str, backend: str | None = None) -> str | None:
    """The runtime backend that scores this model, or None for torch (the checkpoint itself)."""
    by_suffix = next((b for suffix, b in GRAPH_SUFFIXES.items() if str(checkpoint).endswith(suffix)), None)
    if backend == "torch" and by_suffix:
        raise InputError(f"--backend torch needs a checkpoint (.pt or shipped name), got {checkpoint}")
    return None if backend == "torch" else backend or by_suffix


def run(args: argparse.Namespace) -> int:
    backend_name = graph_backend(args.checkpoint, getattr(args, "backend", None))
    if backend_name is None:
        return eval_cli.run(args)
    device = None if args.device == "auto" else args.device
    backend = load_backend(backend_name, model=args.checkpoint, device=device)
    try:
        meta = {"kind": backend.describe(), "config": backend.config}
        return eval_cli.evaluate_and_report(args, BackendModel(backend), meta, "cpu")
    finally:
        backend.close()
