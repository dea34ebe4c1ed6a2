"""`jsa-rt`: one entry point, one subcommand per job.

Only the chosen subcommand's module is imported, so `jsa-rt live` with the onnxruntime or
TensorRT backend never imports torch. User errors (`JsaError`) print one line, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys

from . import __version__
from .errors import InputError, JsaError
from .machine import cpu_cores

# name -> (module, add-parser function, run function, one-line help)
COMMANDS = {
    "demo": ("jsa_rt.live.cli_live", "add_demo_parser", "run_demo",
             "run the live pipeline on a clip built from real data; writes an annotated mp4"),
    "live": ("jsa_rt.live.cli_live", "add_live_parser", "run_live",
             "live localization from a camera and a microphone (or files)"),
    "devices": ("jsa_rt.live.cli_live", "add_devices_parser", "run_devices",
                "list cameras and microphones"),
    "doctor": ("jsa_rt.live.cli_live", "add_doctor_parser", "run_doctor",
               "check PortAudio, OpenCV, display, CUDA, TensorRT, Jetson"),
    "localize": ("jsa_rt.model.commands", "add_localize_parser", "run_localize",
                 "localize the sound of one image + audio pair; writes maps (.npz) and a picture"),
    "convert-official": ("jsa_rt.model.commands", "add_convert_parser", "run_convert",
                         "import a checkpoint of the authors' released JSA code"),
    "make-scenes": ("jsa_rt.train.scenes", "add_parser", "run",
                    "compose the offline audio-visual benchmark from real images and sounds"),
    "train": ("jsa_rt.train.trainer", "add_parser", "run", "train JSA or EZ-VSL"),
    "eval": ("jsa_rt.export.graph_eval", "add_parser", "run",
             "evaluate a checkpoint or a deployed graph: cIoU, AUC, pointing game, retrieval, false alarms"),
    "calibrate-gate": ("jsa_rt.train.gate", "add_parser", "run",
                       "choose a model's no-source confidence gate on val; store it in the checkpoint"),
    "compare": ("jsa_rt.train.compare", "add_parser", "run",
                "is model A better than B on the same samples? paired bootstrap of two eval CSVs"),
    "profile": ("jsa_rt.profile.cli", "add_parser", "run",
                "latency reports per backend and stage, or of the live pipeline (= tools/profile.py)"),
    "export-onnx": ("jsa_rt.export.onnx_export", "add_parser", "run",
                    "export a checkpoint to ONNX (raw frame + waveform in, heatmap out)"),
    "export-triton": ("jsa_rt.export.triton_repo", "add_parser", "run",
                      "write a Triton Inference Server model repository (audio + visual, dynamic batching)"),
    "serve": ("jsa_rt.export.serve", "add_parser", "run",
              "serve the model on Triton Inference Server: many streams, one server, dynamic batching"),
    "build-engine": ("jsa_rt.export.tensorrt_build", "add_parser", "run",
                     "build a TensorRT engine (--fp16) from a checkpoint or ONNX file"),
}


def _check_parsed(args: argparse.Namespace) -> None:
    """What the flags' own types let through: `nan` for a plain float flag (every range check
    passes it), and more --threads than this process may use (a warning: they only contend)."""
    threads = getattr(args, "threads", None)
    cores = cpu_cores()
    if isinstance(threads, int) and threads > cores:
        print(f"warning: --threads {threads} is more than the {cores} CPU cores this process may use; "
              f"the extra threads only contend (use --threads {cores} or fewer)", file=sys.stderr)
    for dest, value in vars(args).items():
        if isinstance(value, float) and math.isnan(value):
            raise InputError(f"--{dest.replace('_', '-')} nan is not a number: give a number")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"jsa-rt {__version__}: real-time sound source localization (JSA, CVPR 2025)", "",
             "usage: jsa-rt COMMAND [options]   (jsa-rt COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {spec[3]}" for name, spec in COMMANDS.items()]
    lines += ["", "start with:  jsa-rt demo"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"jsa-rt: unknown command {name!r}; run `jsa-rt --help` for the list", file=sys.stderr)
        return 2
    module_name, add_name, run_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        root = argparse.ArgumentParser(prog="jsa-rt")
        sub = root.add_subparsers(dest="command", required=True)
        getattr(module, add_name)(sub)
        args = root.parse_args(argv)
        _check_parsed(args)
        return int(getattr(module, run_name)(args) or 0)
    except JsaError as exc:
        print(f"jsa-rt {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jsa-rt {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:           # a path the OS refused (a file where a folder goes, no permission)
        if exc.filename is None:
            raise
        why = ("part of it is a file, not a folder" if isinstance(exc, (FileExistsError, NotADirectoryError))
               else exc.strerror)
        print(f"jsa-rt {name}: error: cannot use {exc.filename}: {why} (check the path and its "
              f"permissions)", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("jsa_rt"):
            raise
        extra = {"torch": "train", "torchvision": "train", "onnx": "onnx", "onnxruntime": "onnx",
                 "cv2": "live", "sounddevice": "live", "soundfile": "live"}.get(exc.name)
        hint = f"pip install 'jsa-rt[{extra}]'" if extra else f"pip install {exc.name}"
        print(f"jsa-rt {name}: error: missing Python package {exc.name!r}: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
