"""Audio sources for the live loop: a microphone (sounddevice) or a wav/ogg file paced in real time.

`--mic` accepts `default`, a device index, a name substring, or `file://clip.wav` (or a path;
a video file gives its soundtrack).
Every source exposes the same small interface in absolute sample positions at its native rate:
`available()` (samples that exist now), `position_for(frame)` (the sample that matches a video
frame), `read(start, stop)`; `AudioWindow` turns that into the model's input window.

The microphone callback only copies into a preallocated `RingBuffer`, stamps the block's capture
time and counts overflows. Resampling (USB mics often run only at 48 kHz) happens in the reader.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio_io import fit_length, load_audio, resample
from ..errors import DeviceError, InputError
from .ring import RingBuffer
from .video import VIDEO_SUFFIXES

LEVEL_WINDOW_S = 0.5          # the level meter and the no-source gate look at the last half second
SILENCE_DB = -120.0           # what digital silence reads as (instead of -inf)
MIC_START_TIMEOUT_S = 5.0     # a microphone that delivers nothing for this long is an error
RECORD_SECONDS = 20.0         # ring capacity beyond the model window: room for the recorder to drain
COMMON_RATES = (16000, 22050, 32000, 44100, 48000, 8000)


def rms_dbfs(wave: np.ndarray) -> float:
    """RMS level in dB relative to a full-scale square wave (0 dBFS = RMS 1.0)."""
    if wave.size == 0:
        return SILENCE_DB
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return max(SILENCE_DB, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DB


AUDIO_FILE_SUFFIXES = (".wav", ".ogg", ".flac", ".mp3", ".m4a", ".aac", ".opus",
                       *VIDEO_SUFFIXES)                                      # videos: their soundtrack


def is_file_uri(spec: str) -> bool:
    return spec.startswith("file://") or Path(spec).suffix.lower() in AUDIO_FILE_SUFFIXES


# ---- sounddevice / PortAudio ----------------------------------------------------------------------
def import_sounddevice():
    """`import sounddevice`, turning a missing PortAudio or package into one line with the fix."""
    try:
        import sounddevice
    except OSError:
        raise DeviceError("the PortAudio library is missing (sounddevice needs it): "
                          "sudo apt install libportaudio2, or use --mic file://clip.wav") from None
    except ImportError:
        raise DeviceError("microphone capture needs sounddevice: pip install sounddevice "
                          "(or use --mic file://clip.wav)") from None
    return sounddevice


def input_devices(sd) -> list[dict]:
    """Every device with input channels, as sounddevice describes it (index, name, rates...)."""
    try:
        devices = sd.query_devices()
    except Exception:
        return []
    return [dict(d) for d in devices if d.get("max_input_channels", 0) > 0]


def describe_inputs(sd) -> str:
    found = input_devices(sd)
    if not found:
        return "no input devices found (plug in a microphone, or use --mic file://clip.wav)"
    return "available: " + "; ".join(f"{d['index']} '{d['name']}' ({d['max_input_channels']} ch, "
                                      f"{int(d['default_samplerate'])} Hz)" for d in found)


def resolve_input_device(spec: str, sd) -> dict:
    """`default`, an index or a name substring -> sounddevice's device dict; one-line errors."""
    spec = spec.strip()
    if spec in ("", "default"):
        try:
            return dict(sd.query_devices(kind="input"))
        except Exception:      # PortAudioError('Error querying device -1'): no default input
            raise DeviceError(f"no default microphone; {describe_inputs(sd)}") from None
    inputs = input_devices(sd)
    if spec.lstrip("-").isdigit():
        index = int(spec)
        for d in inputs:
            if d["index"] == index:
                return d
        raise DeviceError(f"no microphone with index {index}; {describe_inputs(sd)}")
    matches = [d for d in inputs if spec.lower() in d["name"].lower()]
    exact = [d for d in matches if d["name"].lower() == spec.lower()]
    if exact or matches:
        return (exact or matches)[0]
    raise DeviceError(f"no microphone named like {spec!r}; {describe_inputs(sd)}")


def supported_rates(sd, index: int, channels: int) -> list[int]:
    ok = []
    for rate in COMMON_RATES:
        try:
            sd.check_input_settings(device=index, samplerate=rate, channels=channels, dtype="float32")
            ok.append(rate)
        except Exception:
            pass
    return ok


def choose_rate(sd, device: dict, wanted: int, channels: int) -> int:
    """The model's rate when the device does it, else the device's own (we resample)."""
    for rate in (wanted, int(device["default_samplerate"]), 48000, 44100):
        try:
            sd.check_input_settings(device=device["index"], samplerate=rate, channels=channels,
                                    dtype="float32")
            return rate
        except Exception:
            continue
    rates = supported_rates(sd, device["index"], channels)
    raise DeviceError(f"microphone '{device['name']}' accepts none of {wanted}/48000/44100 Hz with "
                      f"{channels} channel(s); it reports {rates or 'no standard rate'}: pick another --mic")


# ---- sources ----------------------------------------------------------------------------------------
class AudioSource:
    """Interface shared by the microphone and file sources (positions at the native rate)."""
    name: str = "audio"
    rate: int = 16000
    overflows: int = 0
    nonfinite: int = 0        # NaN / inf samples received and zeroed (a file with any is refused)

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def wait_started(self, timeout: float) -> None:
        """Return once the first audio has arrived (a file has it from the start)."""

    def available(self) -> int:
        raise NotImplementedError

    def oldest(self) -> int:
        """The oldest position still readable (a ring buffer forgets; a file does not)."""
        return -(1 << 62)

    def position_for(self, t_capture: float, t_media: float) -> int:
        """The sample position captured together with a video frame."""
        raise NotImplementedError

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop); silence where none exist (before the start, or overwritten)."""
        raise NotImplementedError

    def read_window(self, stop: int, n: int) -> tuple[np.ndarray, int]:
        """The `n` samples ending at `stop`, and that end (a ring buffer may slide it forward)."""
        return self.read(stop - n, stop), stop


class RingAudioSource(AudioSource):
    """An audio source whose samples live in a RingBuffer (`self.ring`), written by a device
    callback or by the caller; subclasses say only which sample a capture time maps to."""

    ring: RingBuffer

    @property
    def nonfinite(self) -> int:
        return self.ring.nonfinite

    def available(self) -> int:
        return self.ring.written

    def oldest(self) -> int:
        return self.ring.oldest()

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.ring.read_padded(start, stop)

    def read_window(self, stop: int, n: int) -> tuple[np.ndarray, int]:
        return self.ring.read_window(stop, n)


class MicSource(RingAudioSource):
    def __init__(self, spec: str, model_rate: int, window_seconds: float):
        self.sd = sd = import_sounddevice()
        self.device = resolve_input_device(spec, sd)
        self.name = f"mic '{self.device['name']}'"
        self.channels = 1 if self._mono_ok() else min(2, int(self.device["max_input_channels"]))
        self.rate = choose_rate(sd, self.device, model_rate, self.channels)
        self._mix = np.zeros(max(1, self.rate // 50) * 8, np.float32)   # preallocated: the callback never allocates
        capacity = int(self.rate * (window_seconds + RECORD_SECONDS))
        self.ring = RingBuffer(capacity, self.rate)
        self.blocksize = max(1, self.rate // 50)          # 20 ms blocks
        self.overflows = 0
        self._stream = None

    def _mono_ok(self) -> bool:
        try:
            self.sd.check_input_settings(device=self.device["index"], channels=1, dtype="float32")
            return True
        except Exception:
            return False

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: copy, stamp, count. No buffers allocated, no logging, no locks.
        if status.input_overflow:
            self.overflows += 1
        now = time.monotonic()
        adc = time_info.inputBufferAdcTime
        # The block's first sample was captured (currentTime - adc) ago; its last one frames/rate later.
        t_end = now - (time_info.currentTime - adc) + frames / self.rate if adc > 0 else now
        if self.channels == 1:
            block = indata[:, 0]
        else:   # both channels: a stereo mic may carry its capsule on either side
            block = self._mix[:frames] if frames <= self._mix.size else np.empty(frames, np.float32)
            np.add(indata[:, 0], indata[:, 1], out=block)
            block *= 0.5
        self.ring.write(block, min(t_end, now))

    def start(self) -> None:
        try:
            self._stream = self.sd.InputStream(
                device=self.device["index"], samplerate=self.rate, channels=self.channels,
                dtype="float32", blocksize=self.blocksize, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            raise DeviceError(f"cannot open {self.name} at {self.rate} Hz: {exc} (busy or no "
                              f"permission? add yourself to the 'audio' group); {describe_inputs(self.sd)}") from None

    def wait_started(self, timeout: float) -> None:
        # Frames that ran before the first block would read pure silence ("quiet"), and a mic
        # that never delivers would look like a silent room forever: both are worth knowing.
        deadline = time.monotonic() + timeout
        while self.ring.written == 0:
            if time.monotonic() > deadline:
                raise DeviceError(f"{self.name} delivered no audio in {timeout:g} s (muted, or held by "
                                  f"another program?); check it with `arecord -l`, or pick another --mic")
            time.sleep(0.005)

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:
                pass
            self._stream = None

    def position_for(self, t_capture: float, t_media: float) -> int:
        return self.ring.index_at(t_capture)


class FileAudioSource(AudioSource):
    """An audio file (or a video's soundtrack) standing in for a microphone.

    Paced: only the samples whose time has come (since `start()`) are available, like a mic.
    Not paced (`paced=False`): everything is available at once and frames pick their window by
    media time, which makes a run over files reproducible.
    """

    def __init__(self, spec: str, rate: int, loop: bool = False, paced: bool = True):
        path = Path(spec[len("file://"):] if spec.startswith("file://") else spec)
        if not path.is_file():
            raise InputError(f"audio file not found: {path} (check the --mic path)")
        try:
            self.wave = load_audio(path, rate)
        except InputError as exc:
            raise InputError(f"{exc}; choose the sound with --mic (default, a device index, or "
                             f"file://sound.wav)") from None
        self.name = f"file {path.name}"
        self.path = path
        self.rate = rate
        self.speed = 1.0          # paced playback speed (a video file played faster or slower)
        self.loop = loop
        self.paced = paced
        self.overflows = 0
        self._t0 = None

    def start(self) -> None:
        self._t0 = time.monotonic()

    def fit_duration(self, seconds: float) -> None:
        """Trim or pad (silence) the sound to exactly `seconds`: a video's own soundtrack then
        loops with its picture (AAC tracks run a few tens of ms longer)."""
        n = int(round(seconds * self.rate))
        self.wave = self.wave[:n] if self.wave.size >= n else np.pad(self.wave, (0, n - self.wave.size))

    def available(self) -> int:
        total = self.wave.size
        if not self.paced:
            return 1 << 62 if self.loop else total
        elapsed = int((time.monotonic() - (self._t0 or time.monotonic())) * self.rate * self.speed)
        return elapsed if self.loop else min(elapsed, total)

    def position_for(self, t_capture: float, t_media: float) -> int:
        return int(round(t_media * self.rate))

    def read(self, start: int, stop: int) -> np.ndarray:
        n = max(0, stop - start)
        if not self.loop:
            out = np.zeros(n, np.float32)
            lo, hi = max(start, 0), min(stop, self.wave.size)
            if hi > lo:
                out[lo - start:hi - start] = self.wave[lo:hi]
            return out
        idx = np.arange(start, stop) % self.wave.size
        out = self.wave[idx]
        out[np.arange(start, stop) < 0] = 0.0
        return out


def open_audio(spec: str, model_rate: int, window_seconds: float, loop: bool = False,
               paced: bool = True) -> AudioSource:
    if is_file_uri(spec):
        return FileAudioSource(spec, model_rate, loop=loop, paced=paced)
    return MicSource(spec, model_rate, window_seconds)


# ---- the model's window --------------------------------------------------------------------------
@dataclass
class AudioChunk:
    wave: np.ndarray          # (num_samples,) float32 at the model rate
    level_db: float           # RMS of the newest LEVEL_WINDOW_S seconds
    end_position: int         # native-rate position of the window's last sample


class AudioWindow:
    """Reads the `window_seconds` of audio ending at a frame's time, as the model wants it."""

    def __init__(self, source: AudioSource, model_rate: int, num_samples: int,
                 window_seconds: float, offset_ms: float = 0.0):
        self.source = source
        self.model_rate = model_rate
        self.num_samples = num_samples
        self.window = max(1, int(round(window_seconds * source.rate)))
        self.offset_s = offset_ms / 1000.0

    def recording_position(self, t_capture: float, t_media: float) -> int:
        """The sample captured with a frame, as far as it exists yet (native rate, absolute):
        where a recording's sound track stands at that frame."""
        # Positive --av-offset-ms: the sound of a frame arrives that much later than its picture.
        end = self.source.position_for(t_capture + self.offset_s, t_media + self.offset_s)
        return min(end, self.source.available())

    def position(self, t_capture: float, t_media: float) -> int:
        """The end of the model's window for a frame: `recording_position`, except that audio
        already overwritten (the reader stalled) gives the freshest whole window instead."""
        end = self.source.position_for(t_capture + self.offset_s, t_media + self.offset_s)
        end = max(end, self.source.oldest() + self.window)
        return min(end, self.source.available())

    def read(self, t_capture: float, t_media: float) -> AudioChunk:
        native, end = self.source.read_window(self.position(t_capture, t_media), self.window)
        level_n = min(native.size, int(LEVEL_WINDOW_S * self.source.rate))
        level = rms_dbfs(native[native.size - level_n:])
        wave = resample(native, self.source.rate, self.model_rate)
        # A window longer than the model's keeps its newest part; a shorter one is tiled.
        wave = wave[-self.num_samples:] if wave.size > self.num_samples else fit_length(wave, self.num_samples)
        return AudioChunk(wave, level, end)
