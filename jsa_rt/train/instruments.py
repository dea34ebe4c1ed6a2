"""Instrument sounds for the class map: SoundFont phrases and real drum hits (Debian packages).

- `fluid-soundfont-gm` + `fluidsynth` (MIT): sampled General MIDI instruments. A *phrase* is a
  few notes of one GM program, drawn deterministically from (program, index), written as a tiny
  MIDI file and rendered by the `fluidsynth` command line to a 16 kHz mono WAV in a cache folder
  ($JSA_SOUNDFONT_CACHE, else $XDG_CACHE_HOME/jsa-rt/soundfont, else ~/.cache/jsa-rt/soundfont).
  Phrases already in the cache need neither fluidsynth nor the SoundFont: a machine without them
  (a lent GPU machine) uses a packed cache (tools/pack_device_data.sh writes them as Ogg Opus).
  Each phrase is one source (`soundfont:<program>:<index>`), so the split puts whole phrases in
  train, val or test. All phrases of a program play the same samples: a held-out phrase is a new
  melody, not a new instrument.
- `hydrogen-drumkits` (licence per kit in /usr/share/doc/hydrogen-drumkits/copyright: mostly
  GPL-2/GPL-2+, some CC BY(-SA) 3.0 and CC0): real drum one-shots, one folder per kit. A kit is
  one source (`hydrogen:<kit folder>`): a test kit is never heard in training.

Absent tools or files are reported by `missing_line` and give no recordings; nothing fails.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

RATE = 16000
PHRASE_VERSION = 1                    # in the cache file names: bump when phrase() changes
PHRASES = 24                          # per GM program: enough sources for a train/val/test split
TICKS = 480                           # MIDI ticks per quarter note
# Where Debian installs them; JSA_SOUNDFONT / JSA_DRUMKITS point elsewhere (another GM SoundFont)
SF2 = Path(os.environ.get("JSA_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
DRUMKITS = Path(os.environ.get("JSA_DRUMKITS", "/usr/share/hydrogen/data/drumkits"))
DRUM_SUFFIXES = (".wav", ".flac", ".aiff", ".aif", ".ogg")   # .ogg: a packed kit
SLOT_S = 7.0                          # batch render: one phrase (<= 4 s) + its release tail per slot

# Playable MIDI pitch range per GM program (lowest, highest), roughly the real instrument's
# comfortable range, so a cello phrase does not squeak and a tuba phrase does not whistle.
PITCH_RANGE = {
    0: (45, 84), 1: (45, 84),                         # acoustic grand, bright piano
    21: (53, 81),                                     # accordion
    24: (43, 76), 25: (43, 76),                       # nylon / steel acoustic guitar
    26: (45, 79), 27: (45, 79), 28: (40, 72), 29: (40, 72), 30: (40, 76),   # electric guitars
    40: (55, 91), 42: (36, 69),                       # violin, cello
    57: (40, 70), 58: (28, 55),                       # trombone, tuba
    64: (56, 84), 65: (49, 79), 66: (44, 74), 67: (36, 67),   # soprano..baritone sax
    70: (34, 67),                                     # bassoon
    105: (48, 76),                                    # banjo
}
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)


def cache_dir() -> Path:
    if os.environ.get("JSA_SOUNDFONT_CACHE"):
        return Path(os.environ["JSA_SOUNDFONT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jsa-rt" / "soundfont"


# ---- MIDI ---------------------------------------------------------------------------------------
def _varlen(n: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_bytes(notes: list[tuple[int, int, int, int]], program: int, tempo_bpm: float,
               end: int = 0) -> bytes:
    """A format-0 standard MIDI file: one track, channel 0, `program`; notes are
    (start tick, length in ticks, pitch, velocity) at TICKS per quarter note. The track ends at
    tick `end` if that is after the last note-off (a player stops at the end of the track)."""
    events = []                                       # (tick, order, bytes): note-offs before note-ons
    for start, length, pitch, velocity in notes:
        events.append((start, 1, bytes((0x90, pitch, velocity))))
        events.append((start + length, 0, bytes((0x80, pitch, 0))))
    tempo = round(60_000_000 / tempo_bpm)             # microseconds per quarter note
    track = b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big") + b"\x00" + bytes((0xC0, program))
    now = 0
    for tick, _, data in sorted(events):
        track += _varlen(tick - now) + data
        now = tick
    track += _varlen(max(0, end - now)) + b"\xff\x2f\x00"   # end of track
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS)
            + b"MTrk" + struct.pack(">I", len(track)) + track)


def phrase(program: int, index: int) -> tuple[list[tuple[int, int, int, int]], float]:
    """A short melody (2-4 s) for `program`, the same on every machine: a walk on a major or minor
    scale within the instrument's range, notes of 1/2-2 beats, some rests. Returns (notes, bpm)."""
    rng = np.random.default_rng([program, index])
    lo, hi = PITCH_RANGE.get(program, (48, 79))
    bpm = float(rng.uniform(70, 140))
    length = rng.uniform(2.0, 4.0) * bpm / 60 * TICKS         # target length in ticks
    scale = MAJOR if rng.random() < 0.6 else MINOR
    root = int(rng.integers(lo, max(lo + 1, hi - 12)))
    pitches = [root + 12 * octave + step for octave in range(-3, 5) for step in scale]
    pitches = [p for p in pitches if lo <= p <= hi]
    at = int(rng.integers(len(pitches) // 2))
    notes, tick = [], 0
    while tick < length:
        beats = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
        if notes and tick + TICKS // 2 < length and rng.random() < 0.12:   # a rest, never the end
            tick += int(0.5 * TICKS)
            continue
        at = int(np.clip(at + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), 0, len(pitches) - 1))
        dur = max(TICKS // 4, min(int(beats * TICKS), int(length) - tick))   # the last note ends on time
        notes.append((tick, int(dur * 0.9), pitches[at], int(rng.integers(60, 111))))
        tick += dur
    return notes, bpm


def phrase_seconds(notes, bpm: float) -> float:
    return max(s + n for s, n, _, _ in notes) / TICKS * 60 / bpm


# ---- rendering ----------------------------------------------------------------------------------
def phrase_path(program: int, index: int, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"gm{program:03d}_{index:03d}_v{PHRASE_VERSION}.wav"


def cached_phrase(program: int, index: int, cache: Path | None = None) -> Path | None:
    """The phrase's file in the cache, if there: the WAV rendered here, or the Ogg of the same name
    in a packed cache (tools/pack_device_data.sh: a tenth of the bytes)."""
    wav = phrase_path(program, index, cache)
    return next((p for p in (wav, wav.with_suffix(".ogg")) if p.is_file()), None)


def all_cached(program: int, indices, cache: Path | None = None) -> bool:
    return all(cached_phrase(program, i, cache) for i in indices)


def render_phrases(program: int, indices, cache: Path | None = None) -> list[Path]:
    """The files of `indices` of `program`: from the cache, rendering (to WAV) only the ones not
    there, which needs fluidsynth and the SoundFont. The missing ones are rendered in one
    fluidsynth run (loading the SoundFont takes longer than a phrase), each in its own SLOT_S slot
    of one MIDI file, then cut apart: reverb and chorus are off, so nothing rings from one slot
    into the next."""
    found = [cached_phrase(program, i, cache) for i in indices]
    paths = [p or phrase_path(program, i, cache) for i, p in zip(indices, found)]
    todo = [(i, p) for i, p, f in zip(indices, paths, found) if f is None]
    if not todo:
        return paths
    import soundfile as sf
    from ..atomic import atomic_path
    slot = round(SLOT_S * 120 / 60 * TICKS)          # the batch file runs at 120 bpm
    notes, lengths = [], []
    for k, (i, _) in enumerate(todo):                # each phrase rescaled to 120 bpm in its slot
        own, bpm = phrase(program, i)
        scale = 120 / bpm
        notes += [(k * slot + round(s * scale), max(1, round(n * scale)), p, v) for s, n, p, v in own]
        lengths.append(phrase_seconds(own, bpm))
    with tempfile.TemporaryDirectory(prefix="jsa-sf-") as tmp:
        mid, wav = Path(tmp) / "batch.mid", Path(tmp) / "batch.wav"
        mid.write_bytes(midi_bytes(notes, program, 120.0, end=len(todo) * slot))   # the last tail too
        subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(RATE),
                        "-T", "wav", "-O", "s16", "-F", str(wav), str(SF2), str(mid)],
                       check=True, capture_output=True, timeout=600)
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    from ..audio_io import resample, to_mono
    audio = resample(to_mono(audio), rate, RATE)     # fluidsynth writes stereo (at RATE, as asked)
    for k, ((_, path), seconds) in enumerate(zip(todo, lengths)):
        start = int(k * SLOT_S * RATE)
        piece = audio[start:start + int((seconds + 1.0) * RATE)]   # + 1 s of release tail
        with atomic_path(path) as tmp_path:
            sf.write(str(tmp_path), piece, RATE, subtype="PCM_16", format="WAV")
    return paths


# ---- what is installed --------------------------------------------------------------------------
def render_tools_missing() -> list[str]:
    """What rendering a phrase needs and is not installed."""
    absent = []
    if shutil.which("fluidsynth") is None:
        absent.append("fluidsynth")
    if not SF2.is_file():
        absent.append(f"soundfont {SF2} (fluid-soundfont-gm)")
    return absent


def soundfont_ready() -> bool:
    """Whether phrases not in the cache can be rendered here."""
    return not render_tools_missing()


def drum_kits() -> dict[str, list[Path]]:
    """Kit folder name -> its one-shot files (kits without audio files are left out)."""
    if not DRUMKITS.is_dir():
        return {}
    kits = {}
    for kit in sorted(p for p in DRUMKITS.iterdir() if p.is_dir()):
        files = sorted(f for f in kit.rglob("*") if f.suffix.lower() in DRUM_SUFFIXES)
        if files:
            kits[kit.name] = files
    return kits


def missing_line(programs) -> str | None:
    """One line naming what is absent (the catalog's `missing`), or None when all is there.
    fluidsynth and the SoundFont are named only when a phrase of `programs` (GM programs, PHRASES
    each) is not in the cache, i.e. would have to be rendered."""
    absent = []
    if not all(all_cached(program, range(PHRASES)) for program in programs):
        absent += render_tools_missing()
    if not drum_kits():
        absent.append(f"hydrogen drumkits {DRUMKITS} (hydrogen-drumkits)")
    return "instruments: no " + ", no ".join(absent) if absent else None
