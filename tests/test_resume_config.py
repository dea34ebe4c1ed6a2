"""`train --resume` and `--config` are checked (issue 16.10): a resume cannot change the model's
shape (one line naming the run's preset/model), other changed settings warn once each and say
which value is used, and impossible numbers in a --config are one-line errors."""
import argparse
import json
from pathlib import Path

import pytest
import torch

from jsa_rt.cli import main
from jsa_rt.config import TRAIN_PRESETS, ModelConfig, TrainConfig, get_preset
from jsa_rt.errors import InputError
from jsa_rt.train import trainer


def stored_run(folder, preset="tiny", kind="jsa", **train):
    folder.mkdir(exist_ok=True)
    torch.save({"kind": kind, "config": get_preset(preset).to_dict(),
                "train_config": {**TRAIN_PRESETS[preset].to_dict(), **train}}, folder / "last.pt")
    return folder


def resolve(*argv):
    parser = argparse.ArgumentParser()
    trainer.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "unused", *argv])
    return (*trainer.resolve_configs(args), args)


def one_line_error(capsys, *argv) -> str:
    assert main(["train", "--data", "unused", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flag, value", [("--preset", "edge"), ("--model", "ezvsl")])
def test_resume_with_another_preset_or_model_is_one_line_naming_the_runs(tmp_path, capsys, flag, value):
    run = stored_run(tmp_path / "run", preset="tiny", kind="jsa")
    err = one_line_error(capsys, "--out", str(run), "--resume", flag, value)
    assert "tiny jsa run" in err and f"{flag} {value}" in err, err


def test_resume_takes_the_runs_own_settings_and_refuses_a_changed_shape(tmp_path, capsys):
    run = stored_run(tmp_path / "run", preset="tiny", kind="ezvsl", epochs=5, batch_size=4)
    model_cfg, train_cfg, args = resolve("--out", str(run), "--resume")         # no --preset / --model
    assert model_cfg == get_preset("tiny") and args.model == "ezvsl"
    assert (train_cfg.epochs, train_cfg.batch_size) == (5, 4)                    # not the preset's 2 and 8
    assert capsys.readouterr().err == ""                                         # nothing changed: no warning
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"dim": 64}}))
    with pytest.raises(InputError, match=r"has model dim 32 and .*c.json \(model.dim\) sets 64"):
        resolve("--out", str(run), "--resume", "--config", str(config))


def test_resume_warns_once_per_changed_schedule_setting_and_uses_the_new_value(tmp_path, capsys):
    run = stored_run(tmp_path / "run", preset="tiny", epochs=2)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train": {"weight_decay": 0.5}}))
    _, train_cfg, _ = resolve("--out", str(run), "--resume", "--epochs", "6", "--lr", "0.01",
                              "--config", str(config))
    assert (train_cfg.epochs, train_cfg.lr, train_cfg.weight_decay) == (6, 0.01, 0.5)
    err = sorted(capsys.readouterr().err.strip().splitlines(), key=lambda line: line.split(" sets ")[1])
    assert len(err) == 3, err
    assert "warning: --resume: --epochs sets epochs 6, the run's is 2; using 6" in err[0]
    assert "--lr sets lr 0.01" in err[1] and "using 0.01" in err[1]
    assert "c.json (train.weight_decay) sets weight_decay 0.5" in err[2] and "using 0.5" in err[2]


@pytest.mark.parametrize("settings, needle", [
    ({"train": {"batch_size": 0}}, "batch_size must be a whole number >= 1, got 0"),
    ({"model": {"dim": -5}}, "dim must be a whole number >= 1, got -5"),
    ({"train": {"lr": -1e-3}}, "lr must be a finite number >= 0"),
    ({"model": {"token_mask_prob": 1.5}}, "token_mask_prob must be a finite number in [0, 1]"),
    ({"model": {"dim": "big"}}, "dim must be a whole number"),
    ({"train": {"amp": "yes"}}, "amp must be true or false"),
])
def test_impossible_config_numbers_are_one_line_errors(tmp_path, capsys, settings, needle):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(settings))
    err = one_line_error(capsys, "--preset", "tiny", "--out", str(tmp_path / "run"), "--config", str(config))
    assert str(config) in err and needle in err, err
    assert not (tmp_path / "run").exists()


def test_config_classes_check_their_numbers():
    with pytest.raises(ValueError, match="num_slots"):
        get_preset("tiny").with_overrides(num_slots=1)
    with pytest.raises(ValueError, match="gamma"):
        get_preset("tiny").with_overrides(gamma=float("nan"))
    with pytest.raises(ValueError, match="multiple of image_stride"):
        get_preset("tiny").with_overrides(image_size=100)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    assert ModelConfig.from_dict(get_preset("edge").to_dict()) == get_preset("edge")


@pytest.mark.parametrize("recipe", sorted((Path(__file__).resolve().parents[1] / "tools" / "recipes").glob("*.json")),
                         ids=lambda p: p.name)
def test_every_training_recipe_is_accepted_and_applied(recipe):
    """tools/recipes/*.json are read by tools/gpu_train.sh on a lent GPU: a misspelt setting must
    fail here, not there. Each of their settings lands in the resolved configs."""
    model_cfg, train_cfg, _ = resolve("--preset", "edge", "--config", str(recipe))
    settings = json.loads(recipe.read_text())
    for key, value in settings.get("model", {}).items():
        assert getattr(model_cfg, key) == value, key
    for key, value in settings.get("train", {}).items():
        assert getattr(train_cfg, key) == value, key


def test_the_frozen_encoder_recipe_keeps_the_learning_rate_that_learns():
    """At 5e-4 Adam collapses the frozen-feature scores within ~20 steps (benchmarks/
    listening_cpu-2core-x86_64/frozen-lr/): the recipe must not lose its lr 1e-4."""
    root = Path(__file__).resolve().parents[1]
    _, train_cfg, _ = resolve("--preset", "edge", "--config", str(root / "tools/recipes/soundnet-frozen.json"))
    assert train_cfg.lr <= 1e-4 < TRAIN_PRESETS["edge"].lr
