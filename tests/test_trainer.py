"""Training on `tiny`: the loss goes down, --resume is exact, two-process DDP (gloo) runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jsa_rt.cli import main

DATA = Path(os.environ.get("JSA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "tuxpaint-stamps").is_dir(),
                                reason=f"needs the real data folder {DATA} (set JSA_DATA)")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    assert main(["make-scenes", "--out", str(out), "--small", "--seed", "3", "--quiet",
                 "--workers", "1", "--seconds", "1.5"]) == 0
    return out


def train(scenes, out, *extra):
    args = ["train", "--preset", "tiny", "--data", str(scenes), "--out", str(out), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--val-split", "", *extra]
    assert main(args) == 0


def read_log(out):
    rows = (Path(out) / "log.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    return [dict(zip(header, map(float, r.split(",")))) for r in rows[1:]]


def test_training_lowers_the_loss(scenes, tmp_path):
    # the same 8 items every step: a model that learns must fit them
    train(scenes, tmp_path, "--epochs", "30", "--max-train-items", "8", "--lr", "3e-3")
    losses = [r["loss"] for r in read_log(tmp_path)]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    # still going down, not noise: each third of the run below the one before (means of ten steps,
    # as single steps of a batch of 8 can tick up)
    thirds = [sum(losses[i:i + 10]) / 10 for i in (0, 10, 20)]
    assert thirds[2] < thirds[1] < thirds[0], (thirds, losses)
    ckpt = torch.load(tmp_path / "final.pt", weights_only=True)
    assert ckpt["format"] == "jsa-rt" and ckpt["kind"] == "jsa"


def test_resume_reproduces_the_same_state(scenes, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(scenes, straight, "--epochs", "2", "--max-steps", "4")
    train(scenes, resumed, "--epochs", "2", "--max-steps", "2")      # stops mid-epoch 1
    first = torch.load(resumed / "last.pt", weights_only=True)
    assert first["train_state"]["step"] == 2
    train(scenes, resumed, "--epochs", "2", "--max-steps", "4", "--resume")
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["train_state"]["step"] == b["train_state"]["step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=0, msg=key)
    # the two halves of the log are the straight run's log
    assert [r["loss"] for r in read_log(straight)] == [r["loss"] for r in read_log(resumed)]


def test_resume_without_checkpoint_is_a_clear_error(scenes, tmp_path, capsys):
    args = ["train", "--preset", "tiny", "--data", str(scenes), "--out", str(tmp_path), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]


def test_bad_settings_are_one_line_errors(scenes, tmp_path, capsys):
    base = ["train", "--data", str(scenes), "--out", str(tmp_path / "run"), "--workers", "0",
            "--no-progress", "--val-split", ""]
    for flag, value in (("--preset", "huge"), ("--batch-size", "0"), ("--epochs", "-1"), ("--device", "tpu")):
        with pytest.raises(SystemExit) as stop:             # argparse: a usage line and the reason
            main([*base, flag, value])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"argument {flag}" in err and "Traceback" not in err, err

    def one_line_error(*args, needle):
        assert main([*base, "--preset", "tiny", "--batch-size", "8", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err

    config = tmp_path / "config.json"
    for text, needle in (('{"train": {"bogus": 1}}', "unknown train setting(s) bogus"),
                         ('{"model": {"dimm": 8}}', "unknown model setting(s) dimm"),
                         ('[1, 2]', "must be a JSON object")):
        config.write_text(text)
        one_line_error("--config", str(config), needle=needle)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "last.pt").write_bytes(b"PK\x03\x04 cut off here")
    one_line_error("--out", str(broken), "--resume", needle="corrupt or truncated")
    if not torch.cuda.is_available():
        one_line_error("--device", "cuda", needle="use --device cpu")


def test_paper_preset_without_its_imagenet_weights_stops_before_training(scenes, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JSA_RESNET18_WEIGHTS", str(tmp_path / "absent.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub"))
    args = ["train", "--preset", "paper", "--data", str(scenes), "--out", str(tmp_path / "run"),
            "--workers", "0", "--no-progress", "--max-steps", "1", "--batch-size", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "JSA_RESNET18_WEIGHTS" in err[0] and "--no-pretrained" in err[0], err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_ezvsl_baseline_trains(scenes, tmp_path):
    train(scenes, tmp_path, "--model", "ezvsl", "--epochs", "1", "--max-steps", "2")
    ckpt = torch.load(tmp_path / "final.pt", weights_only=True)
    assert ckpt["kind"] == "ezvsl"


def test_two_process_gloo_ddp(scenes, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "jsa_rt.cli", "train", "--preset", "tiny", "--data", str(scenes), "--out", str(tmp_path),
           "--workers", "0", "--batch-size", "4", "--epochs", "1", "--max-steps", "2", "--device", "cpu",
           "--no-progress", "--val-split", ""]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["train_state"]["step"] == 2
    # rank 0 writes the files
    assert (tmp_path / "final.pt").is_file()


def test_init_fine_tunes_from_a_checkpoint(scenes, tmp_path, capsys):
    base = tmp_path / "base"
    train(scenes, base, "--epochs", "1", "--max-steps", "2")
    start = torch.load(base / "final.pt", weights_only=True)["state_dict"]
    # lr 0: one step later the weights are still exactly the checkpoint's (AdamW's decay is lr-scaled;
    # BatchNorm's running statistics do move in a training step, so they are left out)
    tuned = tmp_path / "tuned"
    args = ["train", "--init", str(base / "final.pt"), "--data", str(scenes), "--out", str(tuned),
            "--workers", "0", "--batch-size", "8", "--no-progress", "--val-split", "", "--epochs", "1",
            "--max-steps", "1", "--lr", "0"]
    assert main(args) == 0
    assert "starting from the weights of" in capsys.readouterr().out
    ckpt = torch.load(tuned / "final.pt", weights_only=True)
    assert ckpt["config"]["preset"] == "tiny" and ckpt["kind"] == "jsa"        # taken from the checkpoint
    weights = [k for k in start if "running_" not in k and "num_batches_tracked" not in k]
    assert len(weights) > 20
    for key in weights:
        torch.testing.assert_close(ckpt["state_dict"][key], start[key], rtol=0, atol=0, msg=key)
    # a preset or model kind that contradicts the checkpoint is a one-line error
    assert main([*args[:3], "--preset", "edge", *args[3:]]) == 2
    assert main([*args[:3], "--model", "ezvsl", *args[3:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "is a tiny model, not edge" in err[0] and "is a jsa model, not ezvsl" in err[1]


def test_resume_is_exact_with_loader_workers_and_logs_each_step_once(scenes, tmp_path):
    """Augmentation is a function of (seed, epoch, sample), so worker processes do not change it."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(scenes, straight, "--epochs", "2", "--max-steps", "4", "--workers", "2")
    train(scenes, resumed, "--epochs", "2", "--max-steps", "2", "--workers", "2")
    train(scenes, resumed, "--epochs", "2", "--max-steps", "4", "--workers", "2", "--resume")
    a = torch.load(straight / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "last.pt", weights_only=True)["state_dict"]
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, msg=key)
    assert [r["step"] for r in read_log(resumed)] == [1, 2, 3, 4]
    assert [r["loss"] for r in read_log(straight)] == [r["loss"] for r in read_log(resumed)]


def test_augmentation_depends_on_seed_epoch_and_sample_only(scenes):
    from jsa_rt.config import get_preset
    from jsa_rt.train.datasets import open_dataset
    ds = open_dataset("scenes", scenes, get_preset("tiny"), "train", train=True)
    ds.aug_seed = (1, 0)
    torch.manual_seed(123)
    first = ds[3]["image"]
    torch.manual_seed(456)                         # the caller's stream does not matter...
    assert torch.equal(ds[3]["image"], first)
    ds.aug_seed = (1, 1)                           # ...but the epoch does
    assert not torch.equal(ds[3]["image"], first)
    state = torch.get_rng_state()
    ds[5]
    assert torch.equal(torch.get_rng_state(), state)   # and it is left as it was


def test_two_process_resume_is_exact(scenes, tmp_path):
    """Each rank gets its own RNG state back (token masks, spectrogram masks) and augmentation
    is per sample, so a DDP run stopped and resumed equals the run that never stopped."""
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def ddp(out, steps, *extra, port):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "jsa_rt.cli", "train", "--preset", "tiny", "--data", str(scenes), "--out", str(out),
               "--workers", "0", "--batch-size", "4", "--epochs", "2", "--max-steps", str(steps), "--device",
               "cpu", "--no-progress", "--val-split", "", *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-2000:]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ddp(straight, 3, port=29541)
    ddp(resumed, 1, port=29542)
    assert len(torch.load(resumed / "last.pt", weights_only=True)["rng"]) == 2     # one state per rank
    ddp(resumed, 3, "--resume", port=29543)
    a = torch.load(straight / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "last.pt", weights_only=True)["state_dict"]
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, msg=key)


def test_epoch_coverage_warning(scenes, tmp_path, capsys):
    # 24 items in batches of 16: one batch per epoch, 8 items left out every epoch
    train(scenes, tmp_path, "--epochs", "1", "--max-steps", "1", "--batch-size", "16", "--max-train-items", "24")
    assert "warning: each epoch uses 16 of 24 training items" in capsys.readouterr().out
    train(scenes, tmp_path / "b", "--epochs", "1", "--max-steps", "1", "--max-train-items", "24")   # batches of 8: all 24
    assert "warning: each epoch uses" not in capsys.readouterr().out


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing_non_finite(scenes, tmp_path, capsys):
    args = ["train", "--preset", "tiny", "--data", str(scenes), "--out", str(tmp_path), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--val-split", "", "--epochs", "3",
            "--max-train-items", "16", "--save-every", "1", "--lr", "1e6"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged at step 2 (epoch 1): non-finite loss on the batch of train_" in err[0]
    assert not (tmp_path / "final.pt").exists() and not (tmp_path / "best.pt").exists()
    last = torch.load(tmp_path / "last.pt", weights_only=True)          # step 1's: finite
    assert last["train_state"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_saved(tmp_path):
    from jsa_rt.errors import InputError
    from jsa_rt.model import build_model
    from jsa_rt.model.checkpoint import save_checkpoint
    model = build_model("tiny", pretrained=False)
    save_checkpoint(tmp_path / "final.pt", model)
    good = (tmp_path / "final.pt").read_bytes()
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    with pytest.raises(InputError, match="not finite .*not saving .*final.pt"):
        save_checkpoint(tmp_path / "final.pt", model)
    assert (tmp_path / "final.pt").read_bytes() == good          # the last good file is intact


def test_listen_variant_trains_logs_loc_and_resumes_as_listen(scenes, tmp_path):
    train(scenes, tmp_path, "--epochs", "1", "--max-steps", "1", "--variant", "listen")
    train(scenes, tmp_path, "--epochs", "1", "--max-steps", "2", "--resume")     # no --variant
    cfg = torch.load(tmp_path / "last.pt", weights_only=True)["config"]
    assert (cfg["variant"], cfg["match"], cfg["iqr_alpha"]) == ("listen", "audio_only", 1.0)
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == [1, 2] and all(r["loc"] > 0 for r in log)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_killed_run_keeps_its_log_and_resume_continues_it(scenes, tmp_path, sig):
    import signal
    import time
    args = ["train", "--preset", "tiny", "--data", str(scenes), "--out", str(tmp_path), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--val-split", "", "--epochs", "16",
            "--max-train-items", "8", "--save-every", "3"]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "jsa_rt.cli", *args], cwd=str(repo),
                            env=dict(os.environ, PYTHONPATH=str(repo)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "log.csv"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and \
                (not log.exists() or len(log.read_text().splitlines()) < 8):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(getattr(signal, sig))
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = log.read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,")
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert len(steps) >= 7 and steps == list(range(1, len(steps) + 1))
    train(scenes, tmp_path, *args[args.index("--epochs"):], "--resume")
    rows = log.read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,") and sum(r.startswith("step,") for r in rows) == 1
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 17))


def test_two_runs_never_share_one_folder(scenes, tmp_path, capsys):
    from jsa_rt.train.run_parts import claim_run_folder
    args = ["train", "--preset", "tiny", "--data", str(scenes), "--out", str(tmp_path), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--val-split", "", "--epochs", "1", "--max-steps", "1"]
    with claim_run_folder(tmp_path, resume=False):           # another run is training there now
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{tmp_path} is in use by another training run (pid {os.getpid()})" in err[0]
        assert main([*args, "--resume"]) == 2                 # not even to resume it
        assert "in use by another training run" in capsys.readouterr().err
    assert main(args) == 0
    before = (tmp_path / "final.pt").read_bytes()
    assert main(args) == 2                                    # a finished run's folder: --resume or elsewhere
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a training run (last.pt, log.csv" in err[0] and "--resume" in err[0]
    assert (tmp_path / "final.pt").read_bytes() == before


def test_training_files_are_never_written_through_symbolic_links(tmp_path):
    """Issue 16: a run folder's .lock (truncated for the pid) and log.csv (appended to) followed a
    link to whatever file it named."""
    from jsa_rt.errors import InputError
    from jsa_rt.train.run_parts import claim_run_folder, open_log
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(InputError, match=r"lock file .*\.lock is a symbolic link .*refusing to write through"):
        claim_run_folder(run, resume=False)
    (run / ".lock").unlink()
    (run / "log.csv").symlink_to(victim)
    log, has_header = open_log(run / "log.csv", resume_step=None)    # replaces the link with a new log
    log.write("step,loss\n")
    log.close()
    assert victim.read_text() == "keep me\n" and not (run / "log.csv").is_symlink()


def test_cached_backbone_features_train_the_heads_and_leave_the_backbones(scenes, tmp_path):
    config = tmp_path / "frozen.json"
    config.write_text('{"model": {"freeze_encoders": true}}')
    out = tmp_path / "run"
    flags = ("--epochs", "2", "--cache-features", "2", "--config", str(config))
    train(scenes, out, *flags, "--max-steps", "1")
    after_one_step = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    train(scenes, out, *flags, "--resume")
    final = torch.load(out / "final.pt", weights_only=True)
    assert final["config"]["freeze_encoders"] is True
    epochs = [r["epoch"] for r in read_log(out)]
    assert epochs.count(1) > 0 and epochs.count(0) > 1            # both views were trained on
    backbone = [k for k in final["state_dict"] if ".backbone." in k]
    assert any("running_var" in k for k in backbone)
    for key in backbone:                       # weights and BatchNorm statistics never moved
        assert torch.equal(final["state_dict"][key], after_one_step[key]), key
    for key in ("image_encoder.proj.weight", "slots.initial_slots"):
        assert not torch.equal(final["state_dict"][key], after_one_step[key]), key


def test_a_feature_store_is_read_back_by_the_next_run_and_recomputed_when_stale(scenes, tmp_path, capsys):
    """--feature-store: a second run over the same items reads the stored views instead of running
    the backbones again and trains exactly as the first; a stored view that no longer matches the
    backbones' output (here: overwritten with other numbers) is computed anew. The store is keyed by
    the items, the method's augmentation and the backbone settings, so other losses read it back."""
    config = tmp_path / "frozen.json"
    config.write_text('{"model": {"freeze_encoders": true}}')
    store = tmp_path / "store"
    flags = ("--epochs", "1", "--cache-features", "2", "--config", str(config), "--feature-store", str(store),
             "--max-steps", "3")
    train(scenes, tmp_path / "a", *flags)
    assert "0 of 2 view(s) read back" in capsys.readouterr().out
    [folder] = store.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["view0.pt", "view1.pt"]
    train(scenes, tmp_path / "b", *flags)
    assert "2 of 2 view(s) read back" in capsys.readouterr().out
    a = torch.load(tmp_path / "a" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    view0 = torch.load(folder / "view0.pt", weights_only=True)
    torch.save({"image": view0["image"] + 1, "audio": view0["audio"]}, folder / "view0.pt")
    train(scenes, tmp_path / "c", *flags)
    assert "1 of 2 view(s) read back" in capsys.readouterr().out
    assert torch.equal(torch.load(folder / "view0.pt", weights_only=True)["image"], view0["image"])

    # other heads and losses over the same backbones read the same views back (the tiny preset's
    # backbones are random, so only a model built the same way has the same ones)
    config.write_text('{"model": {"freeze_encoders": true, "w_div": 0.5, "tau": 0.05}}')
    train(scenes, tmp_path / "d", *flags)
    assert "2 of 2 view(s) read back" in capsys.readouterr().out
    assert len(list(store.iterdir())) == 1
    # a backbone setting that changes their output does not
    config.write_text('{"model": {"freeze_encoders": true, "image_size": 96}}')
    train(scenes, tmp_path / "e", *flags)
    assert "0 of 2 view(s) read back" in capsys.readouterr().out
    assert len(list(store.iterdir())) == 2
    # nor does another method's augmentation (EZ-VSL crops differently)
    train(scenes, tmp_path / "f", *flags, "--model", "ezvsl")
    assert "0 of 2 view(s) read back" in capsys.readouterr().out
    assert len(list(store.iterdir())) == 3


def test_cached_features_need_frozen_backbones(scenes, tmp_path, capsys):
    args = ["train", "--preset", "tiny", "--data", str(scenes), "--out", str(tmp_path), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--val-split", "", "--cache-features", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "freeze_encoders" in err[0], err


def test_the_soundtracks_of_one_frame_share_a_batch_and_reach_the_loss():
    from types import SimpleNamespace
    from jsa_rt.train.run_parts import EpochSampler, frame_ids
    groups = [None, "f1", None, "f2", "f1", None, "f2", "f2", None, None]
    samples = [SimpleNamespace(meta={"group": g}) for g in groups]
    frames = frame_ids(samples)
    assert frames.tolist() == [-1, 0, -1, 1, 0, -1, 1, 1, -1, -1]
    assert frame_ids([SimpleNamespace(meta={}) for _ in range(3)]) is None
    plain = EpochSampler(10, 0, 0, 0, 1, 5).indices()
    order = EpochSampler(10, 0, 0, 0, 1, 5, frames=frames).indices()
    assert sorted(order) == sorted(plain) == list(range(10))
    assert order == EpochSampler(10, 0, 0, 0, 1, 5, frames=frames).indices()          # seeded: resumable
    for members in ([1, 4], [3, 6, 7]):                                             # adjacent in the order
        spots = sorted(order.index(i) for i in members)
        assert spots == list(range(spots[0], spots[0] + len(members)))
    assert EpochSampler(10, 0, 0, 0, 1, 5, start_batch=1, frames=frames).indices() == order[5:]


def test_best_checkpoint_counts_follows_on_val_pairs(scenes, tmp_path):
    """With a val-pairs split, validation also scores follows on it, and best.pt is the epoch with the
    best pointing + cIoU@0.5 + follows; without it (--val-pairs-split ''), follows is not measured."""
    import json
    assert (scenes / "splits" / "val-pairs.txt").is_file()
    args = ["train", "--preset", "tiny", "--variant", "listen", "--data", str(scenes), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--epochs", "3", "--val-every", "1", "--max-train-items", "16"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    vals = [h["val"] for h in history]
    assert all(0.0 <= v["follows"] <= 1.0 and 0.0 <= v["pairs_pointing"] <= 1.0 for v in vals)
    scores = [v["pointing"] + v["ciou50"] + v["follows"] for v in vals]
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["extra"]
    assert best["epoch"] == 1 + scores.index(max(scores))
    assert best["val"]["follows"] == vals[best["epoch"] - 1]["follows"]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "b"), "--val-pairs-split", ""]) == 0
    (only,) = json.loads((tmp_path / "b" / "history.json").read_text())
    assert "follows" not in only["val"] and "pointing" in only["val"]
