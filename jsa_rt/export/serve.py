"""`jsa-rt serve`: the audio and visual branches on a real Triton Inference Server, through PyTriton.

Three models, each batched on its first axis by Triton's dynamic batcher:

  jsa_audio   wave (B, L) float32                        -> audio_query (B, Q, D), audio_slot (B, D)
  jsa_visual  frame (B, S, S, 3) uint8 RGB, audio_query, audio_slot
                                                         -> heatmap (B, S, S), aud, img, image_slot, confidence (B, 1)
  jsa_info    (no batching) any int32                   -> the model's config as JSON, for clients

A stream's audio state (audio_query, audio_slot) travels by value with each frame, so the server
keeps nothing per stream and any replica serves any frame. The graphs are exported once with a
dynamic batch axis into engines/serve/ (that needs torch) and run in this process on onnxruntime,
or on TensorRT engines built from them (serve_trt.py; --backend tensorrt, or auto where TensorRT
and a CUDA device work).

Triton's Python-backend stub in the nvidia-pytriton wheel links Debian's libpython3.11, so the
server runs under Debian's /usr/bin/python3.11 in `.venv-serve` (made by tools/setup.sh). Started
from another interpreter, `jsa-rt serve` exports the graphs if needed, then re-executes itself there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from ..args import non_negative_int, positive_int
from ..atomic import write_json
from ..errors import EngineError, InputError
from ..paths import ENGINES_DIR, PACKAGE_DIR, file_sha256
from ..runtime.ort_backend import graph_path
from ..shipped import DEFAULT_MODEL, resolve_checkpoint
from .serve_branches import Branch, OrtBranch

SERVE_DIR = ENGINES_DIR / "serve"                       # dynamic-batch graphs exported for serving
SERVE_VENV = PACKAGE_DIR.parent / ".venv-serve"
SETUP_HINT = "run tools/setup.sh (it makes .venv-serve with Debian's python3.11 and nvidia-pytriton)"


# ---- the graphs ---------------------------------------------------------------------------------
def prepare_graphs(model: str | None, log=print) -> Path:
    """The base path (x.onnx; the server reads x.audio.onnx and x.visual.onnx) of dynamic-batch
    graphs for `model`. An .onnx is used as given; a checkpoint or shipped name is exported once
    into engines/serve/ and reused while the checkpoint's sha256 is unchanged."""
    name = str(model or DEFAULT_MODEL)
    if name.endswith(".onnx"):
        return Path(name)
    source = resolve_checkpoint(name)
    base = SERVE_DIR / f"{source.stem}.onnx"
    stamp = SERVE_DIR / f"{source.stem}.source.json"
    digest = file_sha256(source)
    try:
        fresh = json.loads(stamp.read_text()).get("checkpoint_sha256") == digest
    except (OSError, ValueError, AttributeError):
        fresh = False
    if fresh and all(graph_path(base, g).is_file() for g in ("audio", "visual")):
        return base
    if importlib.util.find_spec("torch") is None:
        raise EngineError(f"the dynamic-batch graphs of {name} are not exported yet and this interpreter has "
                          f"no torch: run `.venv/bin/jsa-rt serve --model {name}` once (it exports them), or "
                          f"pass --model X.onnx with X.audio.onnx/X.visual.onnx from `jsa-rt export-onnx "
                          f"--dynamic-batch --graphs audio,visual`")
    from .triton_repo import source_graphs
    log(f"serve: exporting {source.name} with a dynamic batch axis into {SERVE_DIR} (torch, once; about a minute)")
    source_graphs(str(source), SERVE_DIR, log=log)
    write_json(stamp, {"checkpoint": str(source), "checkpoint_sha256": digest})
    return base


# ---- the server -----------------------------------------------------------------------------------
def bind_models(triton, audio: Branch, visual: Branch, *, max_batch: int, queue_delay_us: int) -> None:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from .triton_repo import preferred_sizes

    def batched():          # max_batch 1 (--no-batching): each request runs alone
        return ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(
            max_queue_delay_microseconds=queue_delay_us, preferred_batch_size=preferred_sizes(max_batch)))
    for name, branch in (("jsa_audio", audio), ("jsa_visual", visual)):
        triton.bind(model_name=name, infer_func=batch(branch), inputs=branch.tensors("inputs"),
                    outputs=branch.tensors("outputs"), config=batched(), strict=True)

    info = json.dumps({"config": json.loads(visual.meta["jsa_rt.config"]),
                       "model_name": visual.meta.get("jsa_rt.model_name", "?"),
                       "precision": visual.meta.get("jsa_rt.precision", "fp32"), "max_batch": max_batch})

    def describe(requests):
        return [{"info": np.array([info.encode()], dtype=object)} for _ in requests]
    triton.bind(model_name="jsa_info", infer_func=describe,
                inputs=[Tensor(name="want", dtype=np.int32, shape=(1,))],
                outputs=[Tensor(name="info", dtype=bytes, shape=(1,))], config=ModelConfig(batching=False))


def load_branches(base: Path, backend: str, *, max_batch: int, threads: int | None, log=print):
    """(audio, visual) Branches on `backend` ('onnxruntime' | 'tensorrt')."""
    if backend == "tensorrt":
        from .serve_trt import trt_branches
        return trt_branches(base, max_batch=max_batch, log=log)
    return tuple(OrtBranch(graph_path(base, g), threads) for g in ("audio", "visual"))


def serve(base: Path, *, max_batch: int, queue_delay_us: int, address: str, http_port: int, grpc_port: int,
          metrics_port: int, threads: int | None = None, backend: str = "auto", log=print) -> None:
    """Run Triton with the three models until SIGINT or SIGTERM."""
    import logging
    from pytriton.triton import Triton, TritonConfig
    from .serve_trt import choose_backend, describe
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    backend, note = choose_backend(backend)
    audio, visual = load_branches(base, backend, max_batch=max_batch, threads=threads, log=log)
    runs_on = f"{backend} {describe(visual)}" if backend == "tensorrt" else backend
    runs_on += f", {note}" if note else ""
    config = TritonConfig(http_address=address, http_port=http_port, grpc_address=address, grpc_port=grpc_port,
                          metrics_address=address, metrics_port=metrics_port, allow_metrics=True,
                          exit_timeout_secs=5, log_verbose=0)

    def stop(*_):           # SIGTERM ends the serve loop the way Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    triton = None
    try:
        triton = Triton(config=config)
        bind_models(triton, audio, visual, max_batch=max_batch, queue_delay_us=queue_delay_us)
        triton.run()                              # starts tritonserver and waits until the models are ready
        host = "127.0.0.1" if address in ("0.0.0.0", "") else address
        log(f"serve: ready: {visual.meta.get('jsa_rt.model_name', base.stem)} on grpc://{host}:{grpc_port} and "
            f"http://{host}:{http_port} ({runs_on}; max batch {max_batch}), metrics http://{host}:{metrics_port}"
            f"/metrics; next: jsa-rt live --server grpc://{host}:{grpc_port} --camera ...  (Ctrl-C stops)")
        triton.serve()                            # returns on SIGINT/SIGTERM, or if the server dies
    except KeyboardInterrupt:
        pass
    finally:
        if triton is not None:
            triton.stop()
        for branch in (audio, visual):
            branch.close()
    log("serve: stopped")


# ---- which interpreter --------------------------------------------------------------------------
def can_host_here() -> bool:
    """PyTriton is installed and this is Debian's own python (the one its stub links)."""
    return sys.base_prefix == "/usr" and importlib.util.find_spec("pytriton") is not None


def serve_python() -> Path:
    python = Path(os.environ.get("JSA_SERVE_PYTHON", SERVE_VENV / "bin" / "python"))
    if not python.is_file():
        raise EngineError(f"jsa-rt serve runs Triton under Debian's python3.11 in {SERVE_VENV}, which is "
                          f"missing: {SETUP_HINT}")
    return python


# ---- CLI ------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="serve the model on Triton Inference Server (many streams, one server)",
                              description="Triton Inference Server (through PyTriton) hosting the audio and "
                                          "visual branches with dynamic batching. Ctrl-C or SIGTERM stops it.")
    p.add_argument("--model", "--checkpoint", dest="model", default=None,
                   help=f"shipped name (default {DEFAULT_MODEL}), .pt, or X.onnx with dynamic-batch X.audio.onnx/X.visual.onnx")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="what runs the graphs inside the server: tensorrt builds engines (batch 1..--max-batch) "
                        "once and caches them next to the graphs, and needs tensorrt, cuda-python and onnx "
                        "in the server's interpreter (.venv-serve) on an NVIDIA GPU; auto (default) takes "
                        "tensorrt where that works, else onnxruntime, and the ready line says which")
    p.add_argument("--max-batch", type=positive_int, default=8, help="largest batch Triton forms (default 8)")
    p.add_argument("--no-batching", action="store_true", help="every request runs alone (same as --max-batch 1)")
    p.add_argument("--queue-delay-us", type=non_negative_int, default=1000,
                   help="how long a request may wait for others to join its batch (default 1000)")
    p.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 serves "
                                                          "other machines)")
    p.add_argument("--http-port", type=positive_int, default=8000)
    p.add_argument("--grpc-port", type=positive_int, default=8001)
    p.add_argument("--metrics-port", type=positive_int, default=8002, help="Prometheus metrics (default 8002)")
    p.add_argument("--threads", type=positive_int, default=None, help="onnxruntime threads per model")
    return p


def run(args) -> int:
    ports = [args.http_port, args.grpc_port, args.metrics_port]
    if len(set(ports)) < 3 or max(ports) > 65535:
        raise InputError(f"--http-port, --grpc-port and --metrics-port must be three different ports "
                         f"up to 65535, got {', '.join(map(str, ports))}")
    base = prepare_graphs(args.model)
    max_batch = 1 if args.no_batching else args.max_batch
    if not can_host_here():
        python = serve_python()
        argv = [str(python), "-m", "jsa_rt.cli", "serve", "--model", str(base), "--backend", args.backend,
                "--max-batch", str(max_batch),
                "--queue-delay-us", str(args.queue_delay_us), "--address", args.address,
                "--http-port", str(args.http_port), "--grpc-port", str(args.grpc_port),
                "--metrics-port", str(args.metrics_port)] + (["--threads", str(args.threads)] if args.threads else [])
        sys.stdout.flush()
        os.execv(argv[0], argv)               # the same command under the interpreter Triton's stub links
    serve(base, max_batch=max_batch, queue_delay_us=args.queue_delay_us, address=args.address,
          http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
          threads=args.threads, backend=args.backend, log=lambda text: print(text, flush=True))
    return 0
