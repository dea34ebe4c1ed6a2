"""tools/live_follow.py: live follow over demo clips, two models paired by seed, from the score
files `jsa-rt demo` writes (hand-made here, with known rates)."""
import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "live_follow.py"
spec = importlib.util.spec_from_file_location("live_follow", TOOL)
live_follow = importlib.util.module_from_spec(spec)
spec.loader.exec_module(live_follow)


def score(follow: float, chance: float = 0.5, switches=(5, 6)) -> dict:
    """The fields of a demo's score.json that the tool reads."""
    return {"follow_rate": follow, "follow_chance": chance, "switches_followed": switches[0], "switches": switches[1]}


def write_runs(folder: Path, rates: dict[int, float], layout: str = "dirs") -> None:
    for seed, rate in rates.items():
        path = folder / f"seed{seed}" / "score.json" if layout == "dirs" else folder / f"X-seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(score(rate)))


def test_clips_are_paired_by_seed_with_the_mean_difference_and_its_interval(tmp_path, capsys):
    write_runs(tmp_path / "a", {0: 0.9, 1: 0.8, 2: 0.7, 3: 1.0, 9: 0.1})     # seed 9 has no partner
    write_runs(tmp_path / "b", {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.6})
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    assert live_follow.main([str(tmp_path / "a"), str(tmp_path / "b"), "--names", "new", "old",
                             "--json", str(out_json), "--png", str(out_png)]) == 0
    s = json.loads(out_json.read_text())
    assert s["seeds"] == [0, 1, 2, 3] and s["unpaired"] == [9]
    assert s["new"]["mean"] == 85.0 and s["old"]["mean"] == 60.0 and s["chance"] == 50.0
    assert s["diff_mean"] == 25.0 and s["diff_ci95"][0] <= 25.0 <= s["diff_ci95"][1]
    assert s["diff_ci95"][0] > 0                                   # better or equal on every clip: above 0
    assert s["better_clips"] == {"new": 3, "old": 0} and s["new"]["switches"] == [20, 24]
    assert out_png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "new - old = +25.0" in printed and "significant" in printed and "seeds [9]" in printed


def test_a_glob_picks_one_model_out_of_a_shared_folder(tmp_path):
    shared = tmp_path / "demo"
    write_runs(shared, {0: 0.9, 1: 0.7}, layout="files")                  # X-seed<N>.json
    (shared / "Y-seed0.json").write_text(json.dumps(score(0.1)))        # another model, same folder
    assert live_follow.read_clips(str(shared / "X-seed*.json")) == {0: score(0.9), 1: score(0.7)}
    s = live_follow.compare(live_follow.read_clips(str(shared / "X-seed*.json")),
                            live_follow.read_clips(str(shared / "Y-seed*.json")), ("x", "y"))
    assert s["seeds"] == [0] and s["diff_mean"] == 80.0


@pytest.mark.parametrize("case", ["missing", "empty", "disjoint"])
def test_bad_input_is_one_line_naming_the_fix(tmp_path, capsys, case):
    write_runs(tmp_path / "a", {0: 0.9})
    other = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "disjoint": tmp_path / "b"}[case]
    if case == "empty":
        other.mkdir()
    if case == "disjoint":
        write_runs(other, {5: 0.5})
    assert live_follow.main([str(tmp_path / "a"), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert ("run the same clips" in err) if case == "disjoint" else ("jsa-rt demo --seed N" in err)
