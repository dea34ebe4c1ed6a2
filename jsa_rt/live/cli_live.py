"""`jsa-rt live`, `jsa-rt demo`, `jsa-rt devices`, `jsa-rt doctor`: argument parsing only.

The work lives in pipeline.py (live), demo.py, devices.py and doctor.py. Nothing here imports
torch: with the onnxruntime or TensorRT backend the whole live path runs without it.
"""
from __future__ import annotations

import argparse
import shlex

from ..args import non_negative_float, non_negative_int, positive_float, positive_int, unit_interval
from ..config import PRESETS
from ..errors import JsaError
from ..shipped import DEFAULT_MODEL, terms_line
from .settings import LiveOptions
from .preprocess import CROP_MODES
from .render import COLORMAPS, RenderOptions

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
LIVE_DEFAULTS = LiveOptions()


def load_backend_factory(backend: str, model: str | None, preset: str | None, device: str | None,
                         threads: int | None = None, server: str | None = None):
    """A function that creates the backend; the pipeline calls it on its inference thread."""
    try:
        from ..runtime import load_backend
    except ImportError:
        raise JsaError("jsa_rt.runtime has no load_backend in this install: reinstall jsa-rt") from None
    extra = {"threads": threads} if threads else {}
    if server:                        # inference on a `jsa-rt serve` server: it chooses the model
        if model or preset or backend != "auto" or threads or device:
            raise JsaError("--server runs the model on the server: drop --model/--preset/--backend/--device/"
                           "--threads (choose them on `jsa-rt serve`)")
        from ..runtime.triton_client import parse_server_url
        parse_server_url(server)      # a bad URL fails here, before any device opens
        return lambda: load_backend(server=server)
    return lambda: load_backend(backend, model, preset=preset, device=device, **extra)


# ---- shared option groups ------------------------------------------------------------------------
def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference backend (auto: TensorRT engine > onnxruntime > torch)")
    g.add_argument("--model", "--checkpoint", dest="model", default=None,
                   help=f"checkpoint .pt / .onnx / .engine or shipped name (default {DEFAULT_MODEL})")
    g.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="random weights of this preset (timing only: no checkpoint)")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="CPU inference threads (default: the backend's; fewer leaves cores for capture)")


def add_render_options(p: argparse.ArgumentParser) -> None:
    d = RenderOptions()
    g = p.add_argument_group("rendering")
    g.add_argument("--persistence-ms", type=non_negative_float, default=d.persistence_ms,
                   help=f"temporal smoothing time constant (default {d.persistence_ms:g}; 0 = off)")
    g.add_argument("--min-level-db", type=float, default=d.min_level_db,
                   help=f"'no source' below this audio level, dBFS (default {d.min_level_db:g})")
    g.add_argument("--noise-margin-db", type=positive_float, default=d.noise_margin_db, metavar="DB",
                   help="also 'no source' until the level is DB above the room's noise floor (the 10th "
                        "percentile of the last 30 s): for steady background noise above --min-level-db; "
                        "6 is a good start. Off by default: a source that sounds nearly all the time "
                        "becomes the floor too")
    g.add_argument("--min-confidence", type=unit_interval, default=d.min_confidence,
                   help="'no source' below this model confidence, 0-1 (default: the model's own, "
                        "chosen on val and stored in its checkpoint: 0.3 for edge-jsa, 0 for edge-jsa-listen)")
    g.add_argument("--overlay-alpha", type=unit_interval, default=d.alpha, help=f"heatmap opacity (default {d.alpha:g})")
    g.add_argument("--colormap", choices=COLORMAPS, default=d.colormap)
    g.add_argument("--no-hud", action="store_true", help="no text or level meter on the frames")
    g.add_argument("--crop", choices=CROP_MODES, default=LIVE_DEFAULTS.crop,
                   help="frame to model square: resize the whole frame (default) or crop its centre")


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="OUT.mp4", help="record the annotated video (+ sound)")
    g.add_argument("--headless", action="store_true", help="no window")
    g.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds")
    g.add_argument("--log-json", default=None, metavar="FILE",
                   help="one JSON object per rendered frame (t, peak, confidence, latency_ms, backend, ...)")


def render_options(args) -> RenderOptions:
    return RenderOptions(persistence_ms=args.persistence_ms, min_level_db=args.min_level_db,
                         noise_margin_db=args.noise_margin_db, min_confidence=args.min_confidence, alpha=args.overlay_alpha,
                         colormap=args.colormap, show_hud=not args.no_hud)


def _progress(text: str) -> None:
    print(text, flush=True)


# ---- live ---------------------------------------------------------------------------------------
def add_live_parser(sub):
    p = sub.add_parser("live", help="live localization from a camera and a microphone (or files)",
                       description="Live sound source localization. Ctrl-C stops cleanly.")
    g = p.add_argument_group("sources")
    g.add_argument("--camera", "--input", dest="camera", default=LIVE_DEFAULTS.camera,
                   help="0, /dev/video0, v4l2:///dev/video0, csi://0, file://clip.mp4 or a path, "
                        "rtsp://..., or a GStreamer pipeline (default 0)")
    g.add_argument("--mic", default=None,
                   help="default, a device index, a name substring, or file://clip.wav (default: the "
                        "soundtrack when --camera is a video file, else the default microphone)")
    g.add_argument("--input-width", type=positive_int, default=None)
    g.add_argument("--input-height", type=positive_int, default=None)
    g.add_argument("--input-rate", type=positive_float, default=None, help="camera frame rate (files: playback rate)")
    g.add_argument("--max-side", type=non_negative_int, default=LIVE_DEFAULTS.max_side, metavar="PX",
                   help="shrink larger frames right after capture so the longer side is at most PX: "
                        "the model sees a few hundred pixels, and drawing and recording 4K costs more "
                        f"than the model (default {LIVE_DEFAULTS.max_side}; 0 keeps the source's size)")
    g.add_argument("--hfov", type=float, default=None, metavar="DEG",
                   help="the camera's horizontal field of view: --log-json then gives the source's "
                        "bearing (azimuth, elevation in degrees)")
    g.add_argument("--loop", action="store_true", help="restart files at their end")
    g.add_argument("--reconnect", action="store_true", help="reopen a camera or stream that stops")
    g.add_argument("--no-pace", action="store_true",
                   help="files: process every frame as fast as possible instead of in real time")
    a = p.add_argument_group("audio")
    a.add_argument("--audio-window", type=float, default=None, help="seconds of audio (default: the model's)")
    a.add_argument("--audio-hop", type=float, default=LIVE_DEFAULTS.audio_hop,
                   help=f"audio branch refresh period, s (default {LIVE_DEFAULTS.audio_hop:g})")
    a.add_argument("--av-offset-ms", type=float, default=LIVE_DEFAULTS.av_offset_ms,
                   help="how much later the sound arrives than the picture (default 0)")
    add_model_options(p)
    p.add_argument("--server", default=None, metavar="URL",
                   help="run inference on a `jsa-rt serve` server: grpc://HOST:8001 or http://HOST:8000 "
                        "(capture, audio window, rendering and outputs stay here)")
    add_render_options(p)
    add_output_options(p)
    return p


def default_mic(camera: str) -> str:
    """A video file brings its own sound; anything else listens to the default microphone."""
    from .video import parse_video_uri
    try:
        spec = parse_video_uri(camera)
    except JsaError:
        return "default"                  # the camera's own error will say what is wrong
    return f"file://{spec.target}" if spec.kind == "file" else "default"


def sink_path(spec: str | None) -> str | None:
    """`--output file://out.mp4` is the file out.mp4, as for open_sink (checks and messages see the path)."""
    return spec[len("file://"):] if spec and spec.startswith("file://") else spec


def live_options(args):
    if args.audio_hop <= 0:
        raise JsaError(f"--audio-hop must be positive (got {args.audio_hop:g})")
    if args.hfov is not None and not 0 < args.hfov < 180:
        raise JsaError(f"--hfov is the horizontal field of view in degrees, in (0, 180) (got {args.hfov:g})")
    if args.audio_window is not None and args.audio_window <= 0:
        raise JsaError(f"--audio-window must be positive (got {args.audio_window:g})")
    return LiveOptions(
        camera=args.camera, mic=default_mic(args.camera) if args.mic is None else args.mic,
        input_width=args.input_width, input_height=args.input_height,
        input_rate=args.input_rate, max_side=args.max_side, loop=args.loop, reconnect=args.reconnect, paced=not args.no_pace,
        audio_window=args.audio_window, audio_hop=args.audio_hop, av_offset_ms=args.av_offset_ms,
        crop=args.crop, hfov_deg=args.hfov, render=render_options(args), output=sink_path(args.output),
        headless=args.headless,
        duration=args.duration, log_json=args.log_json)


def run_live(args) -> int:
    from .pipeline import Pipeline
    options = live_options(args)
    factory = load_backend_factory(args.backend, args.model, args.preset, args.device, args.threads, args.server)
    _say_terms(args)
    summary = Pipeline(options, factory).run(progress=_progress)
    if options.output and any(w.startswith(str(options.output)) for w in summary.written):
        nxt = f"play it: ffplay {shlex.quote(options.output)}"
    elif options.output:                   # stopped before the first frame: nothing to play
        nxt = "nothing was recorded; run it again and let it reach the first frame"
    else:
        nxt = "record it: add --output out.mp4 --log-json frames.jsonl"
    print(f"live: {summary.line()}; next: {nxt}", flush=True)
    return 0


# ---- demo ---------------------------------------------------------------------------------------
def add_demo_parser(sub):
    p = sub.add_parser("demo", help="run the live pipeline on a clip built from real data",
                       description="Builds a short clip (real photos side by side and held-out real "
                                   "recordings, the sound switching between them; or, without that data, "
                                   "Tux Paint stamps on photos with their sounds), runs the live "
                                   "pipeline on it as if it were a camera and a microphone, writes an "
                                   "annotated mp4 and scores the peaks: the hit rate, and the follow "
                                   "rate once each switch of the sound's source has settled.")
    p.add_argument("--out", default="jsa-rt-demo", help="output folder (default ./jsa-rt-demo)")
    p.add_argument("--data", default=None,
                   help="data folder with tuxpaint-stamps/ and backgrounds/ (--scene real: caltech101/, "
                        "coco128/, urbansound8k/, 0ad/) (default $JSA_DATA or ../shared/data, else "
                        "/usr/share/tuxpaint/stamps)")
    p.add_argument("--scene", choices=("auto", "stamps", "real"), default="auto",
                   help="real: 2-3 real photos side by side (class map test split: caltech101/, coco128/) "
                        "while the sound switches between held-out real recordings of them "
                        "(urbansound8k/, 0ad/) every segment, with a second of silence between; "
                        "stamps: a Tux Paint stamp sounding on a photo, a new scene per segment; "
                        "auto (default): real when the data folder has those folders, else stamps")
    p.add_argument("--segments", type=positive_int, default=4,
                   help="scenes in the clip; with --scene real, sound turns (default 4)")
    p.add_argument("--segment-seconds", type=positive_float, default=4.0, help="length of each scene (default 4)")
    p.add_argument("--fps", type=positive_float, default=30.0, help="clip frame rate (default 30)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--no-pace", action="store_true", help="process every frame instead of in real time")
    p.add_argument("--show", action="store_true", help="also open a window (when a display exists)")
    add_model_options(p)
    add_render_options(p)
    return p


def _say_terms(args) -> None:
    terms = None if args.preset or getattr(args, "server", None) else terms_line(args.model)
    if terms:
        _progress(terms)


def run_demo(args) -> int:
    from .demo import run_demo as demo
    _say_terms(args)
    return demo(args, load_backend_factory(args.backend, args.model, args.preset, args.device, args.threads),
                render_options(args), progress=_progress)


# ---- devices / doctor ----------------------------------------------------------------------------
def add_devices_parser(sub):
    p = sub.add_parser("devices", help="list cameras and microphones")
    p.add_argument("--no-probe", action="store_true", help="do not open cameras to read their formats")
    return p


def run_devices(args) -> int:
    from .devices import print_devices
    return print_devices(probe=not args.no_probe)


def add_doctor_parser(sub):
    return sub.add_parser("doctor", help="check PortAudio, OpenCV, display, CUDA, TensorRT, Jetson")


def run_doctor(args) -> int:
    from .doctor import run_checks
    return run_checks()
