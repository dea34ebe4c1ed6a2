"""Ring buffer, timestamps, audio windows, resampling, and microphone errors (real PortAudio)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from jsa_rt.errors import DeviceError, InputError
from jsa_rt.live.audio import (AudioSource, AudioWindow, FileAudioSource, choose_rate, open_audio,
                               resolve_input_device, rms_dbfs)
from jsa_rt.live.ring import Overwritten, RingBuffer

from live_helpers import alsa_file_mic, run_python, write_tone_wav


# ---- ring buffer ------------------------------------------------------------------------------
def test_ring_wraps_around_and_keeps_order():
    ring = RingBuffer(capacity=1000, sample_rate=100)
    ramp = np.arange(3337, dtype=np.float32)
    for start in range(0, ramp.size, 97):            # blocks that do not divide the capacity
        ring.write(ramp[start:start + 97], t_end=0.0)
    assert ring.written == ramp.size
    lo = ring.oldest()
    assert lo == ramp.size - 1000 + ring.margin
    got = ring.read(lo, ramp.size)                    # crosses the physical end of the array
    np.testing.assert_array_equal(got, ramp[lo:])
    with pytest.raises(Overwritten):
        ring.read(lo - 1, ramp.size)
    padded = ring.read_padded(lo - 10, ramp.size + 5)  # too old and not yet written: silence
    np.testing.assert_array_equal(padded[:10], 0)
    np.testing.assert_array_equal(padded[10:10 + ramp.size - lo], ramp[lo:])
    np.testing.assert_array_equal(padded[-5:], 0)


def test_ring_reader_never_sees_torn_data_under_a_concurrent_writer():
    """A free-running writer against a reader: every read is either exact or refused.

    The writer runs until the reader has checked enough reads (no fixed amount of writing that a
    busy machine could finish before the reader is ever scheduled), so the count is reached on
    any load; the deadline only guards against a hang.
    """
    ring = RingBuffer(capacity=4096, sample_rate=16000)
    stop = threading.Event()
    wanted, deadline = 300, time.monotonic() + 120

    def writer():
        pos = 0
        while not stop.is_set():
            block = np.arange(pos, pos + 160, dtype=np.float64).astype(np.float32) % 65536
            ring.write(block, time.monotonic())
            pos += 160
            if pos % 16000 == 0:
                time.sleep(0)                       # let the reader in on a single core too

    t = threading.Thread(target=writer)
    t.start()
    checked = 0
    try:
        while checked < wanted and time.monotonic() < deadline:
            end = ring.written
            if end < 1000:
                continue
            try:
                got = ring.read(end - 1000, end)
            except Overwritten:
                continue
            expected = (np.arange(end - 1000, end, dtype=np.float64) % 65536).astype(np.float32)
            np.testing.assert_array_equal(got, expected)
            checked += 1
    finally:
        stop.set()
        t.join()
    assert checked == wanted


class _LappedDuringCopy(np.ndarray):
    """A read buffer whose first write lets the writer lap the reader mid-copy, deterministically."""
    ring = None

    def __setitem__(self, key, value):
        ring, type(self).ring = type(self).ring, None
        if ring is not None:                        # the writer runs between the reader's checks
            ring.write(np.full(ring.capacity, -1.0, np.float32), t_end=1.0)
        super().__setitem__(key, value)


def test_ring_read_window_slides_to_the_newest_audio_when_the_writer_laps_it():
    """A source faster than real time (the platform's ALSA file mic) or a stalled reader: the
    window the reader chose is overwritten before its copy. It gets the newest whole window,
    not a window whose lost part reads as silence (which `read_padded` would give)."""
    ring = RingBuffer(capacity=1000, sample_rate=100)
    ring.write(np.arange(1000, dtype=np.float32), t_end=0.0)
    real_read, laps = ring.read, []

    def lapped_once(start, stop, out=None):
        if not laps:                                # the writer runs between choice and copy
            laps.append(start)
            ring.write(np.full(900, -1.0, np.float32), t_end=1.0)
        return real_read(start, stop, out)

    ring.read = lapped_once
    got, end = ring.read_window(1000, 200)
    assert laps == [800] and end == ring.oldest() + 200 <= ring.written
    np.testing.assert_array_equal(got, np.full(200, -1.0, np.float32))
    # an intact window is read where asked; before the first sample it is silence
    ring.read = real_read
    got, end = ring.read_window(ring.written, 300)
    assert end == ring.written
    fresh = RingBuffer(capacity=1000, sample_rate=100)
    fresh.write(np.ones(50, np.float32), t_end=0.0)
    got, end = fresh.read_window(50, 200)
    assert end == 50 and not got[:150].any() and (got[150:] == 1.0).all()


def test_ring_read_detects_a_writer_that_laps_it_during_the_copy():
    ring = RingBuffer(capacity=1000, sample_rate=100)
    ring.write(np.arange(1000, dtype=np.float32), t_end=0.0)
    start = ring.oldest()
    _LappedDuringCopy.ring = ring
    out = np.zeros(1000, np.float32).view(_LappedDuringCopy)
    with pytest.raises(Overwritten):
        ring.read(start, 1000, out)
    # without the lap the same read is exact
    np.testing.assert_array_equal(ring.read(ring.oldest(), ring.written),
                                  np.full(ring.written - ring.oldest(), -1.0, np.float32))


def test_ring_maps_capture_times_to_sample_positions():
    rate = 1000.0
    ring = RingBuffer(capacity=10_000, sample_rate=rate)
    t0 = 50.0
    for k in range(1, 21):                           # 20 blocks of 100 samples, stamped exactly
        ring.write(np.zeros(100, np.float32), t_end=t0 + k * 0.1)
    # A block's stamp is the time of its last sample: position p was captured at t0 + p / rate.
    for t in (t0 + 0.35, t0 + 1.234, t0 + 1.999):
        assert ring.index_at(t) == round((t - t0) * rate)
        assert ring.time_at(ring.index_at(t)) == pytest.approx(t, abs=1.5 / rate)
    # after the newest stamp, positions extrapolate at the nominal rate
    assert ring.index_at(t0 + 2.5) == 2500


# ---- windows ------------------------------------------------------------------------------------
class ToneSource48k(AudioSource):
    """Stands in for a 48 kHz-only USB microphone: a 1 kHz tone, all of it available."""
    name, rate = "tone48k", 48000

    def __init__(self):
        self.wave = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(48000 * 3) / 48000)).astype(np.float32)

    def available(self):
        return self.wave.size

    def position_for(self, t_capture, t_media):
        return int(t_media * self.rate)

    def read(self, start, stop):
        out = np.zeros(stop - start, np.float32)
        lo, hi = max(0, start), min(stop, self.wave.size)
        out[lo - start:hi - start] = self.wave[lo:hi]
        return out


def test_window_resamples_a_48k_source_to_the_model_rate():
    win = AudioWindow(ToneSource48k(), model_rate=16000, num_samples=16000, window_seconds=1.0)
    chunk = win.read(t_capture=0.0, t_media=2.0)
    assert chunk.wave.shape == (16000,) and chunk.wave.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(chunk.wave))
    assert np.argmax(spectrum) == 1000                # 1 kHz at 16 kHz, 1 s window: bin 1000
    assert chunk.level_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2)


def test_file_window_follows_media_time_and_av_offset(tmp_path):
    rate = 16000
    wave = np.zeros(rate * 4, np.float32)
    wave[rate * 2:rate * 2 + 800] = 0.9                 # a click at exactly 2.0 s
    import soundfile as sf
    sf.write(tmp_path / "click.wav", wave, rate)
    src = FileAudioSource(f"file://{tmp_path / 'click.wav'}", rate, paced=False)
    win = AudioWindow(src, rate, num_samples=rate, window_seconds=1.0)
    before = win.read(0.0, t_media=1.99)
    after = win.read(0.0, t_media=2.3)
    assert before.level_db < -100 and np.abs(after.wave).max() > 0.8
    # the click sits 0.3 s before the window's end
    assert np.argmax(after.wave) == rate - int(0.3 * rate)
    # +100 ms offset: the sound of the frame at 1.95 s arrives by 2.05 s, so the click is in
    late = AudioWindow(src, rate, num_samples=rate, window_seconds=1.0, offset_ms=100).read(0.0, 1.95)
    assert np.abs(late.wave).max() > 0.8


def test_paced_file_audio_only_exposes_elapsed_samples(tmp_path):
    write_tone_wav(tmp_path / "tone.wav", 3.0)
    src = FileAudioSource(str(tmp_path / "tone.wav"), 16000, paced=True)
    src.start()
    time.sleep(0.2)
    n = src.available()
    assert 0.15 * 16000 <= n < 3.0 * 16000         # some, not all: it plays in real time


def test_a_short_window_is_tiled_and_a_long_one_keeps_the_newest_audio(tmp_path):
    rate = 16000
    ramp = np.linspace(-1, 1, rate * 4, dtype=np.float32)
    import soundfile as sf
    sf.write(tmp_path / "ramp.wav", ramp, rate, subtype="FLOAT")
    src = FileAudioSource(str(tmp_path / "ramp.wav"), rate, paced=False)
    long = AudioWindow(src, rate, num_samples=rate, window_seconds=2.0).read(0.0, 3.0)
    np.testing.assert_allclose(long.wave, ramp[2 * rate:3 * rate], atol=1e-6)
    short = AudioWindow(src, rate, num_samples=rate, window_seconds=0.25).read(0.0, 3.0)
    np.testing.assert_allclose(short.wave[:rate // 4], short.wave[rate // 4:rate // 2], atol=1e-6)


def test_rms_dbfs():
    assert rms_dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert rms_dbfs(np.zeros(100, np.float32)) == -120.0


# ---- devices ------------------------------------------------------------------------------------
class FakeSoundDevice:
    """sounddevice as seen with one USB mic that only does 48 kHz, mono (the default) or
    stereo-only (hardware we do not have)."""

    class default:
        device = [0, -1]

    def __init__(self, name: str = "USB Mic", channels: int = 1):
        self.name, self.channels = name, channels

    def query_devices(self, kind=None):
        dev = {"index": 0, "name": self.name, "max_input_channels": self.channels, "default_samplerate": 48000.0}
        return dev if kind == "input" else [dev]

    def check_input_settings(self, device=None, samplerate=None, channels=None, dtype=None):
        if samplerate not in (None, 48000):
            raise ValueError("Invalid sample rate")
        if channels is not None and channels != self.channels:
            raise ValueError("Invalid number of channels")


def test_a_48k_only_microphone_opens_at_48k():
    sd = FakeSoundDevice()
    dev = resolve_input_device("usb", sd)
    assert dev["name"] == "USB Mic"
    assert choose_rate(sd, dev, 16000, 1) == 48000


def test_missing_file_and_unknown_device_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_audio(f"file://{tmp_path}/nope.wav", 16000, 1.0)
    with pytest.raises(DeviceError, match="no microphone named like 'nonexistent'.*USB Mic"):
        resolve_input_device("nonexistent", FakeSoundDevice())
    with pytest.raises(DeviceError, match="no microphone with index 7"):
        resolve_input_device("7", FakeSoundDevice())


def test_real_portaudio_errors_list_what_is_available(tmp_path):
    """Real sounddevice/PortAudio in subprocesses: no device at all, then the file-backed ALSA mic."""
    raw = tmp_path / "in.raw"
    (np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tofile(raw)
    code = ("from jsa_rt.live.audio import MicSource\nfrom jsa_rt.errors import DeviceError\n"
            "try:\n    MicSource({spec!r}, 16000, 1.0)\nexcept DeviceError as e:\n    print('ERR', e)\n"
            "else:\n    print('OPENED')\n")
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    env = alsa_file_mic(tmp_path / "home", raw)
    out = run_python(code.format(spec="default"), env=dict(env, HOME=str(empty_home))).stdout.strip()
    assert out.startswith("ERR no default microphone") and "\n" not in out
    out = run_python(code.format(spec="no-such-mic"), env=env).stdout.strip()
    assert out.startswith("ERR no microphone named like") and "testmic" in out and "\n" not in out
    out = run_python(code.format(spec="testmic"), env=env).stdout.strip()
    assert out == "OPENED"


def test_missing_portaudio_library_is_a_one_line_error():
    # Without libportaudio2, `import sounddevice` raises OSError; simulate exactly that import failure.
    code = ("import sys\nclass NoPortAudio:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'sounddevice': raise OSError('PortAudio library not found')\n"
            "sys.meta_path.insert(0, NoPortAudio())\n"
            "from jsa_rt.live.audio import MicSource\nfrom jsa_rt.errors import DeviceError\n"
            "try:\n    MicSource('default', 16000, 1.0)\nexcept DeviceError as e:\n    print('ERR', e)\n")
    out = run_python(code).stdout.strip()
    assert out.startswith("ERR the PortAudio library is missing") and "libportaudio2" in out


def test_microphone_capture_through_the_file_backed_alsa_device(tmp_path):
    """Real PortAudio capture from `testmic`: the ring fills with the file's samples, stamped."""
    raw = tmp_path / "in.raw"
    tone = (0.25 * np.sin(2 * np.pi * 500 * np.arange(16000) / 16000) * 32767).astype("<i2")
    tone.tofile(raw)
    env = alsa_file_mic(tmp_path / "home", raw)
    code = (
        "import time, numpy as np\nfrom jsa_rt.live.audio import MicSource, AudioWindow\n"
        "m = MicSource('testmic', 16000, 1.0)\nm.start()\nt0 = time.monotonic()\n"
        "while m.ring.written < 32000 and time.monotonic() - t0 < 10: time.sleep(0.01)\n"
        "w = AudioWindow(m, 16000, 16000, 1.0).read(time.monotonic(), 0.0)\nm.stop()\n"
        "pos, times = m.ring.stamps()\n"
        "print(m.rate, m.ring.written >= 32000, bool(np.all(np.diff(times) >= 0)), round(w.level_db, 1),"
        " int(np.argmax(np.abs(np.fft.rfft(w.wave)))))\n")
    out = run_python(code, env=env).stdout.split()
    assert out[:3] == ["16000", "True", "True"]
    assert float(out[3]) == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.5)
    assert int(out[4]) == 500


def test_a_microphone_that_delivers_nothing_is_a_one_line_error(monkeypatch):
    """A stream that opens but never calls back (a muted or grabbed device): an error naming it,
    instead of a run that reports a silent room forever."""
    from jsa_rt.errors import DeviceError
    from jsa_rt.live import audio as audio_module

    class SilentStream:
        def start(self): ...
        def stop(self): ...
        def close(self): ...

    sd = FakeSoundDevice("Dead Mic")
    sd.InputStream = lambda **kw: SilentStream()
    monkeypatch.setattr(audio_module, "import_sounddevice", lambda: sd)
    mic = audio_module.MicSource("default", 16000, 1.0)
    mic.start()
    with pytest.raises(DeviceError, match=r"mic 'Dead Mic' delivered no audio in 0.2 s.*--mic") as err:
        mic.wait_started(0.2)
    assert "\n" not in str(err.value)
    mic.ring.write(np.zeros(10, np.float32), t_end=0.0)   # once a block arrived it returns at once
    mic.wait_started(0.0)


def test_a_stereo_only_microphone_records_both_channels(monkeypatch):
    """A capsule wired to the right channel only must not be silent: the channels are mixed."""
    from types import SimpleNamespace
    from jsa_rt.live import audio as audio_module
    monkeypatch.setattr(audio_module, "import_sounddevice", lambda: FakeSoundDevice("Stereo Mic", channels=2))
    mic = audio_module.MicSource("default", 16000, 1.0)
    assert mic.channels == 2
    tone = (0.5 * np.sin(np.arange(mic.blocksize) / 7)).astype(np.float32)
    right_only = np.stack([np.zeros_like(tone), tone], axis=1)
    info = SimpleNamespace(inputBufferAdcTime=0.0, currentTime=0.0)
    for _ in range(3):
        mic._callback(right_only, mic.blocksize, info, SimpleNamespace(input_overflow=False))
    got = mic.ring.read(mic.ring.written - mic.blocksize, mic.ring.written)
    np.testing.assert_allclose(got, 0.5 * tone, atol=1e-7)
