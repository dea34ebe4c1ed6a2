"""Build the demo's camera + microphone stand-in from real data: clip.mp4, clip.wav, truth.json.

The clip is a sequence of segments; each starts with a *switch* (the sound changes source) and
knows, frame by frame, which box is sounding (None while nothing sounds). Where the segments
come from is a scene source:

- `StampScenes` (`--scene stamps`, the default): a background photo with one *sounding* Tux Paint
  stamp (a PNG that has an OGG recording of that object beside it) drifting slowly across it and
  two *silent* stamps (PNGs without a sound) standing still; the soundtrack is the sounding
  stamp's recording, looped. A new scene per segment.
- `RealScenes` (`--scene real`): 2 (sometimes 3) real photographs side by side, tiles of
  different sounding classes from the class map's *test* split (jsa_rt/train/classmap.py), held
  for a few segments while the sound switches between held-out real recordings of the classes
  in view: one sounds at a time, with a second of silence before the next. A tile is its
  object's box.

Because we compose the frames ourselves, the ground-truth box of the sounding object is known
exactly in every frame (truth.json). The three files are written atomically: Ctrl-C while the
clip is being built leaves the previous clip (or none), never a partial file.

Data: `--data`, else $JSA_DATA, else ../shared/data next to the repository, else (stamps only)
Debian's `tuxpaint-stamps-default` (/usr/share/tuxpaint/stamps; no photos there: gradients).

The scene sources are in demo_scenes.py, the data they load in demo_material.py.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .demo_scenes import SceneSource, scene_source

NOISE_DBFS = -60.0               # a quiet room under everything (real microphones are never silent)


def build_clip(out_dir: str | Path, data: str | None = None, segments: int = 4, seconds: float = 4.0,
               fps: float = 30.0, size: tuple[int, int] = (640, 480), rate: int = 16000,
               seed: int = 0, progress=None, scene: str | SceneSource = "stamps") -> dict:
    """Write clip.mp4, clip.wav and truth.json into `out_dir`; returns the truth dict.

    truth["frames"][i]: frame, segment, name (what sounds), box (the sounding object's, or None
    while nothing sounds) and since_switch (seconds since the segment's switch). The files appear
    only complete: they are built in a hidden folder inside `out_dir` and renamed at the end."""
    import cv2
    import soundfile as sf
    source = scene if isinstance(scene, SceneSource) else scene_source(scene, data, segments)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    per = int(round(seconds * fps))
    n_audio = int(round(per / fps * rate))
    work = Path(tempfile.mkdtemp(prefix=".clip.partial-", dir=out))
    try:
        writer = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        audio, frames, scenes = [], [], []
        source.start(rng, segments)
        try:
            for k in range(segments):
                seg = source.segment(k, rng, per, fps, n_audio, size, rate)
                for i in range(per):
                    canvas, box = seg.frame(i)
                    writer.write(np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8))
                    frames.append({"frame": len(frames), "segment": k, "name": seg.name,
                                   "box": [round(v, 5) for v in box] if box is not None else None,
                                   "since_switch": round(i / fps, 4)})
                audio.append(seg.audio)
                scenes.append(seg.scene)
                if progress:
                    progress(f"  scene {k + 1}/{segments}: {seg.line}")
        finally:
            writer.release()
        wave = np.concatenate(audio)
        wave = wave + rng.normal(0, 10 ** (NOISE_DBFS / 20), wave.size).astype(np.float32)
        sf.write(str(work / "clip.wav"), np.clip(wave, -1, 1), rate, subtype="PCM_16")
        truth = {"scene": source.kind, "fps": fps, "size": [w, h], "sample_rate": rate,
                 "seconds_per_scene": seconds, **source.truth(), "scenes": scenes, "frames": frames}
        (work / "truth.json").write_text(json.dumps(truth, indent=1))
        (out / "truth.json").unlink(missing_ok=True)    # never an old truth beside a new clip
        os.replace(work / "clip.mp4", out / "clip.mp4")
        os.replace(work / "clip.wav", out / "clip.wav")
        os.replace(work / "truth.json", out / "truth.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return truth
