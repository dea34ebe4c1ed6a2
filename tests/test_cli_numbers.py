"""Numeric flags: `nan` / `inf` are refused in one line before anything runs; too many --threads warn."""
import argparse

import pytest

from jsa_rt.args import non_negative_float, positive_float, positive_int, unit_interval
from jsa_rt.cli import main


@pytest.mark.parametrize("parse, text", [(positive_float, "nan"), (positive_float, "inf"),
                                         (non_negative_float, "NaN"), (unit_interval, "nan"),
                                         (non_negative_float, "-inf")])
def test_the_shared_number_types_refuse_nan_and_inf(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"got {text}; use a number"):
        parse(text)
    assert positive_float("0.5") == 0.5 and positive_int("3") == 3


@pytest.mark.parametrize("argv, flag", [
    (["live", "--audio-hop", "nan"], "--audio-hop"),
    (["live", "--min-level-db", "nan"], "--min-level-db"),
    (["localize", "--image", "x.png", "--audio", "x.wav", "--out", "x.npz", "--alpha", "nan"], "--alpha"),
    (["eval", "--data", "d", "--json", "r.json", "--alpha", "nan"], "--alpha")])
def test_nan_in_a_plain_float_flag_is_one_line_before_running(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"error: {flag} nan is not a number: give a number"), err
    assert list(tmp_path.iterdir()) == []


def test_more_threads_than_cores_warns(capsys, tmp_path, monkeypatch):
    import os
    monkeypatch.chdir(tmp_path)
    cores = len(os.sched_getaffinity(0))
    assert main(["live", "--threads", str(cores + 64), "--audio-hop", "nan"]) == 2
    err = capsys.readouterr().err
    assert f"warning: --threads {cores + 64} is more than the {cores} CPU cores" in err
    assert main(["live", "--threads", "1", "--audio-hop", "nan"]) == 2
    assert "warning" not in capsys.readouterr().err
