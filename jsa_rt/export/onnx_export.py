"""`jsa-rt export-onnx`: a checkpoint -> three "raw in, maps out" ONNX graphs.

  <base>.onnx         full:   frame uint8 (B,S,S,3) RGB HWC + wave float32 (B,L) -> heatmap (B,S,S),
                              aud (B,g,g), img (B,g,g), image_slot (B,D), audio_slot (B,D),
                              confidence (B,)
  <base>.audio.onnx   audio:  wave -> audio_query (B,slots,D), audio_slot (B,D)
  <base>.visual.onnx  visual: frame, audio_query, audio_slot -> the six outputs above
The live loop runs the audio graph at the audio rate and the visual graph per frame.

B is 1 unless --dynamic-batch. `--fp16` writes `<name>.fp16.onnx` (+ siblings): fp16 encoders and
slot updates, fp32 islands for the front end, the slot softmax/eps/renormalisation and the maps
(jsa_rt/model/wrappers.py). The model config and graph facts travel in the ONNX metadata (`jsa_rt.*`), so
runtimes need neither torch nor the checkpoint. Opset 18; ops checked against TensorRT 10.3.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

from ..config import PRESETS
from ..errors import EngineError, InputError
from ..paths import file_sha256
from ..shipped import DEFAULT_MODEL, SHIPPED
from . import onnx_checks
from ..runtime.engine_cache import DEFAULT_ROOT
from ..runtime.ort_backend import graph_path   # x.onnx -> x.audio.onnx / x.visual.onnx

OPSET = 18
GRAPHS = ("full", "audio", "visual")


def parse_graphs(text: str) -> list[str]:
    """--graphs "full,audio" -> ["full", "audio"]; a one-line error for a name not in GRAPHS."""
    graphs = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown or not graphs:
        raise argparse.ArgumentTypeError(f"got {text!r}; use a comma list of {', '.join(GRAPHS)}")
    return graphs


# ---- file names -----------------------------------------------------------------------------------
def sibling_paths(full: Path, graphs=GRAPHS) -> dict[str, Path]:
    """The graphs that exist next to a full-graph ONNX file (full first)."""
    full = Path(full)
    if not full.is_file():
        raise EngineError(f"ONNX file not found: {full}; make it with `jsa-rt export-onnx`")
    found = {g: graph_path(full, g) for g in graphs}
    return {g: p for g, p in found.items() if p.is_file()}


def default_base(checkpoint: str | None, precision: str, root: Path = DEFAULT_ROOT, tag: str = "") -> Path:
    """Shipped name or None -> engines/<name><tag>[.fp16].onnx; a file -> next to it."""
    suffix = tag + (".fp16.onnx" if precision == "fp16" else ".onnx")
    name = checkpoint or DEFAULT_MODEL
    if name in SHIPPED:
        return Path(root) / f"{name}{suffix}"
    path = Path(name)
    return path.with_name(path.stem + suffix)


# ---- inputs -----------------------------------------------------------------------------------------
def example_inputs(cfg, graph: str = "full", batch: int = 1, seed: int = 0,
                   query_slots: int | None = None) -> dict[str, np.ndarray]:
    """Fixed, deterministic inputs (export tracing, validation): a random RGB frame and a
    tone-plus-noise waveform at ~-20 dBFS. Visual-graph state comes from an L2-normalised draw."""
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    frame = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    t = np.arange(cfg.num_samples) / cfg.sample_rate
    tone = 0.1 * np.sin(2 * np.pi * 440.0 * t)
    wave = (tone + 0.02 * rng.standard_normal((batch, cfg.num_samples))).astype(np.float32)
    if graph == "full":
        return {"frame": frame, "wave": wave}
    if graph == "audio":
        return {"wave": wave}
    slots = cfg.num_slots if query_slots is None else query_slots     # EZ-VSL: 1
    query = rng.standard_normal((batch, slots, cfg.dim)).astype(np.float32)
    slot = rng.standard_normal((batch, cfg.dim)).astype(np.float32)
    slot /= np.linalg.norm(slot, axis=1, keepdims=True)
    return {"frame": frame, "audio_query": query, "audio_slot": slot}


# ---- models ------------------------------------------------------------------------------------------
def load_model(checkpoint: str | None):
    from ..model.checkpoint import load_checkpoint
    model, meta = load_checkpoint(checkpoint, device="cpu")
    return model, Path(meta["path"]).stem


def regrid(model, image_size: int | None, stride: int | None):
    """The model on another input size or output stride (model.on_grid), a one-line error if it cannot."""
    from ..model import on_grid
    try:
        return on_grid(model, image_size or model.cfg.image_size, stride).eval()
    except ValueError as exc:
        raise InputError(f"{exc} (--image-size / --stride)") from None


# ---- export ------------------------------------------------------------------------------------------
def _atomic_save(model_proto, path: Path) -> None:
    import onnx
    from ..atomic import atomic_path
    with atomic_path(path) as tmp:
        onnx.save(model_proto, str(tmp))


def export_graph(model, graph: str, path: Path, *, precision: str = "fp32",
                 dynamic_batch: bool = False, model_name: str = "model", plugins: str = "none"):
    """Export one graph; returns the ModelProto written to `path`."""
    import onnx
    import torch
    from ..model import wrappers

    cfg = model.cfg
    wrapper_cls, input_names, output_names = wrappers.GRAPHS[graph]
    net = wrappers.half_precision(model) if precision == "fp16" else model.float().eval()
    table = None
    if plugins == "triton":
        from .trt_plugins import translation_table, use_plugin_ops
        net, table = use_plugin_ops(net if precision == "fp16" else copy.deepcopy(net)), translation_table()
    wrapper = wrapper_cls(net).eval()
    # torch.export specialises size-1 dims: trace a dynamic batch with 2 examples
    example = example_inputs(cfg, graph, batch=2 if dynamic_batch else 1, query_slots=query_slots(model))
    args = tuple(torch.from_numpy(example[n]) for n in input_names)
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=64)
        dynamic = {n: {0: batch} for n in input_names}
    with torch.no_grad():
        # optimize=False: onnxscript's default rewrites drop `x + 1e-8` as "adding zero"
        # (math.isclose with an absolute tolerance of 1e-8), which would delete the slot
        # attention's eps; constant folding alone is safe.
        program = torch.onnx.export(wrapper, args, dynamo=True, opset_version=OPSET,
                                    input_names=list(input_names), output_names=list(output_names),
                                    dynamic_shapes=dynamic, optimize=False, verbose=False,
                                    custom_translation_table=table)
    proto = _fold_constants(program.model)
    bad = onnx_checks.unsupported_ops(proto, plugin_domains=("jsa_rt",) if plugins == "triton" else ())
    if bad:
        raise EngineError(f"the {graph} graph uses ops TensorRT 10.3 lacks: {bad}; this is a jsa-rt bug, "
                          f"please report it")
    lost = [i["softmax"] for i in onnx_checks.softmax_islands(proto)
            if not any(op == "Add" for op, _ in i["followers"])]
    if lost:
        raise EngineError(f"the exported {graph} graph lost the slot attention eps after {lost}; "
                          f"this is a jsa-rt/exporter bug, please report it")
    onnx.helper.set_model_props(proto, {
        "jsa_rt.graph": graph, "jsa_rt.precision": precision, "jsa_rt.plugins": plugins,
        "jsa_rt.model_name": model_name, "jsa_rt.model_kind": getattr(model, "kind", "jsa"),
        "jsa_rt.config": json.dumps(cfg.to_dict(), sort_keys=True),
        "jsa_rt.inputs": json.dumps({n: list(example[n].shape[1:]) for n in input_names}),
        "jsa_rt.channel_order": wrappers.CHANNEL_ORDER,
        "jsa_rt.dynamic_batch": str(bool(dynamic_batch)).lower(),
    })
    proto.doc_string = f"jsa-rt {graph} graph ({precision}); frame: {wrappers.CHANNEL_ORDER}"
    _atomic_save(proto, Path(path))
    return proto


def _fold_constants(ir_model):
    from onnxscript import ir, optimizer
    optimizer.fold_constants(ir_model)
    optimizer.remove_unused_nodes(ir_model)
    return ir.to_proto(ir_model)


def query_slots(model) -> int:
    """Audio queries per clip: the slots for JSA, one global embedding for EZ-VSL."""
    return 1 if getattr(model, "kind", "jsa") == "ezvsl" else model.cfg.num_slots


def export_all(model, base: Path, *, precision: str = "fp32", graphs=GRAPHS,
               dynamic_batch: bool = False, model_name: str = "model", plugins: str = "none",
               log=print) -> dict[str, Path]:
    out = {}
    for i, graph in enumerate(graphs, 1):
        path = graph_path(base, graph)
        start = time.perf_counter()
        log(f"[{i}/{len(graphs)}] exporting the {graph} graph ({precision}) -> {path}")
        export_graph(model, graph, path, precision=precision, dynamic_batch=dynamic_batch,
                     model_name=model_name, plugins=plugins)
        log(f"      {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
        out[graph] = path
    return out


def export_for_engine(checkpoint, precision, plugins, graphs, root: Path = DEFAULT_ROOT) -> dict:
    """What build-engine needs: the ONNX graphs of a checkpoint at the given precision, in the
    engine cache's onnx/ folder. A graph is reused only if it was exported from a file with the
    same sha256 (recorded beside it), so a retrained `best.pt` is never built from its
    predecessor's graphs; reusing needs no torch, exporting does."""
    from ..shipped import resolve_checkpoint
    source = resolve_checkpoint(checkpoint)         # no torch: reusing cached graphs needs none
    name = source.stem
    base = Path(root) / name / "onnx" / default_base(name, precision).name
    if plugins == "triton":
        base = base.with_name(base.name.replace(".onnx", ".triton.onnx"))
    stamp = base.with_name(base.name.replace(".onnx", ".source.json"))
    digest = file_sha256(source)
    try:
        recorded = json.loads(stamp.read_text())
        exported = set(recorded["graphs"]) if recorded["checkpoint_sha256"] == digest else set()
    except (OSError, ValueError, KeyError, TypeError):
        exported = set()
    missing = [g for g in graphs if g not in exported or not graph_path(base, g).is_file()]
    if missing:
        model, _ = load_model(checkpoint)
        export_all(model, base, precision=precision, graphs=missing, model_name=name, plugins=plugins)
        from ..atomic import write_json
        write_json(stamp, {"checkpoint": str(source), "checkpoint_sha256": digest,
                           "graphs": sorted(exported | set(missing))})
    return {g: graph_path(base, g) for g in graphs}


# ---- CLI ---------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export-onnx", help="export raw-in/maps-out ONNX graphs (full, audio, visual)",
        description="Export a checkpoint as three ONNX graphs taking the raw camera frame "
                    "(uint8 RGB HWC) and waveform: full, audio branch, visual branch.")
    p.add_argument("--checkpoint", default=None, help=f"checkpoint .pt or shipped name (default {DEFAULT_MODEL})")
    p.add_argument("--preset", default=None, choices=list(PRESETS), help="random weights of this preset instead (timing)")
    p.add_argument("--fp16", action="store_true", help="fp16 graph with fp32 islands")
    p.add_argument("--out", default=None, help="full-graph path (siblings get .audio/.visual)")
    p.add_argument("--graphs", type=parse_graphs, default=list(GRAPHS), help="which graphs (full,audio,visual)")
    p.add_argument("--dynamic-batch", action="store_true", help="leading batch dim dynamic (1..64)")
    p.add_argument("--plugins", choices=("none", "triton"), default="none",
                   help="triton: slot attention as a TensorRT plugin node (for build-engine --plugins triton)")
    p.add_argument("--image-size", type=int, default=None,
                   help="export on another input size (the same weights; default: the checkpoint's)")
    p.add_argument("--stride", type=int, default=None,
                   help="the image encoder's output stride: 16 gives EfficientNet-Lite0 models a token grid "
                        "twice as fine (better on small objects, about 2x the visual branch's work)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="store weights that fp16 represents exactly as fp16 (+ Cast): half the file, "
                        "same fp32 results (how the shipped models are stored)")
    p.add_argument("--int8", type=Path, default=None, metavar="SCENES",
                   help="also write an int8 form for CPUs (<base>.int8.onnx: the image encoder quantized, "
                        "onnxruntime), calibrated on 128 frames and sounds of the val split of this "
                        "`jsa-rt make-scenes` folder")
    return p


def run(args) -> int:
    precision = "fp16" if args.fp16 else "fp32"
    if args.preset:
        from ..model import random_model          # torch: only for random weights
        model, name = random_model(args.preset), f"random-{args.preset}"
        base = Path(args.out) if args.out else DEFAULT_ROOT / name / f"{name}{'.fp16' if args.fp16 else ''}.onnx"
    else:
        model, name = load_model(args.checkpoint)
        tag = ""
        if args.image_size or args.stride:      # a file of its own: e.g. edge-jsa-listen.384s16.onnx
            model = regrid(model, args.image_size, args.stride)
            tag = f".{model.cfg.image_size}s{model.cfg.image_stride}"
        base = Path(args.out) if args.out else default_base(args.checkpoint, precision, tag=tag)
    if args.int8 is not None:
        if precision != "fp32" or args.preset or args.plugins != "none":
            raise InputError("--int8 quantizes an fp32 export of a checkpoint: drop --fp16, --preset and --plugins")
        if args.graphs != list(GRAPHS):
            raise InputError("--int8 needs all three graphs: drop --graphs")
        from .onnx_int8 import open_calibration
        open_calibration(model.cfg, args.int8)             # a bad folder fails now, not after the export
    paths = export_all(model, base, precision=precision, graphs=args.graphs,
                       dynamic_batch=args.dynamic_batch, model_name=name, plugins=args.plugins)
    if args.int8 is not None:
        from .onnx_int8 import quantize_export
        int8 = base.with_name(base.name[:-len(".onnx")] + ".int8.onnx")
        paths = quantize_export(base, int8, args.int8)
    if args.fp16_weights and precision == "fp32":
        from .onnx_compact import store_weights_fp16
        for path in paths.values():
            store_weights_fp16(path)
    total = sum(p.stat().st_size for p in paths.values()) / 1e6
    first = next(iter(paths.values()))
    flag = " --fp16" if args.fp16 else ""
    if args.int8 is not None:
        print(f"exported and quantized {len(paths)} graph(s), {total:.1f} MB, int8 image encoder: {first} -> next: "
              f"jsa-rt eval --checkpoint {first} --data SCENES --split test (its accuracy), then "
              f"jsa-rt live --backend onnxruntime --model {first}")
        return 0
    print(f"exported {len(paths)} graph(s), {total:.1f} MB, {precision}: {first} -> next: "
          f"jsa-rt build-engine{flag} --onnx {first}  (or run it: --backend onnxruntime --model {first})")
    return 0
