"""`jsa-rt serve` on a real Triton Inference Server (PyTriton), and its clients.

One server for the module, started the way a user starts it (`jsa-rt serve` from this venv, which
re-executes under .venv-serve's Debian python3.11), on free loopback ports, with a long batching
window (200 ms) so that two concurrent requests are sure to meet in one batch. A `jsa-rt live`
client process is killed with SIGKILL while two others stream to it; the last test stops it with
SIGTERM while a live pipeline streams to it. One more server of its own is killed with SIGKILL
while a `jsa-rt live --server` process records from it.
"""
from __future__ import annotations

import json
import os
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

from live_helpers import REPO, write_red_square_clip, write_tone_wav

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


@needs_server
def test_the_ready_line_says_auto_chose_onnxruntime_here_and_why(server):
    """No TensorRT in .venv-serve here: `--backend auto` (the default) serves on onnxruntime."""
    ready = [line for line in server["log"].read_text().splitlines() if line.startswith("serve: ready: ")]
    assert len(ready) == 1, server["log"].read_text()[-2000:]
    assert "(onnxruntime, chosen by auto: no TensorRT with a builder can be imported; max batch 4)" in ready[0]


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
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_client_made_in_one_thread_is_served_in_another(server, local, protocol):
    """A backend made in one thread and used from another (e.g. `SoundLocator(server=...)` built in
    an app's main thread, `locate` called from its worker; the live pipeline itself builds its backend
    in the inference thread). The HTTP client (gevent) is bound to the thread that opened it, so
    each thread must get its own connection."""
    remote = load_backend(server=f"{protocol}://127.0.0.1:{server[protocol]}")
    frame, wave = inputs(4)
    remote.run_audio(wave)                                     # the creating thread is served
    got = []

    def work():
        try:
            got.append(remote.run_visual(frame, remote.run_audio(wave)))
        except Exception as exc:
            got.append(exc)
    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    remote.close()
    assert got and not isinstance(got[0], Exception), f"a call from another thread failed: {got}"
    assert_same(local.run_visual(frame, local.run_audio(wave)), got[0])


@needs_server
def test_sound_locator_with_a_server_answers_as_the_local_one(server):
    from jsa_rt import SoundLocator
    frame, wave = inputs(2)
    bgr = np.ascontiguousarray(np.repeat(np.repeat(frame, 2, 0), 3, 1)[..., ::-1])     # 448 x 672
    wheres = []
    for kwargs in ({"backend": "onnxruntime", "model": "edge-jsa"},       # what the server fixture serves
                   {"server": f"grpc://127.0.0.1:{server['grpc']}"}):
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


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of all its threads, recursively), from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                kids = []
            found += kids
            todo += kids
    return found


def raised(call, *args):
    """What `call(*args)` raised (None if it returned)."""
    try:
        call(*args)
    except Exception as exc:
        return exc
    return None


@needs_server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_hung_server_is_a_one_line_timeout_and_the_same_client_recovers(server, local, protocol):
    """A server that accepts connections and never answers (every process of `jsa-rt serve`
    stopped with SIGSTOP, as on a hung or overloaded machine): a call ends after its timeout with
    one line, the next one fails at once (back-off, no network), and once the server runs again
    the same client object is served, with the local backend's answer."""
    client = load_backend(server=f"{protocol}://127.0.0.1:{server[protocol]}", timeout_s=1.0)
    frame, wave = inputs(3)
    client.run_audio(wave)                                     # connected and served first
    stopped = [server["proc"].pid, *descendants(server["proc"].pid)]
    assert len(stopped) >= 2, "expected tritonserver below jsa-rt serve"
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        outcome = []                                           # in a thread, so a hang fails the test
        caller = threading.Thread(target=lambda: outcome.append(raised(client.run_audio, wave)), daemon=True)
        caller.start()
        caller.join(10)
        waited = time.monotonic() - t0
        assert outcome, "the call to a hung server did not return within 10 s (a 1 s timeout)"
        hung = outcome[0]
        assert isinstance(hung, ServerUnavailable), f"expected ServerUnavailable, got {hung!r}"
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable, match="next try in"):
            client.run_audio(wave)
        backing_off = time.monotonic() - t0
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert 0.9 <= waited < 3.0, f"the call took {waited:.2f} s with a 1 s timeout: {hung}"
    assert backing_off < 0.1
    assert "\n" not in str(hung) and "timeout 1 s" in str(hung) and "jsa-rt serve" in str(hung)
    deadline = time.monotonic() + 15
    while True:                                                # back-off is 0.5 s after one failure
        try:
            state = client.run_audio(wave)
            break
        except ServerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert_same(local.run_visual(frame, local.run_audio(wave)), client.run_visual(frame, state))
    client.close()


def test_bad_server_urls_and_mixed_options_are_one_line_errors():
    for url in ("127.0.0.1:8001", "grpcs://h:1", "grpc://h:99999", "http://h:80/v2"):
        with pytest.raises(InputError, match="grpc://HOST:PORT"):
            TritonClientBackend(url)
    with pytest.raises(Exception, match="server chooses the model"):
        load_backend("onnxruntime", server="grpc://127.0.0.1:1")


def jsa_rt_cli(*args: str, **kwargs) -> subprocess.Popen:
    """A real `jsa-rt` command in its own process (its own session, so a kill reaches only it)."""
    return subprocess.Popen([sys.executable, "-m", "jsa_rt.cli", *args], cwd=str(REPO), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs)


def lines_of(path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()[:-1]]      # the last may be half written


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@needs_server
def test_killing_a_client_mid_stream_leaves_the_server_serving_the_others(server, tmp_path):
    """A `jsa-rt live --server` process streams alongside two other clients and is killed with
    SIGKILL mid-stream (a request may wait up to 200 ms to join a batch, so one of its requests
    is usually in flight, often batched with the others'). The others keep getting answers,
    without one error, and a new client is served."""
    clip, wav, log = tmp_path / "clip.mp4", tmp_path / "tone.wav", tmp_path / "victim.jsonl"
    write_red_square_clip(clip, frames=30, fps=15)
    write_tone_wav(wav, 2.0)
    url = f"grpc://127.0.0.1:{server['grpc']}"
    victim = jsa_rt_cli("live", "--server", url, "--camera", str(clip), "--mic", f"file://{wav}", "--loop",
                        "--headless", "--duration", "60", "--log-json", str(log))
    stop, answered, failed = threading.Event(), [[], []], [[], []]

    def stream(i):                                 # another client: a frame (and audio) after another
        client = load_backend(server=url, timeout_s=5.0)
        frame, wave = inputs(20 + i)
        state = client.run_audio(wave)
        while not stop.is_set():
            try:
                client.run_visual(frame, state)
                answered[i].append(time.monotonic())
            except ServerUnavailable as exc:
                failed[i].append(str(exc))
        client.close()
    others = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    try:
        for t in others:
            t.start()
        wait_for(lambda: sum(line["state"] != "no source (server unreachable)" for line in lines_of(log)) >= 5
                 and all(answered), 60, "the victim and the others to be answered")
        victim.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        assert victim.wait(10) == -signal.SIGKILL
        time.sleep(3.0)
    finally:
        stop.set()
        for t in others:
            t.join(15)
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
    assert failed == [[], []], failed
    for times in answered:                         # still served after the kill: a batch every 0.2-0.4 s
        assert sum(t > t_kill for t in times) >= 5, [round(t - t_kill, 2) for t in times]
    assert server["proc"].poll() is None
    fresh = load_backend(server=url)               # and a new client is served too
    assert fresh.run_audio(inputs(0)[1]) is not None
    fresh.close()


@needs_server
def test_sigkill_of_the_server_a_live_client_shows_it_unreachable_and_finalizes_its_recording(tmp_path):
    """`kill -9` of `jsa-rt serve` while a `jsa-rt live --server` process records a clip from it:
    the client carries on to the end of the clip with its frames in the 'server unreachable'
    state, says so in its one summary line, exits 0 with a finalized mp4; Triton goes with it."""
    clip, wav, out, log = tmp_path / "clip.mp4", tmp_path / "tone.wav", tmp_path / "out.mp4", tmp_path / "out.jsonl"
    write_red_square_clip(clip, frames=60, fps=15)
    write_tone_wav(wav, 4.0)
    base = prepare_graphs("edge-jsa")
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    server_log = tmp_path / "server.log"
    with open(server_log, "w") as sink:
        srv = subprocess.Popen([sys.executable, "-m", "jsa_rt.cli", "serve", "--model", str(base),
                                "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
                                "--metrics-port", str(ports["metrics"])], stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)
    client = None
    try:
        wait_for(lambda: "serve: ready" in server_log.read_text() or srv.poll() is not None, 90, "jsa-rt serve")
        assert srv.poll() is None, server_log.read_text()[-2000:]
        client = jsa_rt_cli("live", "--server", f"grpc://127.0.0.1:{ports['grpc']}", "--camera", str(clip),
                            "--mic", f"file://{wav}", "--headless", "--output", f"file://{out}", "--log-json", str(log))
        wait_for(lambda: len(lines_of(log)) >= 5 or client.poll() is not None, 60, "the client's first frames")
        srv.send_signal(signal.SIGKILL)                          # `jsa-rt serve` itself, as `kill -9 PID`
        srv.wait(10)
        stdout, stderr = client.communicate(timeout=60)
        # the orphaned tritonserver notices its parent is gone and exits: nothing of the server lingers
        wait_for(lambda: not session_alive(srv.pid), 30, "tritonserver to exit after its parent was killed")
    finally:
        for proc in (client, srv):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if session_alive(srv.pid):
            os.killpg(srv.pid, signal.SIGKILL)
    assert client.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    summary = [line for line in stdout.splitlines() if line.startswith("live: ") and " frames in " in line]
    assert len(summary) == 1 and "unanswered by the server (shown as 'server unreachable')" in summary[0], stdout
    states = [json.loads(line)["state"] for line in log.read_text().splitlines()]
    assert "no source (server unreachable)" in states and states[0] != "no source (server unreachable)", states
    assert f"wrote {out}" in summary[0] and f"play it: ffplay {out}" in summary[0]     # file:// is the file
    import cv2                                                   # finalized: it opens and plays
    video = cv2.VideoCapture(str(out))
    assert video.read()[0] and video.get(cv2.CAP_PROP_FRAME_COUNT) >= len(states)


def session_alive(sid: int) -> bool:
    """Whether any process of the session (process group) `sid` still runs."""
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    return True


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
