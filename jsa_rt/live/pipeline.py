"""The live loop: capture threads -> one inference thread -> one output thread.

    video grabber ──(latest frame)──> inference ──(latest result)──> output: draw, then each sink
    microphone callback ──(ring buffer)──┘                               (window, mp4, log; outputs.py)

* The inference thread creates and owns the backend: CUDA contexts and TensorRT execution
  contexts are per thread, so all GPU work happens there.
* Hand-offs keep only the newest item (`LatestSlot`): a slow stage sees fresh data, never a
  backlog; what it skipped is counted as dropped. Files run with `paced=False` are lossless.
* Each frame goes through step.FrameStep, the per-frame step SoundLocator runs too: the audio
  branch every `audio_hop` seconds of source time (its state cached), the visual branch on
  every frame.
* Stopping (Ctrl-C, SIGTERM, --duration, end of file, the window closed): the sources are
  closed, each stage drains and exits, every thread is joined within `JOIN_TIMEOUT_S`, then the
  recording is finalized.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import refuse_same_file
from ..errors import JsaError
from ..runtime.triton_client import ServerUnavailable
from .audio import MIC_START_TIMEOUT_S, SILENCE_DB, AudioSource, AudioWindow, open_audio
from .handoff import Closed, LatestSlot
from .outputs import Callback, Shown, check_writable, open_sink, window_problem
from .render import HudInfo, Localizer, draw_hud, draw_localization
from .settings import LiveOptions
from .signals import StopSignals
from .stats import JOIN_TIMEOUT_S, LatencyStats, Summary
from .step import FrameStep
from .video import Frame, VideoSource
from .where import Where



class Pipeline:
    """Runs one live session. Construct, then `run()` (blocks) or `start()` + `wait()`/`stop()`."""

    def __init__(self, options: LiveOptions, backend_factory: Callable[[], object],
                 on_frame: Callable[[dict], None] | None = None):
        self.options = options
        self.backend_factory = backend_factory
        self.on_frame = on_frame           # called with each frame's log record (tools, tests)
        self.sinks: list = []              # where rendered frames go: window, recording, log, on_frame
        self.stop_event = threading.Event()
        self.stopped_by = ""
        self.errors: list[str] = []
        self.latency = LatencyStats()
        self.frames_rendered = 0
        self.audio_refreshes = 0
        self.server_misses = 0                   # frames an inference server (--server) did not answer
        self.backend_name = "?"
        self.video: VideoSource | None = None
        self.audio: AudioSource | None = None
        self.window: AudioWindow | None = None
        self._results = LatestSlot(lossless=not options.paced)
        self._ready = threading.Event()          # the backend is loaded (config known)
        self._audio_ready = threading.Event()    # the audio source runs: frames may flow
        self._config = None
        self._threads: list[threading.Thread] = []
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._t_media0 = 0.0
        self._latency_ema = 0.0             # the HUD shows a smoothed latency (this frame's is not known yet)

    # ---- control --------------------------------------------------------------------------------
    def request_stop(self, why: str) -> None:
        if not self.stop_event.is_set():
            self.stopped_by = why
            self.stop_event.set()

    def _fail(self, message: str) -> None:
        self.errors.append(message)
        self.request_stop("error")

    def start(self) -> None:
        o = self.options
        refuse_same_file({"--output": o.output, "--log-json": o.log_json})
        for flag, path in (("--output", o.output), ("--log-json", o.log_json)):
            if path:
                check_writable(flag, path)
        # Open the camera first: a bad URI or a missing device fails fast, before a model loads.
        self.video = VideoSource(o.camera, o.input_width, o.input_height, o.input_rate,
                                 loop=o.loop, reconnect=o.reconnect, paced=o.paced, max_side=o.max_side)
        infer = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        infer.start()
        self._threads.append(infer)
        while not self._ready.wait(0.1):          # the backend loads inside its own thread
            if not infer.is_alive() or self.stop_event.is_set():
                break
        if self._config is None and self.stop_event.is_set() and not self.errors:
            return                                  # Ctrl-C while the model was loading
        if self.errors or self._config is None:
            self._shutdown_sources()
            infer.join(JOIN_TIMEOUT_S)
            raise JsaError(self.errors[0] if self.errors else "the backend did not start")
        cfg = self._config
        window_s = o.audio_window or cfg.audio_seconds
        try:
            self.audio = open_audio(o.mic, cfg.sample_rate, window_s, loop=o.loop, paced=o.paced)
            if o.loop and self.video.is_file and self.video.frame_count > 0 \
                    and Path(getattr(self.audio, "path", "")) == Path(self.video.spec.target):
                # a video and its own soundtrack loop together, on the picture's period
                self.audio.fit_duration(self.video.frame_count / self.video.media_fps)
            if hasattr(self.audio, "speed") and self.video.is_file:
                self.audio.speed = self.video.fps / self.video.media_fps     # --input-rate on a file
            self.window = AudioWindow(self.audio, cfg.sample_rate, cfg.num_samples, window_s, o.av_offset_ms)
            self.sinks = self._open_sinks()
        except BaseException:
            self._shutdown_sources()
            raise
        out = threading.Thread(target=self._output_loop, name="output", daemon=True)
        self._threads.append(out)
        try:
            self.audio.start()
            self.audio.wait_started(MIC_START_TIMEOUT_S)
        except BaseException:
            self._shutdown_sources()
            raise
        self._audio_ready.set()
        out.start()
        self.video.start()

    def _open_sinks(self) -> list:
        o, sinks = self.options, []
        if not o.headless and window_problem():
            if not o.quiet:
                print(f"warning: no window ({window_problem()}); running headless", flush=True)
        elif not o.headless:
            sinks.append(open_sink("window"))
        if o.output:
            # Every recorded frame is encoded, repeats included: at a 120 fps source's rate the
            # encoder alone would outrun the CPU, and frames past the processing rate only repeat.
            sinks.append(open_sink(o.output, "recording", fps=min(self.video.media_fps, o.record_max_fps),
                                   sound=self.window))
        if o.log_json:
            sinks.append(open_sink(o.log_json, "log"))
        if self.on_frame is not None:
            sinks.append(Callback(self.on_frame))
        return sinks

    def wait(self, progress: Callable[[str], None] | None = None, every: float = 5.0) -> None:
        """Block until the run ends by itself or `request_stop` is called (signals stay responsive).

        With `progress`, a status line goes to it every `every` seconds.
        """
        next_status = time.monotonic() + every
        while not self.stop_event.wait(0.1):
            if not any(t.is_alive() for t in self._threads):
                self.request_stop(self._ended_by())     # the stages drained by themselves
                break
            if progress is not None and time.monotonic() >= next_status:
                next_status += every
                progress(self.status_line())

    def started_line(self) -> str:
        v, a, cfg = self.video, self.audio, self._config
        pacing = "" if v.paced or not v.is_file else ", every frame (not paced)"
        return (f"live: {v.name} at {v.fps:g} fps{pacing} + {a.name} at {a.rate} Hz -> {self.backend_name} "
                f"({cfg.preset}, {cfg.image_size} px, {self.window.window / a.rate:g} s audio); Ctrl-C to stop")

    def status_line(self) -> str:
        recent = self.latency.values(max(0, self.latency.count - 150))
        p50 = float(np.percentile(recent, 50)) if recent.size else float("nan")
        span = (self._t_last or 0) - (self._t_first or 0)
        fps = (self.frames_rendered - 1) / span if span > 0 else 0.0
        return (f"  {span:6.1f} s  {self.frames_rendered} frames  {fps:5.1f} fps  latency p50 {p50:.0f} ms"
                f"  dropped {self.video.dropped if self.video else 0}"
                f"  mic overflows {self.audio.overflows if self.audio else 0}"
                + (f"  NaN/inf samples zeroed {self.audio.nonfinite}" if self.audio and self.audio.nonfinite else ""))

    def stop(self) -> list[str]:
        """Close the sources, join every thread (within JOIN_TIMEOUT_S in all); names of stragglers."""
        self.request_stop("request")
        self._shutdown_sources()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        threads = self._threads + ([self.video.thread] if self.video else [])
        for t in threads:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]

    def _shutdown_sources(self) -> None:
        if self.video is not None:
            self.video.stop()
        if self.audio is not None:
            self.audio.stop()

    def run(self, progress: Callable[[str], None] | None = None) -> Summary:
        """Start, run until done, stop, finalize outputs. Ctrl-C / SIGTERM stop it cleanly."""
        signals = StopSignals(self.request_stop)
        not_joined = ["output"]            # if stopping is aborted, the recording is left as it is
        try:
            try:
                self.start()
                if progress is not None and self.audio is not None:
                    progress(self.started_line())
                self.wait(progress)
            finally:
                not_joined = self.stop()
        finally:
            signals.shield()               # no signal may cut finishing the files short
            try:
                written = self._finalize(not_joined)
            finally:
                signals.restore()
        if self.errors:
            raise JsaError(self.errors[0])
        if self.stopped_by and self.stopped_by.startswith("capture failure"):
            # the camera failed or stopped delivering: the outputs are finished, but it is an error
            raise JsaError(f"{self.video.error}; wrote {', '.join(written) or 'nothing'}")
        return self.summary(written, not_joined)

    def _ended_by(self) -> str:
        """Why a run nobody stopped ended: its video source ran out, or failed."""
        if self.video is not None and self.video.error:
            return f"capture failure ({self.video.error})"
        return "end of input"

    def _finalize(self, not_joined: list[str]) -> list[str]:
        """Finish the files (the window went with the output thread); what each one holds."""
        done = [sink.close(hung="output" in not_joined) for sink in self.sinks if not sink.thread_bound]
        return [line for line in done if line]

    def summary(self, written: list[str], not_joined: list[str]) -> Summary:
        span = (self._t_last - self._t_first) if self._t_first is not None and self._t_last else 0.0
        fps = (self.frames_rendered - 1) / span if span > 0 else 0.0
        if not self.stopped_by:
            self.stopped_by = self._ended_by()
        return Summary(self.frames_rendered, span, fps, self.latency.percentile(50),
                       self.latency.percentile(99), self.video.dropped + self._results.dropped if self.video else 0,
                       self.audio.overflows if self.audio else 0, self.audio_refreshes,
                       self.backend_name, self.stopped_by, written, not_joined, self.server_misses)

    # ---- inference thread -----------------------------------------------------------------------
    def _inference_loop(self) -> None:
        backend = None
        try:
            backend = self.backend_factory()
            self.backend_name = getattr(backend, "name", type(backend).__name__)
            self._config = backend.config
            self._ready.set()
            while not self._audio_ready.wait(0.05):
                if self.stop_event.is_set():
                    return
            self._infer_frames(backend)
        except JsaError as exc:
            self._fail(str(exc))
        except Exception as exc:           # a crash must stop the run and be reported, not hang it
            self._fail(f"inference failed: {type(exc).__name__}: {exc}")
        finally:
            self._results.close()
            if backend is not None:
                try:
                    backend.close()
                except Exception:
                    pass

    def _infer_frames(self, backend) -> None:
        step = FrameStep(backend, self.options.audio_hop, self.options.crop)
        while not self.stop_event.is_set():
            try:
                frame = self.video.frames.get(0.1)
            except Closed:
                return
            if frame is None:
                continue
            # the audio clock is the frame's media time: a file's sound stays with its picture
            try:
                raw = step.run(frame.image, frame.t_media, lambda: self.window.read(frame.t_capture, frame.t_media))
            except ServerUnavailable:
                # `--server`: the frame is still shown and recorded, in a "server unreachable" state;
                # the backend retries with back-off, so the run resumes when the server does
                self.server_misses += 1
                raw = self._unanswered(frame)
            self.audio_refreshes = step.audio_refreshes
            while not self._results.put((frame, raw)):   # only a lossless slot refuses (output busy)
                if self.stop_event.is_set() or self._results.closed:
                    return

    def _unanswered(self, frame: Frame) -> Where:
        """A frame no server answered: a blank map (the shown one fades), no source."""
        size = self._config.image_size
        return Where(np.zeros((size, size), np.float32), 0.0, SILENCE_DB, frame_size=frame.image.shape[:2],
                     reason="server unreachable", stages_ms={"preprocess": 0.0, "audio": 0.0, "visual": 0.0},
                     t_done=time.monotonic())

    # ---- output thread --------------------------------------------------------------------------
    def _log_fields(self, frame: Frame, raw: Where, where: Where, latency_ms: float, t_got: float,
                    now: float) -> dict:
        """One frame's log line (less the sinks' own time): `raw` the model's answer, `where` gated."""
        # the step's own span, so that the stages split each frame's age exactly
        stages = {"capture_wait": (raw.t_done - frame.t_capture) * 1e3 - raw.infer_ms, **raw.stages_ms,
                  "result_wait": (t_got - raw.t_done) * 1e3, "render": (now - t_got) * 1e3}
        fields = {
            "t": round(frame.t_media - self._t_media0, 4),
            "frame": frame.index,
            "peak": [round(v, 4) for v in where.peak] if where.active else None,
            "box": [round(v, 4) for v in where.box] if where.active else None,
            "confidence": round(raw.confidence, 4),      # the model's own: the log writes a non-finite one as null
            "level_db": round(where.level_db, 1),
            "state": "source" if where.active else f"no source ({where.reason})",
            "latency_ms": round(latency_ms, 2),
            "infer_ms": round(raw.infer_ms, 2),
            "audio_age_ms": round(raw.audio_age_s * 1000, 1),
            "backend": self.backend_name,
            "nonfinite_samples": self.audio.nonfinite,    # NaN / inf heard so far, zeroed
            "stages_ms": {k: round(v, 2) for k, v in stages.items()},
        }
        if self.options.hfov_deg:
            fields["bearing_deg"] = [round(a, 2) for a in where.bearing_deg(self.options.hfov_deg)] if where.active else None
        return fields

    def _output_loop(self) -> None:
        o = self.options
        localizer = Localizer(o.render, self._config.no_source_confidence)
        fps_ema, t_prev = 0.0, None
        try:
            while True:
                try:
                    got = self._results.get(0.1)
                except Closed:
                    return
                if got is None:
                    continue
                frame, raw = got
                if o.duration is not None and self._t_first is not None \
                        and frame.t_media - self._t_media0 >= o.duration:
                    # --duration covers [0, duration) of media time; frames still in flight when
                    # it ran out are dropped, so a recording is exactly that long
                    self.request_stop("--duration")
                    continue
                t_got = time.monotonic()
                where = localizer.update(raw, frame.t_media)
                image = draw_localization(frame.image, where, o.render)
                if o.render.show_hud:
                    draw_hud(image, where, HudInfo(fps_ema, self._latency_ema, self.backend_name,
                                                   self.window.window / self.audio.rate, self.video.dropped,
                                                   self.audio.overflows, localizer.level_gate_db))
                now = time.monotonic()
                latency_ms = (now - frame.t_capture) * 1000.0
                self._latency_ema = latency_ms if self.frames_rendered == 0 else \
                    0.9 * self._latency_ema + 0.1 * latency_ms
                if t_prev is not None and now > t_prev:
                    inst = 1.0 / (now - t_prev)
                    fps_ema = inst if fps_ema == 0 else 0.9 * fps_ema + 0.1 * inst
                t_prev = now
                self.latency.add(latency_ms)
                if self._t_first is None:
                    self._t_first = now
                    self._t_media0 = frame.t_media
                self._t_last = now
                self.frames_rendered += 1
                fields = self._log_fields(frame, raw, where, latency_ms, t_got, now)
                shown = Shown(image, frame.t_capture, frame.t_media, fields, t_sinks=time.monotonic())
                for sink in self.sinks:
                    if why := sink.write(shown):
                        self.request_stop(why)
        except JsaError as exc:           # already says what to do (an output that cannot be written)
            self._fail(str(exc))
        except Exception as exc:
            self._fail(f"output failed: {type(exc).__name__}: {exc}")
        finally:
            for sink in self.sinks:
                if sink.thread_bound:
                    try:
                        sink.close()
                    except Exception:
                        pass
