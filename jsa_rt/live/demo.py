"""`jsa-rt demo`: the first command to run. No camera, microphone or GPU needed.

1. builds a short clip from real images and recordings (demo_clip.py) with known boxes:
   real photographs side by side with held-out real recordings, the sound switching between
   them (`--scene real`, the default when the real data is there), or Tux Paint stamps on photos
   (`--scene stamps`, the default without it);
2. runs the full live pipeline on it, the video file as the camera and the wav as the
   microphone, both paced in real time, with the shipped default model;
3. writes the annotated mp4 and a per-frame JSON log, and scores how often the heatmap's
   peak fell on the sounding object (against the chance rate: the box's share of the frame),
   and how often it follows the sound once each switch has settled (from SETTLE_SECONDS after
   a switch of the sound's source to the next switch).
"""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from ..atomic import write_json
from ..shipped import DEFAULT_MODEL
from .audio import LEVEL_WINDOW_S
from .demo_clip import build_clip
from .demo_scenes import resolve_scene
from .pipeline import Pipeline
from .settings import LiveOptions
from .outputs import window_problem


SETTLE_SECONDS = 1.0        # after a switch, the audio window and the smoothing catch up
# After the sound stops, the level gate still hears it for up to its window plus one audio refresh
RELEASE_SECONDS = LEVEL_WINDOW_S + LiveOptions.audio_hop


def _inside(peak, box) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= peak[0] <= x1 and y0 <= peak[1] <= y1


def score(records: list[dict], truth: dict, settle: float = SETTLE_SECONDS,
          release: float = RELEASE_SECONDS) -> dict:
    """Pointing game over the rendered frames: is the peak inside the sounding object's box?

    hit_rate: over the sounding frames (truth box not None; frames_with_peak and no_source_rate
    count those too); chance_rate: the mean box area there. follow_rate: the same over the
    *settled* frames only, those at least `settle` seconds after their segment's switch (truth
    frame `since_switch`, else counted from the segment's first frame at truth["fps"]);
    follow_chance: their mean box area. A peak that never moves between disjoint boxes scores
    about the share of the frames its box sounds in. switches: segments with settled frames;
    switches_followed: those whose settled frames are mostly hits. Frames where nothing sounds
    count in silent_frames, and shown_in_silence is the share of them with a source shown;
    shown_after_release is that share over the silent frames at least `release` seconds after
    the sound stopped (before then the level gate still hears the sound's last half second)."""
    frames = truth["frames"]
    fps = float(truth.get("fps", 30.0))
    first: dict = {}
    quiet_for, last_sound = [], None               # seconds since the sound stopped, per frame
    for i, f in enumerate(frames):
        first.setdefault(f.get("segment", 0), i)
        last_sound = i if f.get("box") is not None else last_sound
        quiet_for.append(math.inf if last_sound is None else (i - last_sound) / fps)     # 0 while sounding
    hits = with_peak = sounding = rendered = 0
    area = 0.0
    settled = followed = 0
    settled_area = 0.0
    silent = silent_shown = released = released_shown = 0
    per_segment: dict = {}
    for r in records:
        f = r.get("frame")
        if f is None or not 0 <= f < len(frames):
            continue
        t = frames[f]
        peak = r.get("peak")
        rendered += 1
        if t.get("box") is None:                 # nothing sounds: a source shown is a false alarm
            silent += 1
            silent_shown += int(peak is not None)
            if quiet_for[f] >= release - 1e-9:
                released += 1
                released_shown += int(peak is not None)
            continue
        sounding += 1
        x0, y0, x1, y1 = t["box"]
        a = (x1 - x0) * (y1 - y0)
        area += a
        hit = peak is not None and _inside(peak, t["box"])
        with_peak += int(peak is not None)
        hits += int(hit)
        seg = t.get("segment", 0)
        since = t.get("since_switch", (f - first.get(seg, 0)) / fps)
        if since >= settle - 1e-9:
            settled += 1
            followed += int(hit)
            settled_area += a
            n, h = per_segment.get(seg, (0, 0))
            per_segment[seg] = (n + 1, h + int(hit))
    return {"rendered_frames": rendered, "sounding_frames": sounding, "frames_with_peak": with_peak,
            "hits": hits, "hit_rate": hits / sounding if sounding else 0.0,
            "hit_rate_when_shown": hits / with_peak if with_peak else 0.0,
            "no_source_rate": 1 - with_peak / sounding if sounding else 0.0,
            "chance_rate": area / sounding if sounding else 0.0,
            "settle_seconds": settle, "settled_frames": settled, "followed_frames": followed,
            "follow_rate": followed / settled if settled else 0.0,
            "follow_chance": settled_area / settled if settled else 0.0,
            "switches": len(per_segment),
            "switches_followed": sum(1 for n, h in per_segment.values() if h > n / 2),
            "silent_frames": silent,
            "shown_in_silence": silent_shown / silent if silent else 0.0,
            "release_seconds": release, "silent_frames_after_release": released,
            "shown_after_release": released_shown / released if released else 0.0}


def run_demo(args, backend_factory, render, progress=print) -> int:
    out = Path(args.out)
    scene = resolve_scene(getattr(args, "scene", "auto"), args.data)
    what = ("real photos side by side and held-out real recordings" if scene == "real"
            else "Tux Paint stamps on photos with their recordings")
    progress(f"demo: building a {args.segments} x {args.segment_seconds:g} s clip in {out}/ from {what}")
    try:
        truth = build_clip(out, args.data, segments=args.segments, seconds=args.segment_seconds, fps=args.fps,
                           seed=args.seed, progress=progress, scene=scene)
    except KeyboardInterrupt:                           # build_clip has removed its partial files
        print(f"demo: stopped while building the clip; {out}/ keeps what it held before", flush=True)
        return 130
    (out / "frames.jsonl").unlink(missing_ok=True)       # the score reads this run's log, never an old one
    options = LiveOptions(camera=str(out / "clip.mp4"), mic=f"file://{out / 'clip.wav'}",
                          paced=not args.no_pace, render=render, output=str(out / "annotated.mp4"),
                          crop=getattr(args, "crop", "resize"),
                          log_json=str(out / "frames.jsonl"),
                          headless=not args.show or bool(window_problem()), quiet=not args.show)
    model = args.model or (f"random {args.preset}" if args.preset else DEFAULT_MODEL)
    progress(f"demo: running the live pipeline on clip.mp4 + clip.wav "
             f"({'every frame' if args.no_pace else 'in real time'}, backend {args.backend}, model {model})")
    summary = Pipeline(options, backend_factory).run(progress=progress)
    log = out / "frames.jsonl"                          # absent when no frame was rendered (stopped at once)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    result = score(records, truth)
    result.update(backend=summary.backend, model=model, fps=round(summary.fps, 2),
                  p50_ms=round(summary.p50_ms, 1), p99_ms=round(summary.p99_ms, 1),
                  scene=truth.get("scene", scene), crop=options.crop, scenes=truth["scenes"])
    write_json(out / "score.json", result)
    print(f"demo: {summary.line()}", flush=True)
    print(f"demo: after each switch settles ({result['settle_seconds']:g} s on), the peak followed the sound "
          f"in {100 * result['follow_rate']:.0f}% of {result['settled_frames']} frames (chance "
          f"{100 * result['follow_chance']:.0f}%); {result['switches_followed']} of {result['switches']} "
          f"switches followed" + (f"; a source was shown in {100 * result['shown_in_silence']:.0f}% of the "
                                  f"{result['silent_frames']} silent frames ({100 * result['shown_after_release']:.0f}% "
                                  f"of the {result['silent_frames_after_release']} from {result['release_seconds']:g} s "
                                  f"after the sound stopped: the level gate hears the last {LEVEL_WINDOW_S:g} s)"
                                  if result["silent_frames"] else ""),
          flush=True)
    print(f"demo: the peak fell on the sounding object in {100 * result['hit_rate']:.0f}% of "
          f"{result['sounding_frames']} {'rendered' if not result['silent_frames'] else 'sounding'} frames "
          f"({100 * result['hit_rate_when_shown']:.0f}% of the "
          f"{result['frames_with_peak']} frames with a source shown; chance {100 * result['chance_rate']:.0f}%); "
          f"wrote {out / 'score.json'}; next: ffplay {shlex.quote(str(out / 'annotated.mp4'))}, "
          f"then jsa-rt live --camera 0 --mic default", flush=True)
    return 0
