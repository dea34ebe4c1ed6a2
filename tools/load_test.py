"""Load test of `jsa-rt serve`: N concurrent camera streams against one server, against one process each.

    .venv/bin/python tools/load_test.py [--streams 1,2,4,8] [--seconds 10] [--model edge-jsa]
    .venv/bin/python tools/load_test.py --setups batching --streams 4 --seconds 300 --name memory_n4_5min
    .venv/bin/python tools/load_test.py --setups batching --streams 4 --seconds 60 --kill-client 30 \
        --name kill_client_n4

`--model` (default: the shipped default model) is what the server and the per-process streams run.
Each stream plays frames from a generated 640x480 clip (decoded once) at 30 fps through the live
per-frame step (live/step.py) with the audio branch refreshed every 0.25 s (4 Hz). A stream that
falls behind drops the frames it missed and takes the newest, as the live pipeline does. The
set-ups (`--setups`, default all three), one after another, each for every N in `--streams`:

  batching      one `jsa-rt serve` (max batch 8), N client threads over gRPC
  no-batching   the same server started with --no-batching (every request runs alone)
  per-process   N processes, each with its own onnxruntime backend (no server); they load first
                and start streaming together

Reported per N and set-up: per-stream fps (min/mean/max), p50/p99 latency from a frame's due time to
its result, dropped frames, total throughput (frames/s), mean batch size from Triton's metrics
(inferences / executions), and the server's memory: the RSS of its process tree sampled every
`--rss-every` s (start, end, max, slope in MB/min; the series is in the JSON). Total frames/s
and RSS over time are in the JSON too, and in the plot when there is a single N.

`--kill-client T`: stream 0 is a separate client process (the others are threads here), killed
with SIGKILL T s into the run; the report gives the surviving streams' fps before and after, their
errors after the kill, and whether a fresh client is answered afterwards.

Written to benchmarks/serve_<machine>/NAME.{json,md,png} (`--name`, default load_test), with the
load average (/proc/loadavg) at start and end: on a shared machine, other work takes cores too.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jsa_rt.live.audio import AudioChunk
from jsa_rt.live.step import FrameStep
from jsa_rt.machine import machine_name
from jsa_rt.shipped import DEFAULT_MODEL

FPS, AUDIO_HOP = 30.0, 0.25
SETUPS = {"batching": ["--max-batch", "8"], "no-batching": ["--no-batching"], "per-process": None}


def clip_frames(n: int = 60) -> list[np.ndarray]:
    """A red square moving over a gradient, written to mp4 and decoded back (a file source's frames)."""
    import cv2
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "clip.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
        for i in range(n):
            img = np.tile(np.linspace(40, 200, 640, dtype=np.uint8)[None, :, None], (480, 1, 3))
            x = 40 + 8 * i
            img[180:300, x:x + 120] = (30, 30, 230)
            writer.write(img)
        writer.release()
        cap, frames = cv2.VideoCapture(path), []
        while (ok := cap.read())[0]:
            frames.append(ok[1])
    return frames


def run_stream(backend, frames, seconds: float, seed: int, t0: float | None = None) -> dict:
    """Frames due at 30 fps for `seconds` from `t0` (default now); each processed when the previous
    one is done. `done_s`/`error_s`: when each frame was answered / failed, s from t0."""
    rng = np.random.default_rng(seed)
    wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000) + 0.02 * rng.standard_normal(32000))
    chunk = AudioChunk(wave.astype(np.float32), -20.0, 0)
    step = FrameStep(backend, AUDIO_HOP)
    latencies, done, failed, dropped, nxt = [], [], [], 0, 0
    t0 = time.monotonic() if t0 is None else t0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * FPS)                      # the newest frame the camera has delivered
        if due < nxt:
            time.sleep(t0 + nxt / FPS - now)
            continue
        dropped += due - nxt
        nxt = due + 1
        try:
            step.run(frames[due % len(frames)], due / FPS, lambda: chunk)
        except Exception:                                # a server error: counted, the stream goes on
            failed.append(round(time.monotonic() - t0, 3))
            continue
        end = time.monotonic()
        latencies.append((end - (t0 + due / FPS)) * 1e3)
        done.append(round(end - t0, 3))
    return {"frames": len(latencies), "fps": len(latencies) / seconds, "dropped": dropped, "errors": len(failed),
            "latencies_ms": latencies, "done_s": done, "error_s": failed}


# ---- worker processes (per-process streams, the killed client) -----------------------------------
def start_worker(i: int, seconds: float, model: str, server: str | None = None) -> subprocess.Popen:
    """A stream in its own process: it loads its backend, says "ready", streams after "go"."""
    return subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--seconds", str(seconds),
                             "--model", model] + (["--worker-server", server] if server else []),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline().strip()
    if line != "ready":
        sys.exit(f"load_test: a worker did not start (said {line!r}, exit {proc.poll()})")


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def worker(index: int, seconds: float, model: str, server: str | None) -> int:
    from jsa_rt.runtime import load_backend
    frames = clip_frames()
    backend = (load_backend(server=server, timeout_s=5.0) if server else
               load_backend("onnxruntime", model, device="cpu"))
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(run_stream(backend, frames, seconds, index)), flush=True)
    return 0


# ---- the server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra: list[str], log: Path):
    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jsa_rt.cli", "serve", *extra,
                                 "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
                                 "--metrics-port", str(ports["metrics"])], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300                   # the first start may export the graphs
    while "serve: ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"load_test: jsa-rt serve did not start: {log.read_text()[-1500:]}")
        time.sleep(0.3)
    return proc, ports


def counters(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("nv_inference_count{", "nv_inference_exec_count{")):
            model = line.split('model="')[1].split('"')[0]
            out[(line.split("{")[0], model)] = float(line.rsplit(" ", 1)[1])
    return out


def tree_rss_mb(pid: int, by_name: bool = False):
    """RSS of a process and its descendants, MB (with `by_name`: per executable name)."""
    import psutil
    proc = psutil.Process(pid)
    total, names = 0, {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss, name = p.memory_info().rss, p.name()
        except psutil.NoSuchProcess:
            continue
        total += rss
        names[name] = round(names.get(name, 0) + rss / 1e6, 1)
    return names if by_name else total / 1e6


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


class RssSampler(threading.Thread):
    """[t_s, server RSS MB, 1-min load average] every `every` s until `finish()`."""

    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.pid, self.every, self.series = pid, every, []
        self._stop_sampling = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        self.series.append([round(time.monotonic() - self.t0, 1), round(tree_rss_mb(self.pid), 1), load_average()[0]])

    def run(self) -> None:
        self.sample()
        while not self._stop_sampling.wait(self.every):
            self.sample()

    def finish(self) -> list:
        self._stop_sampling.set()
        self.join()
        self.sample()
        return self.series


def rss_stats(series: list) -> dict:
    """Start, end, max and the least-squares slope (MB/min) over the run and over its second half."""
    t = np.array([s[0] for s in series]) / 60
    mb = np.array([s[1] for s in series])

    def slope(mask):
        return round(float(np.polyfit(t[mask], mb[mask], 1)[0]), 2) if mask.sum() >= 3 else None
    return {"rss_start_mb": float(mb[0]), "rss_end_mb": float(mb[-1]), "rss_max_mb": float(mb.max()),
            "rss_slope_mb_per_min": slope(np.ones_like(t, bool)),
            "rss_slope_2nd_half_mb_per_min": slope(t >= t[-1] / 2)}


def served(n: int, ports: dict, frames, seconds: float, server_pid: int, rss_every: float, model: str,
           kill_at: float | None = None) -> dict:
    from jsa_rt.runtime import load_backend
    url = f"grpc://127.0.0.1:{ports['grpc']}"
    victim = start_worker(0, seconds, model, server=url) if kill_at is not None else None
    first = 1 if victim else 0                          # stream 0 is the victim process
    backends = [load_backend(server=url, timeout_s=5.0) for _ in range(first, n)]
    if victim:
        wait_ready(victim)
    before = counters(ports["metrics"])
    rss_start_by_name = tree_rss_mb(server_pid, by_name=True)
    sampler = RssSampler(server_pid, rss_every)
    results = [None] * n
    t0 = sampler.t0 = time.monotonic()
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, run_stream(backends[i - first], frames, seconds, i, t0))) for i in range(first, n)]
    sampler.start()
    if victim:
        go(victim)
    for t in threads:
        t.start()
    killed = None
    if victim:
        time.sleep(max(0.0, t0 + kill_at - time.monotonic()))
        victim.send_signal(signal.SIGKILL)                 # mid-stream: it may have a request in flight
        killed = round(time.monotonic() - t0, 2)
        victim.wait()
    for t in threads:
        t.join()
    series = sampler.finish()
    after = counters(ports["metrics"])
    batch = {}
    for model in ("jsa_audio", "jsa_visual"):
        runs = after[("nv_inference_exec_count", model)] - before.get(("nv_inference_exec_count", model), 0)
        items = after[("nv_inference_count", model)] - before.get(("nv_inference_count", model), 0)
        batch[model] = round(items / runs, 2) if runs else None
    for b in backends:
        b.close()
    row = {"streams": [r for r in results if r is not None], "mean_batch": batch,
           "server_rss_mb": series[-1][1], **rss_stats(series), "rss_series": series,
           "rss_by_process_start_mb": rss_start_by_name, "rss_by_process_end_mb": tree_rss_mb(server_pid, by_name=True)}
    if victim:
        row["kill"] = kill_report(row["streams"], killed, seconds, url)
    return row


def kill_report(survivors: list, killed: float, seconds: float, url: str) -> dict:
    """The surviving streams' fps before and after the kill; a fresh client's call afterwards."""
    from jsa_rt.runtime import load_backend

    def fps(s, lo, hi):
        return round(sum(lo <= t < hi for t in s["done_s"]) / (hi - lo), 2)
    try:                                                 # the server still answers a new client
        fresh = load_backend(server=url, timeout_s=5.0)
        fresh.run_audio(np.zeros(fresh.config.num_samples, np.float32))
        fresh.close()
        answered = True
    except Exception:
        answered = False
    return {"killed_at_s": killed, "survivors": len(survivors),
            "survivor_fps_before": [fps(s, 0, killed) for s in survivors],
            "survivor_fps_after": [fps(s, killed, seconds) for s in survivors],
            "survivor_errors_after": sum(sum(t >= killed for t in s["error_s"]) for s in survivors),
            "fresh_client_answered": answered}


def per_process(n: int, seconds: float, model: str) -> dict:
    """N worker processes of this script, each with its own onnxruntime backend, started together."""
    procs = [start_worker(i, seconds, model) for i in range(n)]
    for p in procs:
        wait_ready(p)
    for p in procs:
        go(p)
    return {"streams": [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs],
            "mean_batch": None, "server_rss_mb": None}


def summarize(run: dict, seconds: float) -> dict:
    streams = run.pop("streams")
    fps = [s["fps"] for s in streams]
    lat = np.concatenate([s["latencies_ms"] for s in streams]) if any(s["latencies_ms"] for s in streams) else np.zeros(1)
    bin_s = max(1.0, seconds / 30)                     # total frames/s over time
    edges = np.arange(0, seconds + 1e-9, bin_s)
    counts = np.histogram(np.concatenate([s["done_s"] for s in streams] or [np.zeros(0)]), edges)[0]
    return {**run, "fps_min": round(min(fps), 2), "fps_mean": round(float(np.mean(fps)), 2),
            "fps_max": round(max(fps), 2), "fps_min_over_max": round(min(fps) / max(fps), 2) if max(fps) else None,
            "throughput_fps": round(sum(fps), 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "dropped": sum(s["dropped"] for s in streams), "errors": sum(s["errors"] for s in streams),
            "throughput_series": [[round(float(a + bin_s / 2), 1), round(float(c / bin_s), 2)]
                                  for a, c in zip(edges[:-1], counts)]}


# ---- reports ---------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    la0, la1 = report["loadavg_start"], report["loadavg_end"]
    lines = [f"# jsa-rt serve load test, {report['machine']}", "",
             f"{report['date']}; {report['seconds']:g} s per run; streams at {FPS:g} fps, audio every "
             f"{AUDIO_HOP:g} s; {report.get('model', 'edge-jsa')} on onnxruntime (CPU). Latency: a frame's due time to its result.",
             "", f"Load average (1/5/15 min, /proc/loadavg): {' / '.join(map(str, la0))} at the start, "
             f"{' / '.join(map(str, la1))} at the end (this test's own streams count in it too)." + (f" {report['note']}" if report.get("note") else ""), "",
             "| N | set-up | throughput fps | per-stream fps min / mean / max | p50 / p99 ms | dropped | errors "
             "| mean batch visual / audio | server RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        b = row["mean_batch"] or {}
        lines.append(f"| {row['n']} | {row['setup']} | {row['throughput_fps']} | {row['fps_min']} / {row['fps_mean']} / "
                     f"{row['fps_max']} | {row['p50_ms']} / {row['p99_ms']} | {row['dropped']} | {row['errors']} | "
                     f"{b.get('jsa_visual', '-')} / {b.get('jsa_audio', '-')} | {row['server_rss_mb'] or '-'} |")
    lines.append("")
    for row in report["rows"]:
        if row.get("rss_series"):
            slope = (f"; slope {row['rss_slope_mb_per_min']} MB/min over the run, "
                     f"{row['rss_slope_2nd_half_mb_per_min']} MB/min over its second half"
                     if row["rss_slope_2nd_half_mb_per_min"] is not None else "")     # too few samples for one
            lines.append(f"- N = {row['n']}, {row['setup']}: server RSS {row['rss_start_mb']:g} MB at the start, "
                         f"{row['rss_end_mb']:g} at the end, {row['rss_max_mb']:g} at most "
                         f"({len(row['rss_series'])} samples, every {report['rss_every']:g} s){slope}.")
        if row.get("kill"):
            k = row["kill"]
            lines.append(f"- N = {row['n']}, {row['setup']}, one client process killed (SIGKILL) at "
                         f"{k['killed_at_s']:g} s: the {k['survivors']} other streams' fps before "
                         f"{' / '.join(map(str, k['survivor_fps_before']))}, after "
                         f"{' / '.join(map(str, k['survivor_fps_after']))}; their errors after the kill: "
                         f"{k['survivor_errors_after']}; a new client answered afterwards: "
                         f"{'yes' if k['fresh_client_answered'] else 'NO'}.")
        if row["n"] > 1:
            lines.append(f"- N = {row['n']}, {row['setup']}: slowest stream / fastest = {row['fps_min_over_max']}.")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    setups = list(dict.fromkeys(r["setup"] for r in rows))
    if len({r["n"] for r in rows}) > 1:                 # scaling with N
        for setup in setups:
            mine = [r for r in rows if r["setup"] == setup]
            ax1.plot([r["n"] for r in mine], [r["throughput_fps"] for r in mine], "o-", label=setup)
            ax2.plot([r["n"] for r in mine], [r["p99_ms"] for r in mine], "o-", label=setup)
        ax1.set(xlabel="streams", ylabel="total frames/s", title="throughput")
        ax2.set(xlabel="streams", ylabel="ms", title="p99 latency", yscale="log")
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
    else:                                               # one N: over time
        for r in rows:
            t, f = zip(*r["throughput_series"])
            ax1.plot(t, f, ".-", label=r["setup"])
            if r.get("rss_series"):
                ax2.plot([s[0] for s in r["rss_series"]], [s[1] for s in r["rss_series"]], ".-", label=r["setup"])
            if r.get("kill"):
                for ax in (ax1, ax2):
                    ax.axvline(r["kill"]["killed_at_s"], color="k", ls=":", label="client killed")
        killed = " (the other streams)" if any(r.get("kill") for r in rows) else ""
        ax1.set(xlabel="s", ylabel=f"total frames/s{killed}", title=f"throughput, N = {rows[0]['n']}", ylim=(0, None))
        ax2.set(xlabel="s", ylabel="MB", title="server RSS (process tree)")
    for ax in (ax1, ax2):
        if ax.has_data():
            ax.legend()
    fig.suptitle(f"jsa-rt serve, {report['model']}, {report['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rss-every", type=float, default=5.0, help="sample the server's RSS every S seconds")
    p.add_argument("--kill-client", type=float, default=None, metavar="T",
                   help="stream 0 is its own process, SIGKILLed T s into each server run")
    p.add_argument("--name", default="load_test", help="report file names: NAME.json/.md/.png")
    p.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / f"serve_{machine_name()}"))
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"shipped name or .pt (default {DEFAULT_MODEL})")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-server", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:                         # one stream in its own process
        return worker(args.worker, args.seconds, args.model, args.worker_server)
    setups = args.setups.split(",")
    if unknown := set(setups) - set(SETUPS):
        p.error(f"unknown set-up {', '.join(sorted(unknown))}; choose from {', '.join(SETUPS)}")
    ns = [int(n) for n in args.streams.split(",")]
    if args.kill_client is not None and not (0 < args.kill_client < args.seconds and min(ns) >= 2):
        p.error("--kill-client T needs 0 < T < --seconds and at least 2 streams")
    frames = clip_frames()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loadavg_start, rows = load_average(), []
    for setup in setups:
        if SETUPS[setup] is None:
            for n in ns:
                rows.append({"n": n, "setup": setup, **summarize(per_process(n, args.seconds, args.model), args.seconds)})
                print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("series")}), flush=True)
            continue
        proc, ports = start_server(SETUPS[setup] + ["--model", args.model], out / f"server_{setup}.log")
        try:
            for n in ns:
                run = served(n, ports, frames, args.seconds, proc.pid, args.rss_every, args.model, args.kill_client)
                rows.append({"n": n, "setup": setup, **summarize(run, args.seconds)})
                print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("series")}), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        (out / f"server_{setup}.log").unlink()
    report = {"machine": machine_name(), "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds,
              "model": args.model,
              "rss_every": args.rss_every, "loadavg_start": loadavg_start, "loadavg_end": load_average(),
              "note": args.note, "rows": rows}
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(markdown(report))
    plot(report, out / f"{args.name}.png")
    print(f"load_test: wrote {out}/{args.name}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
