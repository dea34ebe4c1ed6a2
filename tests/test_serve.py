"""`jsa-rt serve` on a real Triton Inference Server (PyTriton), and its clients.

One server for the module, started the way a user starts it (`jsa-rt serve` from this venv, which
re-executes under .venv-serve's Debian python3.11), on free loopback ports, with a long batching
window (200 ms) so that two concurrent requests are sure to meet in one batch. The last test stops
it with SIGTERM while a live pipeline streams to it.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from jsa_rt.errors import InputError
from jsa_rt.export.serve import SERVE_VENV, prepare_graphs
from jsa_rt.runtime import load_backend

from live_helpers import write_red_square_clip, write_tone_wav

pytest.importorskip("tritonclient.grpc", reason="the Triton client is not installed: pip install 'jsa-rt[client]'")
from jsa_rt.runtime.triton_client import ServerUnavailable, TritonClientBackend

HAS_SERVER = any(SERVE_VENV.glob("lib/python3*/site-packages/pytriton/__init__.py"))
needs_server = pytest.mark.skipif(not HAS_SERVER, reason=f"no {SERVE_VENV} with nvidia-pytriton: run tools/setup.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int, model: str) -> dict:
    """Triton's Prometheus counters for one model: {'request_success': n, 'exec_count': n, ...}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("nv_inference_") and f'model="{model}"' in line:
            out[line.split("{")[0][len("nv_inference_"):]] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not HAS_SERVER:
        pytest.skip(f"no {SERVE_VENV} with nvidia-pytriton: run tools/setup.sh")
    base = prepare_graphs("edge-jsa")            # exported once (about a minute), then cached
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jsa_rt.cli", "serve", "--model", str(base),
                                 "--max-batch", "4", "--queue-delay-us", "200000",
                                 "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
                                 "--metrics-port", str(ports["metrics"])], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while "serve: ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"jsa-rt serve did not become ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    yield {"proc": proc, "log": log, **ports}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def inputs(seed: int):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    frame[60:140, 80:170] = (230, 40, 30)                        # some structure, not only noise
    wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000) + 0.05 * rng.standard_normal(32000))
    return frame, wave.astype(np.float32)


@pytest.fixture(scope="module")
def local():
    return load_backend("onnxruntime", "edge-jsa", device="cpu")


def assert_same(a, b):
    for name in ("heatmap", "aud", "img", "image_slot", "audio_slot"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-4, err_msg=name)
    assert abs(a.confidence - b.confidence) < 1e-5


@needs_server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_results_through_the_server_equal_the_local_backend(server, local, protocol):
    remote = load_backend(server=f"{protocol}://127.0.0.1:{server[protocol]}")
    assert remote.config == local.config and remote.model_name == "edge-jsa"
    for seed in (0, 1):
        frame, wave = inputs(seed)
        assert_same(local.run_visual(frame, local.run_audio(wave)), remote.run_visual(frame, remote.run_audio(wave)))
    remote.close()


@needs_server
def test_sound_locator_with_a_server_answers_as_the_local_one(server):
    from jsa_rt import SoundLocator
    frame, wave = inputs(2)
    bgr = np.ascontiguousarray(np.repeat(np.repeat(frame, 2, 0), 3, 1)[..., ::-1])     # 448 x 672
    wheres = []
    for kwargs in ({"backend": "onnxruntime"}, {"server": f"grpc://127.0.0.1:{server['grpc']}"}):
        with SoundLocator(min_confidence=0.0, **kwargs) as locator:
            locator.push_audio(wave, 16000)
            wheres.append(locator.locate(bgr))
    a, b = wheres
    assert (a.active, a.reason, a.peak) == (b.active, b.reason, b.peak)
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-4)


@needs_server
def test_two_concurrent_requests_run_as_one_batch_with_their_own_answers(server, local):
    clients = [load_backend(server=f"grpc://127.0.0.1:{server['grpc']}") for _ in range(2)]
    cases = [inputs(10 + i) for i in range(2)]
    states = [c.run_audio(wave) for c, (_, wave) in zip(clients, cases)]
    before = metrics(server["metrics"], "jsa_visual")
    results = [None, None]

    def call(i):
        results[i] = clients[i].run_visual(cases[i][0], states[i])
    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(r is not None for r in results), "a request got no answer within 10 s"
    # the server counts a request after its response is on the way: wait for the counters
    deadline = time.monotonic() + 5
    after = metrics(server["metrics"], "jsa_visual")
    while after["request_success"] - before["request_success"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = metrics(server["metrics"], "jsa_visual")
    assert after["request_success"] - before["request_success"] == 2
    assert after["exec_count"] - before["exec_count"] == 1, "the two requests ran as separate batches"
    for (frame, wave), got in zip(cases, results):     # each stream got its own answer out of the batch
        assert_same(local.run_visual(frame, local.run_audio(wave)), got)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_absent_server_is_a_quick_one_line_error_then_back_off(protocol):
    url = f"{protocol}://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable) as exc:
        load_backend(server=url)
    assert time.monotonic() - t0 < 3.5
    assert "\n" not in str(exc.value) and url in str(exc.value) and "jsa-rt serve" in str(exc.value)


def test_bad_server_urls_and_mixed_options_are_one_line_errors():
    for url in ("127.0.0.1:8001", "grpcs://h:1", "grpc://h:99999", "http://h:80/v2"):
        with pytest.raises(InputError, match="grpc://HOST:PORT"):
            TritonClientBackend(url)
    with pytest.raises(Exception, match="server chooses the model"):
        load_backend("onnxruntime", server="grpc://127.0.0.1:1")


@needs_server
def test_sigterm_stops_the_server_cleanly_and_a_live_stream_shows_it_unreachable(server, tmp_path):
    """A live pipeline streams a file to the server; the server gets SIGTERM halfway. The pipeline
    keeps rendering with a 'server unreachable' state, and its recording is finalized."""
    from jsa_rt.live.pipeline import Pipeline
    from jsa_rt.live.settings import LiveOptions
    from jsa_rt.runtime.triton_client import TritonClientBackend as Client
    clip, wav = tmp_path / "clip.mp4", tmp_path / "tone.wav"
    write_red_square_clip(clip, frames=45, fps=15)
    write_tone_wav(wav, 3.0)
    url = f"grpc://127.0.0.1:{server['grpc']}"
    opts = LiveOptions(camera=str(clip), mic=f"file://{wav}", headless=True, quiet=True,
                       output=str(tmp_path / "out.mp4"), log_json=str(tmp_path / "out.jsonl"))
    pipeline = Pipeline(opts, lambda: Client(url, timeout_s=1.0))
    proc = server["proc"]
    stopper = threading.Timer(1.2, proc.send_signal, args=(signal.SIGTERM,))
    stopper.start()
    summary = pipeline.run()
    stopper.join()
    assert proc.wait(30) == 0 and "serve: stopped" in server["log"].read_text()
    states = [json.loads(line)["state"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "no source (server unreachable)" in states, states
    assert states[0] != "no source (server unreachable)"                 # it was serving before
    assert summary.frames == len(states) and str(tmp_path / "out.mp4") in " ".join(summary.written)
    import cv2                                                 # finalized: it opens and plays
    video = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert video.read()[0] and video.get(cv2.CAP_PROP_FRAME_COUNT) >= len(states)
    t0 = time.monotonic()                                      # a client of the stopped server: quick error
    with pytest.raises(ServerUnavailable):
        load_backend(server=url)
    assert time.monotonic() - t0 < 3.5
