"""The per-frame step shared by `live` and SoundLocator: the audio branch's refresh grid, and
the audio window read only when a refresh is due."""
import numpy as np
import pytest

from jsa_rt.live.audio import AudioChunk
from jsa_rt.live.step import FrameStep, RefreshGrid

from live_helpers import FakeBackend


def refreshes(grid: RefreshGrid, clocks) -> list[float]:
    done = []
    for c in clocks:
        if grid.due(c):
            grid.mark(c)
            done.append(c)
    return done


def test_the_grid_keeps_its_period_whatever_the_frame_times():
    # frames every 0.1 s: refreshes at 0, 0.3 (first >= 0.25), 0.5, 0.8, 1.0 -> mean period 0.25
    clocks = [round(0.1 * i, 1) for i in range(11)]
    assert refreshes(RefreshGrid(0.25), clocks) == [0.0, 0.3, 0.5, 0.8, 1.0]


def test_the_grid_restarts_on_a_loop_and_after_a_stall():
    grid = RefreshGrid(0.25)
    assert refreshes(grid, [0.0, 0.1, 0.3]) == [0.0, 0.3]
    assert refreshes(grid, [0.05]) == [0.05]            # the clock went back: a looping file
    assert refreshes(grid, [0.2, 0.3, 1.9]) == [0.3, 1.9]   # 0.3 is on the grid; 1.9 re-anchors
    assert grid.next == pytest.approx(2.15)
    assert refreshes(RefreshGrid(0.0), [0.0, 0.0, 0.1]) == [0.0, 0.0, 0.1]   # hop 0: every call


def test_the_audio_window_is_read_only_when_a_refresh_is_due():
    backend = FakeBackend()
    step = FrameStep(backend, audio_hop=0.25)
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[40:80, 60:100, 2] = 230                          # a red square (BGR)
    reads = []

    def read_audio():
        reads.append(True)
        wave = (0.3 * np.sin(np.arange(backend.config.num_samples) / 5)).astype(np.float32)
        return AudioChunk(wave, -13.5, 0)

    results = [step.run(frame, 0.1 * i, read_audio) for i in range(6)]
    assert len(reads) == step.audio_refreshes == backend.audio_calls == 3      # at 0.0, 0.3, 0.5
    assert backend.visual_calls == 6
    # the audio state's age on the audio clock: 0 on a refresh
    assert [r.audio_age_s == 0.0 for r in results] == [True, False, False, True, False, True]
    assert results[2].audio_age_s == pytest.approx(0.2) and results[4].audio_age_s == pytest.approx(0.1)
    assert all(r.level_db == -13.5 and r.confidence == 1.0 and not r.active for r in results)   # not gated yet
    assert set(results[0].stages_ms) == {"preprocess", "audio", "visual"}
