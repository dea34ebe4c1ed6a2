"""`jsa-rt export-triton`: the audio and visual graphs as a Triton Inference Server model repository.

  <out>/jsa_audio/config.pbtxt     wave (B,L) float32 -> audio_query (B,slots,D), audio_slot (B,D)
  <out>/jsa_audio/1/model.onnx
  <out>/jsa_visual/config.pbtxt    frame (B,S,S,3) uint8 RGB HWC, audio_query, audio_slot
  <out>/jsa_visual/1/model.onnx      -> heatmap (B,S,S), aud, img, image_slot, confidence
A client runs jsa_audio at the audio rate and sends its two outputs with every frame to jsa_visual
(what runtime/ort_backend.py does in-process). Both models batch on the first axis (Triton's
dynamic batcher), so the graphs must be exported with `--dynamic-batch`; config dims leave it out.

The visual graph also returns its `audio_slot` input unchanged; that echo is left out of the
config and of the written graph (the client has it, and TensorRT's ONNX parser renames an input
that is also an output). An output of batch shape only (confidence) is `dims: [1]` with
`reshape: { shape: [ ] }`, as Triton's model-configuration docs require.

`backend="tensorrt"`: `platform: "tensorrt_plan"`, with model.onnx and a README.txt beside each config
giving the trtexec command that builds `1/model.plan` on the serving GPU. Files are written atomically.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path

from ..atomic import atomic_path, write_text
from ..errors import InputError, JsaError
from ..shipped import DEFAULT_MODEL, SHIPPED, resolve_checkpoint

MODELS = ("jsa_audio", "jsa_visual")
BACKENDS = ("onnxruntime", "tensorrt")
TRITON_TYPES = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16", "DOUBLE": "TYPE_FP64",
                **{t: f"TYPE_{t}" for t in ("UINT8", "INT8", "INT16", "INT32", "INT64", "BOOL")}}
EXPORT_HINT = "re-export with `jsa-rt export-onnx --dynamic-batch --graphs audio,visual`"


# ---- the graphs ----------------------------------------------------------------------------------
def load_graph(path: Path):
    """The ONNX graph at `path` and its spec {inputs, outputs: [{name, onnx_type, dims}] (None = a
    dynamic axis), echo: names of outputs that only return an input}; a one-line error unless
    every tensor has a dynamic first axis."""
    import onnx
    from google.protobuf.message import Error as ProtobufError
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {path}; {EXPORT_HINT}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (ProtobufError, ValueError) as exc:           # not an ONNX file
        raise InputError(f"cannot read {path} as ONNX ({str(exc).strip()[:120]}); {EXPORT_HINT}") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise InputError(f"{path} keeps its weights in external files; export it as one .onnx file")

    def tensors(values):
        return [{"name": v.name, "onnx_type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                 "dims": [d.dim_value if d.HasField("dim_value") else None
                          for d in v.type.tensor_type.shape.dim]} for v in values]
    inputs, outputs = tensors(proto.graph.input), tensors(proto.graph.output)
    names = {t["name"] for t in inputs}
    spec = {"inputs": inputs, "outputs": [t for t in outputs if t["name"] not in names],
            "echo": [t["name"] for t in outputs if t["name"] in names]}
    for kind in ("inputs", "outputs"):
        for t in spec[kind]:
            if not t["dims"] or t["dims"][0] is not None:
                raise InputError(f"{path.name}: {kind[:-1]} {t['name']} has shape {t['dims']}, no dynamic "
                                 f"first (batch) axis, so Triton cannot batch it; {EXPORT_HINT}")
            if t["onnx_type"] not in TRITON_TYPES:
                raise InputError(f"{path.name}: {t['name']} is {t['onnx_type']}, a type Triton's "
                                 f"{'/'.join(BACKENDS)} backends do not take; re-export the graph")
    return proto, spec


def drop_echo(proto, spec: dict) -> bool:
    """Remove from `proto` the outputs that only return an input (spec["echo"]); True if any."""
    for echo in [o for o in proto.graph.output if o.name in spec["echo"]]:
        proto.graph.output.remove(echo)
    return bool(spec["echo"])


# ---- config.pbtxt ---------------------------------------------------------------------------------
def preferred_sizes(max_batch: int) -> list[int]:
    """Powers of two from 2, and max_batch itself: [2, 4, 8, 16] for 16, [1] for 1."""
    sizes = [1 << k for k in range(1, max_batch.bit_length()) if 1 << k < max_batch]
    return sizes + [max_batch]


def _tensor_block(t: dict) -> str:
    dims = [-1 if d is None else d for d in t["dims"][1:]]
    lines = [f"    name: {json.dumps(t['name'])}", f"    data_type: {TRITON_TYPES[t['onnx_type']]}",
             f"    dims: [ {', '.join(map(str, dims or [1]))} ]"]
    if not dims:                                  # batch-only tensor: Triton needs non-empty dims
        lines.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_text(name: str, spec: dict, *, source: str, max_batch: int, backend: str, instances: int,
                queue_delay_us: int, device: str) -> str:
    runner = 'backend: "onnxruntime"' if backend == "onnxruntime" else 'platform: "tensorrt_plan"'
    echo = f"# left out: {', '.join(spec['echo'])} (the graph returns that input unchanged)\n" if spec["echo"] else ""
    inputs, outputs = (",\n".join(map(_tensor_block, spec[k])) for k in ("inputs", "outputs"))
    return (f"# jsa-rt export-triton, from {source}; dims leave out the batch axis\n{echo}"
            f"name: {json.dumps(name)}\n{runner}\nmax_batch_size: {max_batch}\n"
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred_sizes(max_batch)))} ]\n"
            f"  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
            f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{device.upper()}\n  }}\n]\n")


def trtexec_command(spec: dict, max_batch: int) -> str:
    """trtexec, run in the model folder: model.onnx -> 1/model.plan, batch 1..max_batch."""
    from .tensorrt_build import optimisation_profile
    profile = optimisation_profile(spec["inputs"], max_batch=max_batch, opt_batch=max_batch)
    shapes = {k: ",".join(f"{n}:{'x'.join(map(str, p[k]))}" for n, p in profile.items())
              for k in ("min", "opt", "max")}
    return (f"trtexec --onnx=model.onnx --saveEngine=1/model.plan --minShapes={shapes['min']} "
            f"--optShapes={shapes['opt']} --maxShapes={shapes['max']}")


def trt_readme(name: str, spec: dict, max_batch: int) -> str:
    command = trtexec_command(spec, max_batch)
    return (f"{name}: Triton's tensorrt backend loads 1/model.plan (batch 1..{max_batch}), not here yet: a plan\n"
            "only runs on the GPU model and TensorRT version it was built with. Build it on the serving\n"
            "machine, in this folder, with the trtexec of the TensorRT in your Triton image (the same as in\n"
            "nvcr.io/nvidia/tensorrt:<yy.mm>-py3; NVIDIA's images keep it at /usr/src/tensorrt/bin/trtexec):\n\n"
            f"  {command}\n\nor with Docker, from this folder:\n\n"
            f"  docker run --rm --gpus=all -v \"$PWD\":/w -w /w nvcr.io/nvidia/tensorrt:<yy.mm>-py3 {command}\n")


# ---- the repository -------------------------------------------------------------------------------
def check_options(max_batch: int, backend: str, instances: int, queue_delay_us: int, device: str) -> None:
    for flag, value, low, what in (("--max-batch", max_batch, 1, "Triton batches up to it"),
                                   ("--instances", instances, 1, "model copies per device"),
                                   ("--queue-delay-us", queue_delay_us, 0, "microseconds")):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"{flag} {value}: use a whole number >= {low} ({what})")
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: use one of {', '.join(BACKENDS)}")
    if device not in ("gpu", "cpu") or (backend == "tensorrt" and device == "cpu"):
        raise InputError(f"--device {device}: use gpu{'' if backend == 'tensorrt' else ' or cpu'} "
                         f"with the {backend} backend")


def check_out(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the model repository")
    held = sorted(p.name for p in out.iterdir())[:5] if out.is_dir() else []
    if held and not force:
        raise InputError(f"--out {out} already holds {', '.join(held)}; choose an empty folder, or pass "
                         f"--force to replace {' and '.join(MODELS)}")


def write_model_repository(onnx_audio: Path, onnx_visual: Path, out: Path, *, max_batch: int = 16,
                           backend: str = "onnxruntime", instances: int = 1, queue_delay_us: int = 2000,
                           device: str = "gpu", force: bool = False) -> list[Path]:
    """Write the two Triton models into `out`; returns the files written."""
    import onnx
    check_options(max_batch, backend, instances, queue_delay_us, device)
    check_out(out, force)
    graphs = {name: (Path(src), *load_graph(src)) for name, src in zip(MODELS, (onnx_audio, onnx_visual))}
    for _, _, spec in graphs.values() if backend == "tensorrt" else ():
        trtexec_command(spec, max_batch)          # refuses fixed non-batch dims before any write
    written = []
    for name, (src, proto, spec) in graphs.items():
        folder = Path(out) / name
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)             # --force: the old model goes, not just its files
        folder.unlink(missing_ok=True)
        model = folder / ("1/model.onnx" if backend == "onnxruntime" else "model.onnx")
        with atomic_path(model) as tmp:
            if drop_echo(proto, spec):            # drop outputs that only echo an input
                onnx.save(proto, str(tmp))
            else:
                shutil.copyfile(src, tmp)
        written.append(model)
        if backend == "tensorrt":
            (folder / "1").mkdir(parents=True, exist_ok=True)     # trtexec writes the plan here
            written.append(write_text(folder / "README.txt", trt_readme(name, spec, max_batch)))
        written.append(write_text(folder / "config.pbtxt", config_text(
            name, spec, source=src.name, max_batch=max_batch, backend=backend, instances=instances,
            queue_delay_us=queue_delay_us, device=device)))
    return written


# ---- reading config.pbtxt back (the subset written above) -------------------------------------------
_TOKEN = re.compile(r'\s+|#[^\n]*|("(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+)|(.)')
_SCALARS = ((r"-?\d+", int), (r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", float),
            (r"true|false", lambda tok: tok == "true"), (r"[A-Za-z_]\w*", str))     # str: enums
REPEATED = ("input", "output", "instance_group")


def read_config(path: Path) -> dict:
    """Parse a config.pbtxt (protobuf text format: fields, messages, lists, strings, numbers,
    enums, comments) into a dict; `input`, `output` and `instance_group` are always lists."""
    tokens = [tok or stray for tok, stray in _TOKEN.findall(Path(path).read_text()) if tok or stray]
    try:
        return _fields(tokens, 0, None)[0]
    except (IndexError, ValueError) as exc:       # a stray character fails as a name or a value
        raise InputError(f"{path}: cannot parse it as protobuf text format ({exc})") from None


def _fields(tokens: list[str], i: int, close: str | None) -> tuple[dict, int]:
    out: dict = {}
    while (tokens[i] if i < len(tokens) else None) != close:
        key = tokens[i]
        if not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"expected a field name, got {key!r}")
        i += 2 if tokens[i + 1] == ":" else 1
        value, i = _value(tokens, i)
        if key in REPEATED and not isinstance(value, list):
            value = [value]
        if key in out:                            # a repeated field written twice: collect
            old = out[key] if isinstance(out[key], list) else [out[key]]
            value = old + (value if isinstance(value, list) else [value])
        out[key] = value
    return out, i + 1


def _value(tokens: list[str], i: int):
    tok = tokens[i]
    if tok == "{":
        return _fields(tokens, i + 1, "}")
    if tok == "[":
        items, i = [], i + 1
        while tokens[i] != "]":
            item, i = _value(tokens, i)
            items.append(item)
            i += tokens[i] == ","
        return items, i + 1
    if tok.startswith('"'):
        return json.loads(tok), i + 1
    for pattern, kind in _SCALARS:
        if re.fullmatch(pattern, tok):
            return kind(tok), i + 1
    raise ValueError(f"unexpected {tok!r}")


# ---- CLI --------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export-triton", help="write a Triton Inference Server model repository")
    p.add_argument("--checkpoint", default=None, help=f"shipped name (default {DEFAULT_MODEL}), .pt, or an .onnx "
                   "file / folder of <name>.audio.onnx + <name>.visual.onnx exported with --dynamic-batch")
    p.add_argument("--out", default="triton_repo", help="repository folder (default triton_repo)")
    p.add_argument("--max-batch", type=int, default=16, help="Triton max_batch_size (default 16)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="instance_group kind (default gpu)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batcher's wait (default 2000)")
    p.add_argument("--force", action="store_true", help="replace jsa_audio/ and jsa_visual/ in --out")
    return p


def source_graphs(checkpoint: str | None, workdir: Path, log=print) -> tuple[Path, Path]:
    """--checkpoint -> (audio.onnx, visual.onnx) with a dynamic batch, exporting a .pt if needed."""
    from ..runtime.ort_backend import graph_path
    from ..paths import WEIGHTS_DIR
    name = checkpoint or DEFAULT_MODEL
    path = Path(name)
    if name in SHIPPED:
        pair = tuple(graph_path(WEIGHTS_DIR / f"{name}.onnx", graph) for graph in ("audio", "visual"))
        try:
            for graph in pair:
                load_graph(graph)                 # a one-line error unless the batch is dynamic
            return pair
        except JsaError as exc:
            why = "are not installed" if "not found" in str(exc) else "have no dynamic batch axis"
            log(f"the shipped {name} audio/visual ONNX graphs {why}: exporting {name}.pt with a "
                f"dynamic batch (needs torch; a minute or so)")
        path = resolve_checkpoint(name)
    elif path.is_dir():
        stems = sorted(s for s in (p.name[:-len(".audio.onnx")] for p in path.glob("*.audio.onnx"))
                       if (path / f"{s}.visual.onnx").is_file())
        if len(stems) != 1:
            raise InputError(f"{path} holds {len(stems) or 'no'} <name>.audio.onnx + <name>.visual.onnx pairs"
                             f"{' (' + ', '.join(stems) + ')' if stems else ''}; pass --checkpoint "
                             f"{path}/<name>.onnx, or {EXPORT_HINT}")
        path = path / f"{stems[0]}.onnx"
    if path.suffix == ".onnx":
        base = path.with_name(re.sub(r"\.(audio|visual)\.onnx$", ".onnx", path.name))
        return graph_path(base, "audio"), graph_path(base, "visual")
    from .onnx_export import export_all, load_model
    model, stem = load_model(str(path))
    paths = export_all(model, Path(workdir) / f"{stem}.onnx", graphs=("audio", "visual"),
                       dynamic_batch=True, model_name=stem, log=log)
    return paths["audio"], paths["visual"]


def run(args) -> int:
    out = Path(args.out)
    check_options(args.max_batch, args.backend, args.instances, args.queue_delay_us, args.device)
    check_out(out, args.force)                    # before a minute of exporting
    with tempfile.TemporaryDirectory(prefix="jsa-triton-") as work:
        audio, visual = source_graphs(args.checkpoint, Path(work))
        write_model_repository(audio, visual, out, max_batch=args.max_batch, backend=args.backend,
                               instances=args.instances, queue_delay_us=args.queue_delay_us,
                               device=args.device, force=args.force)
    build = (f"build the plans ({' and '.join(str(out / m / 'README.txt') for m in MODELS)}), then "
             if args.backend == "tensorrt" else "")
    print(f"wrote {out}/ ({', '.join(MODELS)}; {args.backend} backend, max batch {args.max_batch}); next: {build}"
          f"docker run --rm {'--gpus=all ' if args.device == 'gpu' else ''}-p8000:8000 -p8001:8001 -p8002:8002 "
          f"-v {out if out.is_absolute() else '$PWD/' + str(out)}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
          f"tritonserver --model-repository=/models")
    return 0
