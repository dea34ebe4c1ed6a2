"""The `triton` backend: inference on a `jsa-rt serve` server (Triton Inference Server) over gRPC or HTTP.

    backend = TritonClientBackend("grpc://127.0.0.1:8001")       # or http://host:8000
    state = backend.run_audio(wave)                              # the same interface as onnxruntime
    maps = backend.run_visual(frame_rgb224, state)

The audio state stays here and goes to the server with every frame, so the server keeps nothing
per stream. Every call has a timeout: a server that is down or slow raises ServerUnavailable (one
line) instead of hanging, and for a back-off time after a failure (0.5 s doubling to 8 s) calls
fail at once without touching the network; the first call after it tries a fresh connection.
Never imports torch.
"""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np

from ..config import ModelConfig
from ..errors import EngineError, InputError
from .base import Backend

AUDIO_OUTPUTS = ("audio_query", "audio_slot")
VISUAL_OUTPUTS = ("heatmap", "aud", "img", "image_slot", "confidence")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
BACKOFF_S = (0.5, 8.0)                   # first wait after a failure, longest wait


class ServerUnavailable(EngineError):
    """The server did not answer in time (down, unreachable, overloaded)."""


def parse_server_url(url: str) -> tuple[str, str]:
    """'grpc://host:port' / 'http://host:port' -> (protocol, 'host:port'); a default port if none."""
    parsed = urlparse(str(url))
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname or port == -1 or parsed.path not in ("", "/"):
        raise InputError(f"server {url!r}: use grpc://HOST:PORT or http://HOST:PORT (a `jsa-rt serve` "
                         f"server; default ports 8001 and 8000)")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return parsed.scheme, f"{host}:{port or DEFAULT_PORTS[parsed.scheme]}"


class TritonClientBackend(Backend):
    name = "triton"

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.protocol, self.address = parse_server_url(url)
        self.url = f"{self.protocol}://{self.address}"
        if not timeout_s > 0:
            raise InputError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except ImportError:
            raise EngineError(f"the {self.protocol} Triton client is not installed: pip install "
                              f"'tritonclient[grpc,http]'") from None
        self.tc = tc
        # tritonclient.http runs on gevent, whose connections belong to the thread that opened them
        # (another thread gets "Cannot switch to a different thread"): one client per calling thread
        # there; the gRPC client is thread-safe and shared
        self._clients = SimpleNamespace() if self.protocol == "grpc" else threading.local()
        self._wait = 0.0                      # current back-off, s (0: healthy)
        self._retry_at = 0.0
        self._why = ""
        info = json.loads(self._infer("jsa_info", {"want": np.zeros(1, np.int32)}, ("info",))["info"][0])
        self.config = ModelConfig.from_dict(info["config"])
        self.model_name, self.max_batch = info.get("model_name", "?"), info.get("max_batch")
        self.device = self.url

    # ---- the Backend interface (batch-1 arrays in, dict of arrays out) ---------------------------
    def _run_audio(self, wave):
        return self._infer("jsa_audio", {"wave": wave}, AUDIO_OUTPUTS)

    def _run_visual(self, frame, state):
        out = self._infer("jsa_visual", {"frame": frame, **state}, VISUAL_OUTPUTS)
        out["confidence"] = out["confidence"].reshape(-1)     # the server sends (B, 1)
        out["audio_slot"] = state["audio_slot"]               # the graph's echo of its input stays local
        return out

    def _run_full(self, frame, wave):
        return self._run_visual(frame, self._run_audio(wave))

    def describe(self) -> str:
        return f"triton ({self.model_name} on {self.url}, timeout {self.timeout_s:g} s)"

    def close(self):
        """Close the connection (this thread's, for HTTP)."""
        client, self._clients.client = getattr(self._clients, "client", None), None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    # ---- one request --------------------------------------------------------------------------
    def _connect(self):
        client = getattr(self._clients, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self.tc.InferenceServerClient(self.address)
            else:
                client = self.tc.InferenceServerClient(self.address, connection_timeout=self.timeout_s,
                                                       network_timeout=self.timeout_s)
            self._clients.client = client
        return client

    def _infer(self, model: str, feeds: dict, outputs) -> dict:
        now = time.monotonic()
        if now < self._retry_at:              # backing off: fail fast, no network
            raise ServerUnavailable(f"Triton server {self.url} unreachable ({self._why}); next try in "
                                    f"{self._retry_at - now:.1f} s; is `jsa-rt serve` running?")
        try:
            client = self._connect()
            inputs = []
            for name, array in feeds.items():
                array = np.ascontiguousarray(array)
                tensor = self.tc.InferInput(name, list(array.shape), self.tc.np_to_triton_dtype(array.dtype))
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            if self.protocol == "grpc":
                wanted = [self.tc.InferRequestedOutput(n) for n in outputs]
                result = client.infer(model, inputs, outputs=wanted, client_timeout=self.timeout_s)
            else:
                wanted = [self.tc.InferRequestedOutput(n, binary_data=True) for n in outputs]
                result = client.infer(model, inputs, outputs=wanted)
            out = {n: result.as_numpy(n) for n in outputs}
        except Exception as exc:              # refused, timed out, reset, server error: all one line
            self.close()                      # the next try starts a fresh connection
            text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
            self._why = (text or type(exc).__name__).strip().splitlines()[0][:160]
            self._wait = min(BACKOFF_S[1], self._wait * 2) if self._wait else BACKOFF_S[0]
            self._retry_at = time.monotonic() + self._wait
            raise ServerUnavailable(f"Triton server {self.url}: {model} failed ({self._why}; timeout "
                                    f"{self.timeout_s:g} s); is `jsa-rt serve` running?") from None
        self._wait, self._retry_at = 0.0, 0.0
        return out
