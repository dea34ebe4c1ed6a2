"""`jsa-rt demo`: the first command to run. No camera, microphone or GPU needed.

1. builds a short clip from real images and recordings (demo_clip.py) with known boxes;
2. runs the full live pipeline on it, the video file as the camera and the wav as the
   microphone, both paced in real time, with the shipped default model;
3. writes the annotated mp4 and a per-frame JSON log, and scores how often the heatmap's
   peak fell on the sounding object (against the chance rate: the box's share of the frame).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..atomic import write_json
from .demo_clip import build_clip
from .pipeline import LiveOptions, Pipeline
from .outputs import window_problem


def score(records: list[dict], truth: dict) -> dict:
    """Pointing game over the rendered frames: is the peak inside the sounding object's box?"""
    frames = truth["frames"]
    hits = with_peak = rendered = 0
    area = 0.0
    for r in records:
        f = r.get("frame")
        if f is None or f >= len(frames):
            continue
        rendered += 1
        x0, y0, x1, y1 = frames[f]["box"]
        area += (x1 - x0) * (y1 - y0)
        if r["peak"] is not None:
            with_peak += 1
            px, py = r["peak"]
            hits += int(x0 <= px <= x1 and y0 <= py <= y1)
    return {"rendered_frames": rendered, "frames_with_peak": with_peak, "hits": hits,
            "hit_rate": hits / rendered if rendered else 0.0,
            "hit_rate_when_shown": hits / with_peak if with_peak else 0.0,
            "no_source_rate": 1 - with_peak / rendered if rendered else 0.0,
            "chance_rate": area / rendered if rendered else 0.0}


def run_demo(args, backend_factory, render, progress=print) -> int:
    out = Path(args.out)
    progress(f"demo: building a {args.segments} x {args.segment_seconds:g} s clip in {out}/ from real data")
    truth = build_clip(out, args.data, segments=args.segments, seconds=args.segment_seconds, fps=args.fps,
                       seed=args.seed, progress=progress)
    (out / "frames.jsonl").unlink(missing_ok=True)       # the score reads this run's log, never an old one
    options = LiveOptions(camera=str(out / "clip.mp4"), mic=f"file://{out / 'clip.wav'}",
                          paced=not args.no_pace, render=render, output=str(out / "annotated.mp4"),
                          log_json=str(out / "frames.jsonl"),
                          headless=not args.show or bool(window_problem()), quiet=not args.show)
    progress(f"demo: running the live pipeline on clip.mp4 + clip.wav "
             f"({'every frame' if args.no_pace else 'in real time'}, backend {args.backend}, "
             f"model {args.model or (f'random {args.preset}' if args.preset else 'edge-jsa')})")
    summary = Pipeline(options, backend_factory).run(progress=progress)
    log = out / "frames.jsonl"                          # absent when no frame was rendered (stopped at once)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    result = score(records, truth)
    result.update(backend=summary.backend, model=args.model or (f"random {args.preset}" if args.preset
                                                                   else "edge-jsa"),
                  fps=round(summary.fps, 2), p50_ms=round(summary.p50_ms, 1), p99_ms=round(summary.p99_ms, 1),
                  scenes=truth["scenes"])
    write_json(out / "score.json", result)
    print(f"demo: {summary.line()}", flush=True)
    print(f"demo: the peak fell on the sounding object in {100 * result['hit_rate']:.0f}% of "
          f"{result['rendered_frames']} rendered frames ({100 * result['hit_rate_when_shown']:.0f}% of the "
          f"{result['frames_with_peak']} frames with a source shown; chance {100 * result['chance_rate']:.0f}%); "
          f"wrote {out / 'score.json'}; next: ffplay {shlex.quote(str(out / 'annotated.mp4'))}, "
          f"then jsa-rt live --camera 0 --mic default", flush=True)
    return 0
