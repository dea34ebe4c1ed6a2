"""Load test of `jsa-rt serve`: N concurrent camera streams against one server, against one process each.

    .venv/bin/python tools/load_test.py [--streams 1,2,4,8] [--seconds 10]

Each stream plays frames from a generated 640x480 clip (decoded once) at 30 fps through the live
per-frame step (live/step.py) with the audio branch refreshed every 0.25 s (4 Hz). A stream that
falls behind drops the frames it missed and takes the newest, as the live pipeline does. Three
set-ups per N, one after another:

  batching      one `jsa-rt serve` (max batch 8), N client threads over gRPC
  no-batching   the same server started with --no-batching (every request runs alone)
  per-process   N processes, each with its own onnxruntime backend (no server)

Reported per N and set-up: per-stream fps (min/mean/max), p50/p99 latency from a frame's due time to
its result, dropped frames, total throughput (frames/s), mean batch size from Triton's metrics
(inferences / executions) and the server's memory (RSS of its process tree). Written to
benchmarks/serve_<machine>/load_test.{json,md,png}.
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

FPS, AUDIO_HOP = 30.0, 0.25


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


def run_stream(backend, frames, seconds: float, seed: int) -> dict:
    """Frames due at 30 fps for `seconds`; each processed when the previous one is done."""
    rng = np.random.default_rng(seed)
    wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000) + 0.02 * rng.standard_normal(32000))
    chunk = AudioChunk(wave.astype(np.float32), -20.0, 0)
    step = FrameStep(backend, AUDIO_HOP)
    latencies, dropped, errors, nxt = [], 0, 0, 0
    t0 = time.monotonic()
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
            errors += 1
            continue
        latencies.append((time.monotonic() - (t0 + due / FPS)) * 1e3)
    return {"frames": len(latencies), "fps": len(latencies) / seconds, "dropped": dropped, "errors": errors,
            "latencies_ms": latencies}


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


def tree_rss_mb(pid: int) -> float:
    import psutil
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 1e6


def served(n: int, ports: dict, frames, seconds: float, server_pid: int) -> dict:
    from jsa_rt.runtime import load_backend
    backends = [load_backend(server=f"grpc://127.0.0.1:{ports['grpc']}", timeout_s=5.0) for _ in range(n)]
    before = counters(ports["metrics"])
    results = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run_stream(backends[i], frames, seconds, i)))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = counters(ports["metrics"])
    batch = {}
    for model in ("jsa_audio", "jsa_visual"):
        runs = after[("nv_inference_exec_count", model)] - before.get(("nv_inference_exec_count", model), 0)
        items = after[("nv_inference_count", model)] - before.get(("nv_inference_count", model), 0)
        batch[model] = round(items / runs, 2) if runs else None
    for b in backends:
        b.close()
    return {"streams": results, "mean_batch": batch, "server_rss_mb": round(tree_rss_mb(server_pid), 1)}


def per_process(n: int, seconds: float) -> dict:
    """N worker processes of this script, each with its own onnxruntime backend."""
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--seconds", str(seconds)],
                              stdout=subprocess.PIPE, text=True) for i in range(n)]
    return {"streams": [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs],
            "mean_batch": None, "server_rss_mb": None}


def summarize(run: dict) -> dict:
    streams = run.pop("streams")
    fps = [s["fps"] for s in streams]
    lat = np.concatenate([s["latencies_ms"] for s in streams]) if any(s["latencies_ms"] for s in streams) else np.zeros(1)
    return {**run, "fps_min": round(min(fps), 2), "fps_mean": round(float(np.mean(fps)), 2),
            "fps_max": round(max(fps), 2), "throughput_fps": round(sum(fps), 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "dropped": sum(s["dropped"] for s in streams), "errors": sum(s["errors"] for s in streams)}


# ---- reports ---------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = [f"# jsa-rt serve load test, {report['machine']}", "",
             f"{report['date']}; {report['seconds']:g} s per run; streams at {FPS:g} fps, audio every "
             f"{AUDIO_HOP:g} s; edge-jsa on onnxruntime (CPU). Latency: a frame's due time to its result.", "",
             "| N | set-up | throughput fps | per-stream fps min / mean / max | p50 / p99 ms | dropped | errors "
             "| mean batch visual / audio | server RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        b = row["mean_batch"] or {}
        lines.append(f"| {row['n']} | {row['setup']} | {row['throughput_fps']} | {row['fps_min']} / {row['fps_mean']} / "
                     f"{row['fps_max']} | {row['p50_ms']} / {row['p99_ms']} | {row['dropped']} | {row['errors']} | "
                     f"{b.get('jsa_visual', '-')} / {b.get('jsa_audio', '-')} | {row['server_rss_mb'] or '-'} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for setup in dict.fromkeys(r["setup"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["setup"] == setup]
        ax1.plot([r["n"] for r in rows], [r["throughput_fps"] for r in rows], "o-", label=setup)
        ax2.plot([r["n"] for r in rows], [r["p99_ms"] for r in rows], "o-", label=setup)
    ax1.set(xlabel="streams", ylabel="total frames/s", title="throughput")
    ax2.set(xlabel="streams", ylabel="ms", title="p99 latency", yscale="log")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.legend()
    fig.suptitle(f"jsa-rt serve, {report['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / f"serve_{machine_name()}"))
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    frames = clip_frames()
    if args.worker is not None:                         # one per-process stream
        from jsa_rt.runtime import load_backend
        result = run_stream(load_backend("onnxruntime", "edge-jsa", device="cpu"), frames, args.seconds, args.worker)
        print(json.dumps(result))
        return 0
    ns = [int(n) for n in args.streams.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for setup, extra in (("batching", ["--max-batch", "8"]), ("no-batching", ["--no-batching"])):
        proc, ports = start_server(extra, out / f"server_{setup}.log")
        try:
            for n in ns:
                rows.append({"n": n, "setup": setup, **summarize(served(n, ports, frames, args.seconds, proc.pid))})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        (out / f"server_{setup}.log").unlink()
    for n in ns:
        rows.append({"n": n, "setup": "per-process", **summarize(per_process(n, args.seconds))})
        print(json.dumps(rows[-1]), flush=True)
    report = {"machine": machine_name(), "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds, "rows": rows}
    (out / "load_test.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "load_test.md").write_text(markdown(report))
    plot(report, out / "load_test.png")
    print(f"load_test: wrote {out}/load_test.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
