"""`jsa-rt calibrate-gate`: the no-source gate chosen on val and stored in the checkpoint."""
import csv

import numpy as np
import pytest

from jsa_rt.cli import main
from jsa_rt.errors import InputError
from jsa_rt.train.gate import MIN_NO_SOURCE, choose_gate


def test_the_gate_is_the_lowest_threshold_within_the_false_alarm_budget():
    rng = np.random.default_rng(0)
    sourced, empty = rng.uniform(0.3, 0.9, 200), rng.uniform(0.0, 0.4, 40)
    gate = choose_gate(np.r_[sourced, empty], np.r_[np.zeros(200, bool), np.ones(40, bool)], 0.1)
    assert gate["false_alarm"] <= 0.1 and np.mean(empty >= gate["threshold"]) <= 0.1
    # one notch lower lets more than 10 % of the empty scenes through
    lower = np.sort(empty)[np.sum(empty < gate["threshold"]) - 1]
    assert np.mean(empty >= lower) > 0.1
    assert gate["detection"] == pytest.approx(np.mean(sourced >= gate["threshold"]))


def test_a_confidence_that_does_not_separate_gets_gate_zero():
    rng = np.random.default_rng(1)
    c = rng.uniform(0.0, 0.1, 240)                         # both kinds drawn alike
    gate = choose_gate(c, np.r_[np.zeros(200, bool), np.ones(40, bool)], 0.15)
    assert gate["threshold"] == 0.0 and "does not separate" in gate["reason"]


def test_too_few_scenes_without_a_source_are_refused():
    with pytest.raises(InputError, match=f"at least {MIN_NO_SOURCE}"):
        choose_gate([0.5] * 20 + [0.1] * 3, [False] * 20 + [True] * 3, 0.15)


def test_the_command_stores_the_gate_in_the_checkpoint(tmp_path, capsys):
    from jsa_rt.model import random_model
    from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, random_model("tiny"), half=True)
    rows = [{"id": f"s{i}", "ciou": "0.5", "confidence": str(0.5 + i / 100), "no_source": "False"} for i in range(30)]
    rows += [{"id": f"n{i}", "ciou": "", "confidence": str(0.1 + i / 100), "no_source": "True"} for i in range(20)]
    with open(tmp_path / "val.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "gated.pt"
    assert main(["calibrate-gate", "--checkpoint", str(ckpt), "--csv", str(tmp_path / "val.csv"),
                 "--false-alarm", "0.1", "--out", str(out)]) == 0
    model, meta = load_checkpoint(out)
    # 0.1 .. 0.29 without a source: at most 2 of 20 may pass, so the gate sits just above 0.27
    assert model.cfg.no_source_confidence == pytest.approx(0.27, abs=1e-6)
    assert meta["extra"]["no_source_gate"]["detection"] == 1.0
    assert "next: jsa-rt live --checkpoint" in capsys.readouterr().out
    import torch
    assert all(v.dtype == torch.float16 for v in torch.load(out, weights_only=True)["state_dict"].values()
               if v.is_floating_point())                  # the fp16 storage is kept
    # bad input: a CSV from elsewhere is one line, exit 2
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main(["calibrate-gate", "--checkpoint", str(ckpt), "--csv", str(tmp_path / "other.csv"),
                 "--out", str(out)]) == 2
