"""Instrument classes of the class map (instruments.py): the MIDI writer, fluidsynth rendering and
its cache, the split of phrases and drum kits, and the one-line report when the tools are absent.

Rendering tests skip when fluidsynth or the SoundFont is not installed (Debian: fluidsynth,
fluid-soundfont-gm; tools/setup.sh installs them); they render two phrases into tmp_path."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jsa_rt.train import classmap, instruments
from jsa_rt.train.classmap import ClassSources, build_real_catalog, split_of

needs_fluidsynth = pytest.mark.skipif(
    not instruments.soundfont_ready(),
    reason=f"needs the fluidsynth command and {instruments.SF2} (apt-get install fluidsynth fluid-soundfont-gm)")


# ---- MIDI ---------------------------------------------------------------------------------------
def _read_varlen(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[at]
        at += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at


def _events(track: bytes) -> list[tuple[int, bytes]]:
    """(absolute tick, event bytes) of a track written by midi_bytes (no running status)."""
    out, at, tick = [], 0, 0
    while at < len(track):
        delta, at = _read_varlen(track, at)
        tick += delta
        status = track[at]
        if status == 0xFF:                                   # meta: FF type len data
            size = track[at + 2]
            out.append((tick, track[at:at + 3 + size]))
            at += 3 + size
        else:
            size = 2 if status & 0xF0 == 0xC0 else 3
            out.append((tick, track[at:at + size]))
            at += size
    return out


def test_varlen_matches_the_midi_specification_examples():
    # the examples table of the Standard MIDI File specification
    for value, encoded in [(0, "00"), (0x40, "40"), (0x7F, "7F"), (0x80, "8100"), (0x2000, "C000"),
                           (0x3FFF, "FF7F"), (0x4000, "818000"), (0x100000, "C08000"),
                           (0x1FFFFF, "FFFF7F"), (0x200000, "81808000"), (0x0FFFFFFF, "FFFFFF7F")]:
        assert instruments._varlen(value) == bytes.fromhex(encoded), hex(value)


def test_midi_file_header_track_length_and_events():
    notes = [(0, 400, 60, 100), (480, 200, 64, 80), (480, 960, 67, 70), (1500, 100, 72, 127)]
    data = instruments.midi_bytes(notes, program=42, tempo_bpm=100.0)
    assert data[:4] == b"MThd" and int.from_bytes(data[4:8], "big") == 6
    fmt, tracks, division = (int.from_bytes(data[i:i + 2], "big") for i in (8, 10, 12))
    assert (fmt, tracks, division) == (0, 1, instruments.TICKS)
    assert data[14:18] == b"MTrk"
    length = int.from_bytes(data[18:22], "big")
    assert length == len(data) - 22                          # the track is the rest of the file
    track = data[22:]
    events = _events(track)
    assert events[-1][1] == b"\xff\x2f\x00" and track.endswith(b"\x00\xff\x2f\x00")
    tempo = next(e for _, e in events if e[:2] == b"\xff\x51")
    assert int.from_bytes(tempo[3:6], "big") == 600_000      # 100 bpm
    assert (0, b"\xc0\x2a") in events                        # program 42 on channel 0
    ons = [(t, e[1], e[2]) for t, e in events if e[0] == 0x90]
    offs = [(t, e[1]) for t, e in events if e[0] == 0x80]
    assert sorted(ons) == sorted((s, p, v) for s, _, p, v in notes)
    assert sorted(offs) == sorted((s + n, p) for s, n, p, _ in notes)
    ticks = [t for t, _ in events]
    assert ticks == sorted(ticks)                            # deltas are never negative


def test_phrases_are_deterministic_in_range_and_2_to_4_seconds():
    for program in (0, 21, 40, 58, 105):
        lo, hi = instruments.PITCH_RANGE[program]
        seen = set()
        for index in range(6):
            notes, bpm = instruments.phrase(program, index)
            assert (notes, bpm) == instruments.phrase(program, index)
            assert len(notes) >= 2 and all(lo <= p <= hi and 1 <= v <= 127 for _, _, p, v in notes)
            assert 1.8 <= instruments.phrase_seconds(notes, bpm) <= 4.2, (program, index)
            seen.add(tuple(notes))
        assert len(seen) == 6                                # every index is another melody


# ---- rendering and the cache ----------------------------------------------------------------------
@needs_fluidsynth
def test_render_gives_non_silent_16k_mono_and_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JSA_SOUNDFONT_CACHE", str(tmp_path / "cache"))
    paths = instruments.render_phrases(40, [0, 3])
    assert [p.parent for p in paths] == [tmp_path / "cache"] * 2
    waves = []
    for path, index in zip(paths, (0, 3)):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "WAV")
        wave, _ = sf.read(str(path), dtype="float32")
        seconds = instruments.phrase_seconds(*instruments.phrase(40, index)) + 1.0   # + release tail
        assert len(wave) == pytest.approx(seconds * 16000, abs=2)
        assert 20 * np.log10(np.sqrt(np.mean(wave ** 2))) > -45           # a violin playing, not silence
        assert np.abs(wave).max() < 1.0                                   # and not clipped
        waves.append(wave)
    assert not np.array_equal(waves[0][:16000], waves[1][:16000])
    stamps = [p.stat().st_mtime_ns for p in paths]

    def no_fluidsynth(*args, **kwargs):                      # fake: a second run must not render
        raise AssertionError("rendered again although the phrase is in the cache")
    monkeypatch.setattr(subprocess, "run", no_fluidsynth)
    assert instruments.render_phrases(40, [0, 3]) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps


# ---- the catalog: split by source, and what is missing --------------------------------------------
INSTRUMENT_MAP = (ClassSources("piano", caltech=("grand_piano",), soundfont=(0, 1)),
                  ClassSources("drums", tux=("drumkit",), drumkits=True))


def _fake_kits(root: Path, kits: int = 14, hits: int = 3) -> Path:
    """A stand-in for /usr/share/hydrogen/data/drumkits: `kits` folders of short WAV hits."""
    for k in range(kits):
        for h in range(hits):
            path = root / f"Kit {k:02d}" / f"hit_{h}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), np.zeros(800, np.float32), 16000)
        (root / f"Kit {k:02d}" / "drumkit.xml").write_text("<drumkit_info/>")
    (root / "empty kit").mkdir()                            # a folder without audio is no kit
    return root


def test_instrument_recordings_split_disjointly_by_phrase_and_kit(tmp_path, monkeypatch):
    monkeypatch.setattr(classmap, "CLASS_MAP", INSTRUMENT_MAP)
    monkeypatch.setattr(instruments, "DRUMKITS", _fake_kits(tmp_path / "kits"))
    # fake renderer: the split is what is tested here, not fluidsynth (tested above)
    monkeypatch.setattr(instruments, "soundfont_ready", lambda: True)
    monkeypatch.setattr(instruments, "render_phrases",
                        lambda program, indices: [tmp_path / f"gm{program}_{i}.wav" for i in indices])
    cat = build_real_catalog(tmp_path / "data")
    assert not any(m.startswith("instruments:") for m in cat.missing), cat.missing
    piano, drums = cat.classes["piano"].recordings, cat.classes["drums"].recordings
    assert {r.source for r in piano} == {f"soundfont:{p}:{i}" for p in (0, 1) for i in range(instruments.PHRASES)}
    assert len({r.path for r in piano}) == len(piano) == 2 * instruments.PHRASES
    assert all(r.split == split_of(r.source) for r in piano)          # the plain stable hash
    assert {r.split for r in piano} == set(classmap.REAL_SPLITS)
    # every hit of a kit in its kit's split: a test kit is never heard in training
    kit_split: dict[str, set[str]] = {}
    for r in drums:
        assert r.source == "hydrogen:" + Path(r.path).parent.name
        kit_split.setdefault(r.source, set()).add(r.split)
    assert len(kit_split) == 14 and all(len(s) == 1 for s in kit_split.values())
    assert {s for (s,) in kit_split.values()} == set(classmap.REAL_SPLITS)
    assert len(drums) == 14 * 3 and not any(r.path.endswith(".xml") for r in drums)


@needs_fluidsynth
def test_real_kits_and_rendered_phrases_never_share_a_split(tmp_path, monkeypatch):
    if not instruments.drum_kits():
        pytest.skip(f"needs the hydrogen drum kits in {instruments.DRUMKITS} (apt-get install hydrogen-drumkits)")
    monkeypatch.setenv("JSA_SOUNDFONT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(instruments, "PHRASES", 3)          # render only a few phrases here
    monkeypatch.setattr(classmap, "CLASS_MAP", (ClassSources("violin", soundfont=(40,)),
                                                ClassSources("drums", drumkits=True)))
    cat = build_real_catalog(tmp_path / "data")
    violin, drums = cat.classes["violin"].recordings, cat.classes["drums"].recordings
    assert len(violin) == 3 and all(Path(r.path).is_file() and Path(r.path).parent == tmp_path / "cache" for r in violin)
    by_source: dict[str, set[str]] = {}
    for r in violin + drums:
        by_source.setdefault(r.source, set()).add(r.split)
    assert all(len(s) == 1 for s in by_source.values()), by_source
    assert len({r.source for r in drums}) >= 10 and {r.split for r in drums} == set(classmap.REAL_SPLITS)


def test_absent_tools_are_one_missing_line_and_no_recordings(tmp_path, monkeypatch):
    monkeypatch.setattr(classmap, "CLASS_MAP", INSTRUMENT_MAP)
    monkeypatch.setenv("JSA_SOUNDFONT_CACHE", str(tmp_path / "empty cache"))   # nothing rendered yet
    # fake absence: no fluidsynth on PATH, no SoundFont file, no drum kit folder
    monkeypatch.setattr(instruments.shutil, "which", lambda name: None)
    monkeypatch.setattr(instruments, "SF2", tmp_path / "absent" / "FluidR3_GM.sf2")
    monkeypatch.setattr(instruments, "DRUMKITS", tmp_path / "absent" / "drumkits")
    cat = build_real_catalog(tmp_path / "data")
    lines = [m for m in cat.missing if m.startswith("instruments:")]
    assert len(lines) == 1
    assert all(word in lines[0] for word in ("fluidsynth", "soundfont", "hydrogen")), lines[0]
    assert cat.classes["piano"].recordings == [] and cat.classes["drums"].recordings == []

    # only the kits there: the line names just what is still absent
    monkeypatch.setattr(instruments, "DRUMKITS", _fake_kits(tmp_path / "kits"))
    line = instruments.missing_line((0, 1))
    assert "fluidsynth" in line and "hydrogen" not in line
    assert build_real_catalog(tmp_path / "data").classes["drums"].recordings


def test_a_failing_fluidsynth_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(classmap, "CLASS_MAP", INSTRUMENT_MAP[:1])
    monkeypatch.setattr(instruments, "soundfont_ready", lambda: True)

    def broken(program, indices):                            # fake: fluidsynth exits with an error
        raise subprocess.CalledProcessError(1, ["fluidsynth"])
    monkeypatch.setattr(instruments, "render_phrases", broken)
    cat = build_real_catalog(tmp_path / "data")
    assert "instruments: fluidsynth failed on GM program 0 (CalledProcessError)" in cat.missing
    assert cat.classes["piano"].recordings == []


def test_an_unwritable_cache_is_reported_not_raised(tmp_path, monkeypatch):
    if not instruments.soundfont_ready():
        pytest.skip("needs fluidsynth and the SoundFont to reach the cache")
    blocker = tmp_path / "a file"                             # the cache "folder" is a file
    blocker.write_text("")
    monkeypatch.setenv("JSA_SOUNDFONT_CACHE", str(blocker))
    monkeypatch.setattr(instruments, "PHRASES", 1)
    monkeypatch.setattr(classmap, "CLASS_MAP", INSTRUMENT_MAP[:1])
    cat = build_real_catalog(tmp_path / "data")
    assert f"instruments: cannot write {blocker} (InputError)" in cat.missing, cat.missing
    assert cat.classes["piano"].recordings == []


# ---- a packed cache: no fluidsynth, no SoundFont ---------------------------------------------------
def _hide_fluidsynth(tmp_path, monkeypatch):
    """Fake absence of the renderer: no fluidsynth on PATH, no SoundFont, and any run of a program
    fails the test (nothing may be rendered)."""
    monkeypatch.setattr(instruments.shutil, "which", lambda name: None)
    monkeypatch.setattr(instruments, "SF2", tmp_path / "absent" / "FluidR3_GM.sf2")

    def fake_run_must_not_happen(*args, **kwargs):
        raise AssertionError(f"ran {args[0] if args else kwargs}: a phrase was rendered")
    monkeypatch.setattr(subprocess, "run", fake_run_must_not_happen)


def _packed_cache(cache: Path, programs=(0, 1), phrases: int = 2) -> dict[str, str]:
    """Every phrase of `programs`, as the pack script leaves them (Ogg Opus under the WAV's name)
    except the first of each, a WAV as rendered here. Returns source -> path."""
    cache.mkdir(parents=True)
    wave = (0.1 * np.sin(np.arange(8000) * 0.1)).astype(np.float32)
    out = {}
    for program in programs:
        for index in range(phrases):
            path = instruments.phrase_path(program, index, cache)
            if index:
                path = path.with_suffix(".ogg")
                sf.write(str(path), wave, 16000, format="OGG", subtype="OPUS")
            else:
                sf.write(str(path), wave, 16000, subtype="PCM_16")
            out[f"soundfont:{program}:{index}"] = str(path)
    return out


def _two_piano_programs_cached(tmp_path, monkeypatch) -> dict:
    """A class map of the instrument classes, fake drum kits, 2 phrases per program, and a cache
    holding every phrase of programs 0 and 1; returns source -> path."""
    monkeypatch.setattr(classmap, "CLASS_MAP", INSTRUMENT_MAP)
    monkeypatch.setattr(instruments, "DRUMKITS", _fake_kits(tmp_path / "kits"))
    monkeypatch.setattr(instruments, "PHRASES", 2)
    monkeypatch.setenv("JSA_SOUNDFONT_CACHE", str(tmp_path / "cache"))
    expected = _packed_cache(tmp_path / "cache")
    return expected


def test_cached_phrases_need_neither_fluidsynth_nor_the_soundfont(tmp_path, monkeypatch):
    expected = _two_piano_programs_cached(tmp_path, monkeypatch)
    _hide_fluidsynth(tmp_path, monkeypatch)
    assert not instruments.soundfont_ready()
    assert instruments.missing_line((0, 1)) is None
    cat = build_real_catalog(tmp_path / "data")
    assert not any(m.startswith("instruments:") for m in cat.missing), cat.missing
    piano = cat.classes["piano"].recordings
    assert {r.source: r.path for r in piano} == expected and len(piano) == 4
    assert sum(r.path.endswith(".ogg") for r in piano) == 2                 # the packed form is used
    assert sf.read(piano[-1].path)[0].shape == (8000,)


def test_a_phrase_not_in_the_cache_without_fluidsynth_names_it(tmp_path, monkeypatch):
    expected = _two_piano_programs_cached(tmp_path, monkeypatch)
    Path(expected.pop("soundfont:1:1")).unlink()                              # one phrase of program 1 gone
    _hide_fluidsynth(tmp_path, monkeypatch)
    cat = build_real_catalog(tmp_path / "data")
    lines = [m for m in cat.missing if m.startswith("instruments:")]
    assert len(lines) == 1 and "fluidsynth" in lines[0] and "soundfont" in lines[0], cat.missing
    assert "hydrogen" not in lines[0]
    # program 0, whole in the cache, still plays; program 1 gives nothing rather than half
    assert {r.source: r.path for r in cat.classes["piano"].recordings} == {
        k: v for k, v in expected.items() if k.startswith("soundfont:0:")}
    assert instruments.missing_line((0,)) is None


def test_ogg_drum_hits_are_found(tmp_path, monkeypatch):
    kit = tmp_path / "kits" / "Packed Kit"
    (kit / "sub").mkdir(parents=True)
    for name in ("kick.ogg", "sub/Snare.OGG"):
        sf.write(str(kit / name), np.zeros(1600, np.float32), 16000, format="OGG", subtype="OPUS")
    (kit / "drumkit.xml").write_text("<drumkit_info/>")
    monkeypatch.setattr(instruments, "DRUMKITS", tmp_path / "kits")
    assert instruments.drum_kits() == {"Packed Kit": [kit / "kick.ogg", kit / "sub/Snare.OGG"]}
    monkeypatch.setattr(classmap, "CLASS_MAP", INSTRUMENT_MAP[1:])
    drums = build_real_catalog(tmp_path / "data").classes["drums"].recordings
    assert sorted(r.path for r in drums) == [str(kit / "kick.ogg"), str(kit / "sub/Snare.OGG")]
    assert {r.source for r in drums} == {"hydrogen:Packed Kit"}
