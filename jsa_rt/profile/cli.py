"""Command line of the profiler: `python tools/profile.py ...` and `jsa-rt profile ...`.

    profile model --preset tiny [--checkpoint CKPT] [--backends torch,onnxruntime] --json OUT
        (each backend against eager torch too: --fail-if "onnxruntime.p50_speedup<1.4")
    profile pipeline --camera URI [--mic URI] --duration S [--backend B] --json OUT
    profile --compare A.json B.json [--fail-if "p95_ratio>1.10"]
    profile check REPORT.json --fail-if "p95_ms>50"
Every mode takes --fail-if (repeatable) and then exits 1 when a guard trips; errors exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import JsaError
from . import report as profiling
from .guards import check_guards, compare, format_compare
from .markdown import save_markdown, to_markdown
from .video_rate import DEFAULT_TARGET_FPS

EXIT_GUARD = 1
EXIT_ERROR = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the profiler's options and modes to `parser` (top level or a `profile` subcommand)."""
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                        help="print B / A latency ratios per backend and stage")
    parser.add_argument("--fail-if", action="append", default=[], metavar="EXPR",
                        help="guard, e.g. 'p95_ms>50', 'torch.visual_branch.p99_ms>20', 'fps<25', "
                             "with --compare 'p95_ratio>1.1'; exit 1 if it holds (repeatable)")
    modes = parser.add_subparsers(dest="profile_mode", metavar="MODE")

    model = modes.add_parser("model", help="time every backend and model stage, and set each "
                             "backend against eager torch (speedup, largest output difference)")
    model.add_argument("--preset", help="model preset (random weights are enough for timing)")
    model.add_argument("--checkpoint", help="checkpoint .pt / .onnx / .engine or shipped name")
    model.add_argument("--backends", default=None,
                       help="comma list (default: all of torch, torch-triton-graphs, onnxruntime, "
                            "tensorrt; unavailable ones are reported as skipped)")
    model.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if present")
    model.add_argument("--iterations", type=int, default=100, help="timed calls per measurement")
    model.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    model.add_argument("--target-fps", type=float, default=DEFAULT_TARGET_FPS,
                       help="video rate to judge against: frame budget 1000/fps ms (default 30)")
    _outputs(model)

    pipe = modes.add_parser("pipeline", help="run the live pipeline for a while and time it")
    pipe.add_argument("--camera", required=True, help="camera URI or video file (file://clip.mp4, 0, ...)")
    pipe.add_argument("--mic", default=None,
                      help="microphone URI or audio file (default: as `live`: a video's own soundtrack, else the default mic)")
    pipe.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    pipe.add_argument("--backend", default="auto", help="runtime backend (default auto)")
    pipe.add_argument("--checkpoint", default=None, help="model (default: the live pipeline's)")
    pipe.add_argument("--preset", default=None, help="random weights of a preset instead of a model")
    pipe.add_argument("--output", default=None, help="also record the annotated video (costs CPU)")
    pipe.add_argument("--target-fps", type=float, default=None,
                      help="video rate to judge against (default: the camera's rate)")
    pipe.add_argument("--max-side", type=int, default=None,
                      help="as live --max-side: shrink larger frames at capture (0 keeps them)")
    _outputs(pipe)

    check = modes.add_parser("check", help="apply --fail-if guards to a saved report")
    check.add_argument("report", help="report JSON")
    check.add_argument("--fail-if", dest="check_fail_if", action="append", default=[], metavar="EXPR")


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", dest="json_out", help="write the report here (+ .md and .png beside it)")
    p.add_argument("--bench-dir", help="write DIR/profile_<mode>_<machine>_<model>.json/.md/.png (<model>: the "
                        "checkpoint's name, else the preset)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--fail-if", dest="mode_fail_if", action="append", default=[], metavar="EXPR",
                   help="guard, e.g. 'p95_ms>50', 'over_budget_fraction>0.01', "
                        "'headroom_p99_ms<5', 'fps<25', 'onnxruntime.p50_speedup<1.4', "
                        "'max_abs_diff>1e-3'; exit 1 if it holds (repeatable)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`jsa-rt profile ...` for jsa_rt.cli."""
    parser = subparsers.add_parser("profile", help="latency reports: model stages, live pipeline",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    return parser


def run(args) -> int:
    """Run the chosen mode; 0 ok, 1 a guard tripped, 2 a user error (printed as one line)."""
    guards = list(args.fail_if) + list(getattr(args, "mode_fail_if", []))
    guards += list(getattr(args, "check_fail_if", []))
    try:
        if args.compare:
            return _compare(*args.compare, guards)
        mode = args.profile_mode
        if mode == "check":
            if not guards:
                raise JsaError("check needs at least one --fail-if EXPR")
            return _guard(guards, profiling.load_report(args.report))
        if mode in ("model", "pipeline"):
            _check_outputs(args)
        if mode == "model":
            from .model import profile_model
            backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
            report = profile_model(preset=args.preset, checkpoint=args.checkpoint, backends=backends,
                                   device=args.device, warmup=args.warmup, iterations=args.iterations,
                                   threads=args.threads, target_fps=args.target_fps,
                                   progress=_progress)
        elif mode == "pipeline":
            from ..live.cli_live import default_mic
            from .pipeline import profile_pipeline
            mic = default_mic(args.camera) if args.mic is None else args.mic
            report = profile_pipeline(camera=args.camera, mic=mic, duration=args.duration,
                                      backend=args.backend, checkpoint=args.checkpoint,
                                      preset=args.preset, output=args.output,
                                      target_fps=args.target_fps, max_side=args.max_side,
                                      progress=_progress)
        else:
            raise JsaError("choose a mode: model, pipeline, check, or --compare A.json B.json "
                           "(see --help)")
        if not report["backends"]:
            raise JsaError("no backend could be measured: " + "; ".join(
                f"{k}: {v}" for k, v in report["skipped"].items()))
        written = _write(report, args)
        print(to_markdown(report))
        for name, entry in report["backends"].items():
            if entry.get("video_rate"):
                print(f"{name}: {entry['video_rate']['summary']}")
        if written:
            print(f"wrote {', '.join(written)}; compare later runs with: "
                  f"python tools/profile.py --compare {written[0]} NEW.json")
        else:
            print("report not saved (add --json OUT to keep it)")
        return _guard(guards, report)
    except JsaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_outputs(args) -> None:
    """Bad output paths fail before the measurement, not after it."""
    if args.json_out:
        if not args.json_out.endswith(".json"):
            raise JsaError(f"--json {args.json_out}: give a path ending in .json (the .md and .png "
                           "are written beside it)")
        if os.path.isdir(args.json_out):
            raise JsaError(f"--json {args.json_out} is a folder; give a file name inside it")
    if args.bench_dir and os.path.exists(args.bench_dir) and not os.path.isdir(args.bench_dir):
        raise JsaError(f"--bench-dir {args.bench_dir} is a file; give a folder")


def report_model_name(report: dict) -> str:
    """What a report measured, for its file name: a named checkpoint (edge-jsa, or a file's
    stem) else the preset of random weights; two models of one preset never share a name."""
    checkpoint = report["settings"].get("checkpoint")
    if checkpoint:
        return Path(checkpoint).name.split(".")[0]
    return report["settings"].get("preset") or "model"


def _write(report: dict, args) -> list[str]:
    paths = []
    if args.json_out:
        paths.append(args.json_out)
    if args.bench_dir:
        paths.append(os.path.join(args.bench_dir,
                                  f"profile_{report['mode']}_{report['machine']}_{report_model_name(report)}.json"))
    written = []
    for path in paths:
        stem = path[:-5] if path.endswith(".json") else path
        profiling.save_report(report, path)
        save_markdown(report, stem + ".md")
        written += [path, stem + ".md"]
        if not args.no_plot:
            try:
                from .plots import save_plot
                save_plot(report, stem + ".png")
                written.append(stem + ".png")
            except ImportError:
                print("matplotlib is not installed: no PNG (pip install matplotlib, or pass "
                      "--no-plot)", file=sys.stderr)
    return written


def _compare(path_a: str, path_b: str, guards: list[str]) -> int:
    a, b = profiling.load_report(path_a), profiling.load_report(path_b)
    for tag, r in (("A", a), ("B", b)):
        print(f"{tag}: {r['mode']} {r['machine']} preset {r['settings'].get('preset')} "
              f"({r['created']})")
    print(format_compare(compare(a, b), path_a, path_b))
    return _guard(guards, b, baseline=a)


def _guard(guards: list[str], report: dict, baseline: dict | None = None) -> int:
    if not guards:
        return 0
    failures = check_guards(guards, report, baseline)
    for line in failures:
        print(line)
    if failures:
        return EXIT_GUARD
    print(f"all {len(guards)} guard(s) passed")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="profile.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    return run(parser.parse_args(argv))
