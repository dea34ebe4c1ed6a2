#!/usr/bin/env python
"""Soak test: run the live pipeline for minutes on looping file sources; is anything drifting?

    python tools/soak.py --minutes 10 --backend onnxruntime --preset edge --out benchmarks/soak-edge
    python tools/soak.py --minutes 10 --camera clip.mp4 --mic file://clip.wav --model edge-jsa

Every `--every` seconds it samples the process's resident memory (RSS), threads and open files,
and the capture-to-render latency of the frames rendered since the previous sample (p50, p99),
the fps, drops and microphone overflows. It writes `soak.json` (all samples plus the verdict)
and `soak.png` (memory and latency over time), and prints the drift: a least-squares slope
over the run after a warm-up, and the last quarter against the first. Flat is the target.
Without --camera/--mic it builds the demo clip (real data, see `jsa-rt demo`) and loops it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jsa_rt.errors import JsaError  # noqa: E402
from jsa_rt.live.cli_live import load_backend_factory  # noqa: E402
from jsa_rt.live.pipeline import Pipeline  # noqa: E402
from jsa_rt.live.settings import LiveOptions  # noqa: E402

RSS_FLAT_MB_PER_MIN = 1.0       # more than this is a leak worth a look
LATENCY_FLAT_RATIO = 0.20       # last quarter's p50 within 20 % of the first quarter's


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--every", type=float, default=5.0, help="sampling period, s (default 5)")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the drift fit (default 30)")
    p.add_argument("--camera", default=None, help="video file (looped); default: the demo clip")
    p.add_argument("--mic", default=None, help="file://clip.wav (looped) or a microphone")
    p.add_argument("--backend", default="auto")
    p.add_argument("--model", "--checkpoint", dest="model", default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="benchmarks/soak", help="folder for soak.json and soak.png")
    return p.parse_args(argv)


class Sampler:
    """Collects per-frame latencies (from the pipeline's callback) and samples them periodically."""

    def __init__(self, pipeline: Pipeline, every: float):
        import psutil
        self.proc = psutil.Process()
        self.pipeline = pipeline
        self.every = every
        self.samples: list[dict] = []
        self._lat: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def on_frame(self, record: dict) -> None:
        with self._lock:
            self._lat.append(record["latency_ms"])

    def _take(self) -> None:
        with self._lock:
            lat, self._lat = np.array(self._lat), []
        p = self.pipeline
        self.samples.append({
            "t_s": round(time.monotonic() - self._t0, 2),
            "rss_mb": round(self.proc.memory_info().rss / 2**20, 2),
            "load1": round(os.getloadavg()[0], 2),          # a shared machine shows up here
            "threads": threading.active_count(),
            "open_files": len(self.proc.open_files()),
            "frames": len(lat),
            "fps": round(len(lat) / self.every, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "dropped_total": p.video.dropped if p.video else 0,
            "overflows_total": p.audio.overflows if p.audio else 0,
            "audio_refreshes_total": p.audio_refreshes,
        })
        s = self.samples[-1]
        print(f"  {s['t_s']:7.1f} s  rss {s['rss_mb']:7.1f} MB  {s['fps']:5.1f} fps  "
              f"p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  threads {s['threads']}", flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._take()

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(2.0)


def drift(samples: list[dict], warmup_s: float) -> dict:
    kept = [s for s in samples if s["t_s"] >= warmup_s and s["p50_ms"] is not None]
    if len(kept) < 4:
        return {"verdict": "too short to judge (need 4 samples after the warm-up)", "samples_used": len(kept)}
    t_min = np.array([s["t_s"] for s in kept]) / 60.0
    rss = np.array([s["rss_mb"] for s in kept])
    p50 = np.array([s["p50_ms"] for s in kept])
    p99 = np.array([s["p99_ms"] for s in kept])
    q = max(1, len(kept) // 4)
    out = {
        "samples_used": len(kept),
        "rss_slope_mb_per_min": round(float(np.polyfit(t_min, rss, 1)[0]), 3),
        "rss_first_last_mb": [round(float(rss[:q].mean()), 1), round(float(rss[-q:].mean()), 1)],
        "p50_slope_ms_per_min": round(float(np.polyfit(t_min, p50, 1)[0]), 3),
        "p50_first_last_ms": [round(float(p50[:q].mean()), 2), round(float(p50[-q:].mean()), 2)],
        "p99_first_last_ms": [round(float(p99[:q].mean()), 2), round(float(p99[-q:].mean()), 2)],
        "threads_first_last": [kept[0]["threads"], kept[-1]["threads"]],
        "open_files_first_last": [kept[0]["open_files"], kept[-1]["open_files"]],
    }
    ratio = out["p50_first_last_ms"][1] / max(1e-6, out["p50_first_last_ms"][0]) - 1
    flat_mem = abs(out["rss_slope_mb_per_min"]) <= RSS_FLAT_MB_PER_MIN
    flat_lat = abs(ratio) <= LATENCY_FLAT_RATIO
    flat_res = out["threads_first_last"][0] == out["threads_first_last"][1] and \
        out["open_files_first_last"][0] == out["open_files_first_last"][1]
    out["p50_change"] = round(ratio, 3)
    out["verdict"] = "flat" if flat_mem and flat_lat and flat_res else "DRIFT: " + ", ".join(
        w for w, ok in (("memory", flat_mem), ("latency", flat_lat), ("threads/files", flat_res)) if not ok)
    return out


def plot(samples: list[dict], path: Path, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s["t_s"] / 60 for s in samples]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(t, [s["rss_mb"] for s in samples], color="tab:blue")
    a.set_ylabel("RSS (MB)")
    a.set_title(title)
    b.plot(t, [s["p50_ms"] for s in samples], label="p50")
    b.plot(t, [s["p99_ms"] for s in samples], label="p99")
    b.set_ylabel("capture-to-render (ms)")
    b.set_xlabel("minutes")
    b.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    camera, mic = args.camera, args.mic
    if camera is None or mic is None:
        from jsa_rt.live.demo_clip import build_clip
        clip_dir = Path(tempfile.mkdtemp(prefix="jsa-soak-"))
        print(f"soak: building the demo clip in {clip_dir}", flush=True)
        build_clip(clip_dir, None, segments=4, seconds=4.0)
        camera, mic = camera or str(clip_dir / "clip.mp4"), mic or f"file://{clip_dir / 'clip.wav'}"
    options = LiveOptions(camera=camera, mic=mic, loop=True, headless=True, quiet=True,
                          duration=args.minutes * 60)
    factory = load_backend_factory(args.backend, args.model, args.preset, args.device)
    pipeline = Pipeline(options, factory)
    sampler = Sampler(pipeline, args.every)
    pipeline.on_frame = sampler.on_frame
    print(f"soak: {args.minutes:g} min on {camera} + {mic}, sampling every {args.every:g} s", flush=True)
    sampler.start()
    try:
        summary = pipeline.run()
    except JsaError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    finally:
        sampler.stop()
    import platform
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()}
    result = {"settings": vars(args) | {"camera": camera, "mic": mic}, "machine": machine,
              "summary": summary.__dict__,
              "drift": drift(sampler.samples, args.warmup), "samples": sampler.samples}
    tmp = out / ".soak.partial.json"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, out / "soak.json")
    drew = plot(sampler.samples, out / "soak.png", f"soak: {summary.backend}, {args.minutes:g} min")
    d = result["drift"]
    print(f"soak: {summary.line()}")
    print(f"soak: {d['verdict']}; rss slope {d.get('rss_slope_mb_per_min')} MB/min, p50 first/last "
          f"{d.get('p50_first_last_ms')} ms, p99 first/last {d.get('p99_first_last_ms')} ms; wrote "
          f"{out / 'soak.json'}{' and ' + str(out / 'soak.png') if drew else ''}; "
          f"next: compare runs with tools/profile.py, or soak longer with --minutes 60")
    return 0


if __name__ == "__main__":
    sys.exit(main())
