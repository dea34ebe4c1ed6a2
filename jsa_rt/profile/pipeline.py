"""Pipeline mode: run the live pipeline (jsa_rt.live) on file sources or devices for a while and
report what a user sees: capture-to-render frame age (`total`), per-stage times, fps, drops,
audio overflows, CPU and GPU memory.

Stage times come from two places:
* each rendered frame's record (the pipeline's `on_frame` callback): `latency_ms` (capture to
  render: the total) and `stages_ms`, the pipeline's split of that age (capture_wait, preprocess,
  audio, visual, result_wait, render; see profiling.PIPELINE_STAGES), one sample per frame, plus
  `encode_display` (window + video writer, after the age is taken);
* the backend is wrapped (`TimedBackend`), so every `run_audio` / `run_visual` call of the
  inference thread is timed alone: `audio_branch`, `visual_branch`, one sample per call.
Frames of the first `warmup_s` seconds (first-call allocations, caches) are left out of the
statistics and counted in `pipeline.warmup_frames`; `fps` is measured over the frames kept
(their render-to-render intervals), and `video_rate` judges them against the camera's rate
(or --target-fps).
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ..errors import JsaError
from . import report as profiling
from .env import CpuContention, cpu_matmul_peak, environment
from .video_rate import DEFAULT_TARGET_FPS, pipeline_video_rate


class TimedBackend:
    """A runtime backend whose branch calls are timed (monotonic start, ms) as they happen."""

    def __init__(self, inner):
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self.config = inner.config
        self.audio_calls: list[tuple[float, float]] = []
        self.visual_calls: list[tuple[float, float]] = []

    def _timed(self, calls, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        calls.append((time.monotonic(), (time.perf_counter() - t0) * 1e3))
        return out

    def run_audio(self, audio):
        return self._timed(self.audio_calls, self.inner.run_audio, audio)

    def run_visual(self, frame, state):
        return self._timed(self.visual_calls, self.inner.run_visual, frame, state)

    def run(self, frame, audio):
        return self.inner.run(frame, audio)

    def close(self):
        self.inner.close()

    def __getattr__(self, attr):       # anything else the pipeline may read (device, ...)
        return getattr(self.inner, attr)


class _Periodic:
    """While used as a context manager: `begin()` once, then `tick()` every `period` s, on a
    daemon thread."""

    def __init__(self, period: float, name: str):
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def begin(self) -> None:
        pass

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self):
        self.begin()
        while not self._stop.wait(self.period):
            self.tick()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2.0)


class ResourceSampler(_Periodic):
    """Samples this process's RSS and CPU use every `period` s on a background thread."""

    def __init__(self, period: float = 0.2):
        super().__init__(period, "profile-sampler")
        self.rss_mb: list[float] = []
        self.cpu_percent: list[float] = []
        try:
            import psutil
            self._proc = psutil.Process()
        except ImportError:
            self._proc = None

    def begin(self):
        if self._proc is not None:
            self._proc.cpu_percent(None)           # the first call only starts psutil's interval

    def tick(self):
        if self._proc is not None:
            self.rss_mb.append(self._proc.memory_info().rss / 2**20)
            self.cpu_percent.append(self._proc.cpu_percent(None))

    def summary(self) -> dict:
        if not self.rss_mb:
            return {"rss_mb_peak": None, "cpu_percent_mean": None}
        return {"rss_mb_start": round(self.rss_mb[0], 1), "rss_mb_end": round(self.rss_mb[-1], 1),
                "rss_mb_peak": round(max(self.rss_mb), 1),
                "cpu_percent_mean": round(sum(self.cpu_percent) / len(self.cpu_percent), 1)}


def gpu_memory_mb() -> float | None:
    """GPU memory this process holds, from nvidia-smi (None without an NVIDIA GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return 0.0


def _describe(backend) -> str:
    describe = getattr(backend, "describe", None)
    return describe() if callable(describe) else getattr(backend, "name", "?")


def _export_in_child(preset: str, workdir: str) -> str:
    """A fresh ONNX export of the preset's random weights (the graph of the current code), made
    in a child process: torch stays out of this process, so its memory is the live pipeline's."""
    code = ("import sys; from jsa_rt.profile.model import fresh_onnx; "
            "print(fresh_onnx(sys.argv[1], sys.argv[2]))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code, preset, workdir], capture_output=True,
                         text=True, env=env, timeout=900)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise JsaError(f"exporting random {preset} weights to ONNX failed ({last}); "
                       "try `jsa-rt export-onnx` and pass --checkpoint FILE.onnx")
    return out.stdout.strip().splitlines()[-1]


class Ticker(_Periodic):
    """A progress line every `every` s while the pipeline runs: elapsed time, frames, fps."""

    def __init__(self, records: list, duration: float, progress, every: float):
        super().__init__(every, "profile-progress")
        self.records, self.duration, self.progress = records, duration, progress
        self._t0 = time.monotonic()

    def begin(self):
        self._t0 = time.monotonic()

    def tick(self):
        recent = [r["latency_ms"] for _, r in self.records[-60:]]
        n = len(self.records)
        span = self.records[-1][0] - self.records[0][0] if n > 1 else 0.0
        fps = (n - 1) / span if span > 0 else 0.0
        age = f", frame age p50 {sorted(recent)[len(recent) // 2]:.0f} ms" if recent else ""
        self.progress(f"  {time.monotonic() - self._t0:5.1f} / {self.duration:g} s: {n} frames, "
                      f"{fps:.1f} fps{age}")


def _check_inputs(duration: float, warmup_s: float, preset: str | None,
                  target_fps: float | None) -> None:
    if not math.isfinite(duration) or duration <= warmup_s:
        raise JsaError(f"--duration {duration:g} s leaves nothing after the {warmup_s:g} s warm-up; "
                       "use a longer --duration")
    if target_fps is not None and not (math.isfinite(target_fps) and target_fps > 0):
        raise JsaError(f"--target-fps {target_fps:g}: give a frame rate above 0, e.g. 30")
    if preset:
        from ..config import get_preset
        try:
            get_preset(preset)
        except ValueError as e:
            raise JsaError(str(e)) from None


def profile_pipeline(camera: str, mic: str, duration: float = 10.0, backend: str = "auto",
                     checkpoint: str | None = None, preset: str | None = None,
                     output: str | None = None, warmup_s: float = 1.0,
                     target_fps: float | None = None, max_side: int | None = None,
                     progress=print) -> dict:
    """Run the live pipeline for `duration` s and report it; `target_fps` (default: the camera's
    rate) sets the frame budget of `video_rate`; `max_side` as `jsa-rt live --max-side`
    (default: live's)."""
    try:
        from ..live.pipeline import Pipeline
        from ..live.settings import LiveOptions
    except ImportError as e:
        raise JsaError(f"pipeline mode needs the live pipeline (jsa_rt.live): {e}") from None
    _check_inputs(duration, warmup_s, preset, target_fps)
    timed: list[TimedBackend] = []

    def factory():
        from ..runtime import load_backend
        timed.append(TimedBackend(load_backend(backend, model=model, preset=None if model else preset)))
        return timed[-1]

    records: list[tuple[float, dict]] = []
    options = LiveOptions(camera=camera, mic=mic, headless=True, duration=duration, quiet=True,
                          output=output)
    if max_side is not None:
        options.max_side = max_side
    progress("measuring this host's fp32 matmul peak (a shared machine's speed varies by the day)")
    peak = cpu_matmul_peak()
    pipeline = Pipeline(options, factory, on_frame=lambda r: records.append((time.monotonic(), r)))
    contention = CpuContention()
    progress(f"running the live pipeline for {duration:g} s ({camera} + {mic}, backend {backend})")
    with tempfile.TemporaryDirectory(prefix="jsa-profile-") as workdir:
        model = checkpoint
        if backend == "onnxruntime" and preset and not checkpoint:
            progress(f"exporting random {preset} weights to ONNX (a child process)")
            model = _export_in_child(preset, workdir)
        every = min(5.0, max(1.0, duration / 4))
        with ResourceSampler() as sampler, Ticker(records, duration, progress, every):
            summary = pipeline.run()
            gpu_mb = gpu_memory_mb()
    if not records or not timed:
        raise JsaError(f"the pipeline rendered no frame ({summary.stopped_by}); check --camera and --mic")

    cutoff = records[0][0] + warmup_s
    kept_at = [(t, r) for t, r in records if t >= cutoff] or records
    kept = [r for _, r in kept_at]
    # render time of each kept frame: the callback runs after the display / video encoding
    rendered = [t - r["stages_ms"].get("encode_display", 0.0) / 1e3 if "stages_ms" in r else t
                for t, r in kept_at]
    intervals = [1e3 * (b - a) for a, b in zip(rendered, rendered[1:])]
    tb = timed[0]
    stages = {}
    if all("stages_ms" in r for r in kept):        # the pipeline's own split of each frame's age
        for name in kept[0]["stages_ms"]:
            stages[name] = [r["stages_ms"][name] for r in kept]
    else:                                           # older pipelines: only the inference time
        stages["inference"] = [r["infer_ms"] for r in kept]
        stages["after_inference"] = [max(0.0, r["latency_ms"] - r["infer_ms"]) for r in kept]
    # the backend calls alone, timed by the wrapper (the audio one runs once per audio hop)
    stages["audio_branch"] = [ms for t, ms in tb.audio_calls if t >= cutoff] or [ms for _, ms in tb.audio_calls]
    stages["visual_branch"] = [ms for t, ms in tb.visual_calls if t >= cutoff] or [ms for _, ms in tb.visual_calls]

    fps = 1e3 * len(intervals) / sum(intervals) if intervals and sum(intervals) > 0 else 0.0
    counters = {
        "frames": summary.frames, "seconds": round(summary.seconds, 3),
        "fps": round(fps, 2),                          # over the frames kept (after the warm-up)
        "fps_whole_run": round(summary.fps, 2),        # the live summary's, warm-up included
        "dropped_frames": summary.dropped, "audio_overflows": summary.overflows,
        "audio_refreshes": summary.audio_refreshes,
        "audio_refresh_hz": round(summary.audio_refreshes / summary.seconds, 2) if summary.seconds else None,
        "warmup_frames": len(records) - len(kept), "stopped_by": summary.stopped_by,
        "gpu_mem_mb": gpu_mb, **sampler.summary(),
    }
    source_fps = getattr(pipeline.video, "fps", None)
    target = target_fps or (source_fps if source_fps and math.isfinite(source_fps) and source_fps > 0
                            else DEFAULT_TARGET_FPS)
    if "stages_ms" in kept[0]:     # the inference thread's work on each frame bounds the rate
        work = [sum(r["stages_ms"].get(s, 0.0) for s in ("preprocess", "audio", "visual")) for r in kept]
    else:
        work = [r["infer_ms"] for r in kept]
    from .model import backend_precision, backend_threads
    device = getattr(tb.inner, "device", None) or "cpu"
    env = environment()
    report = profiling.new_report("pipeline", env, {
        "preset": preset or tb.config.preset, "checkpoint": checkpoint, "backend": tb.name,
        "camera": camera, "mic": mic, "duration_s": duration, "warmup_s": warmup_s,
        "output": output, "source_fps": source_fps, "target_fps": float(target),
        "source_size": list(pipeline.video.source_size), "frame_size": list(pipeline.video.frame_size),
        "max_side": options.max_side,
        "frame_budget_ms": 1000.0 / target,
        "threads": backend_threads(tb.inner, device), "audio_hop_s": options.audio_hop})
    entry = profiling.backend_entry(
        [r["latency_ms"] for r in kept], stages, device=device,
        precision=backend_precision(tb.inner, device), threads=backend_threads(tb.inner, device),
        pipeline=counters, description=_describe(tb.inner),
        timer="total: capture (time.monotonic at grab) to render, per frame")
    entry["raw_ms"]["frame_interval"] = intervals
    entry["raw_ms"]["work"] = work
    entry["video_rate"] = pipeline_video_rate(
        work, intervals, [r["latency_ms"] for r in kept], summary.dropped, summary.frames, target)
    entry["stage_sum"] = profiling.stage_sum(entry, (
        "the stages split each frame's capture-to-render age exactly (each rounded to 0.01 ms)"
        if "stages_ms" in kept[0] else "inference plus the rest of each frame's age"))
    report["backends"][tb.name] = entry
    report["peak"] = peak
    report["notes"] = [
        "total = capture-to-render frame age of each rendered frame; the stages up to `render` "
        "add up to it frame by frame (display and video encoding happen after it)",
        "`audio` is per frame (0 when the cached audio state is reused); `audio_branch` and "
        "`visual_branch` are per backend call"]
    return profiling.finish_report(report, contention)
