"""tools/profile.py: statistics, report schema, --compare, --fail-if, and short real runs on `tiny`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsa_rt.errors import InputError
from jsa_rt.profile import guards, markdown, video_rate
from jsa_rt.profile import report as profiling

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "profile.py"


def run_tool(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def synthetic_report(scale: float = 1.0, seed: int = 0) -> dict:
    """Two backends with lognormal latencies plus one huge outlier each."""
    rng = np.random.default_rng(seed)
    report = profiling.new_report("model", {"machine": "test-machine", "cpu": "test"},
                                  {"preset": "tiny", "threads": 1})
    for name, base in (("torch", 10.0), ("onnxruntime", 4.0)):
        stages = {s: list(scale * base / 6 * rng.lognormal(0, 0.2, 200))
                  for s in profiling.MODEL_STAGES}
        total = list(scale * base * rng.lognormal(0, 0.2, 200)) + [scale * base * 50]
        report["backends"][name] = profiling.backend_entry(total, stages, device="cpu")
    return report


# ---- statistics ----------------------------------------------------------------------------
def test_summarize_matches_numpy_and_keeps_outliers():
    rng = np.random.default_rng(1)
    samples = np.concatenate([rng.lognormal(1.0, 0.3, 997), [500.0, 900.0, 1e4]])
    stats = profiling.summarize(samples)
    assert stats["samples"] == 1000
    for q in (50, 90, 95, 99):
        assert stats[f"p{q}_ms"] == pytest.approx(np.percentile(samples, q), rel=1e-12)
    assert stats["max_ms"] == 1e4                     # the outlier is not clipped
    assert stats["min_ms"] == samples.min()
    assert stats["mean_ms"] == pytest.approx(samples.mean())
    # the three outliers sit above the 99th percentile's interpolation point
    assert stats["p99_ms"] > np.percentile(samples[:997], 99)


def test_summarize_small_and_invalid_inputs():
    assert profiling.summarize([3.0])["p99_ms"] == 3.0
    assert profiling.summarize([1.0, 2.0])["p50_ms"] == 1.5      # numpy's linear interpolation
    with pytest.raises(ValueError):
        profiling.summarize([])
    with pytest.raises(ValueError):
        profiling.summarize([1.0, float("nan")])


# ---- report schema -------------------------------------------------------------------------
def test_report_schema_round_trip(tmp_path):
    report = synthetic_report()
    path = tmp_path / "r.json"
    profiling.save_report(report, str(path))
    loaded = profiling.load_report(str(path))
    entry = loaded["backends"]["torch"]
    for key in ("p50_ms", "p90_ms", "p99_ms", "samples", "min_ms", "p95_ms", "max_ms", "mean_ms"):
        assert key in entry["total"]
        assert key in entry["stages"]["image_encoder"]
    assert entry["total"]["samples"] == len(entry["raw_ms"]["total"]) == 201
    assert entry["total"]["p50_ms"] == pytest.approx(np.percentile(entry["raw_ms"]["total"], 50))
    md = markdown.to_markdown(loaded)
    assert "| torch | cpu |" in md and "| onnxruntime | cpu |" in md
    assert f"{entry['total']['p50_ms']:.2f}" in md
    assert "image_encoder" in md


def test_load_report_rejects_broken_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        profiling.load_report(str(bad))
    report = synthetic_report()
    del report["backends"]["torch"]["total"]["p99_ms"]
    bad.write_text(json.dumps(report))
    with pytest.raises(InputError, match="backends.torch.total lacks"):
        profiling.load_report(str(bad))
    with pytest.raises(InputError, match="not found") as missing:
        profiling.load_report(str(tmp_path / "missing.json"))
    assert "{path}" not in str(missing.value) and str(tmp_path / "missing.json") in str(missing.value)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")                 # a picture passed as the report
    with pytest.raises(InputError, match="not a profile report"):
        profiling.load_report(str(bad))


# ---- guards and comparisons ----------------------------------------------------------------
def test_guards_on_synthetic_report():
    report = synthetic_report()
    p95_torch = report["backends"]["torch"]["total"]["p95_ms"]
    p95_ort = report["backends"]["onnxruntime"]["total"]["p95_ms"]
    assert guards.check_guards([f"p95_ms>{p95_torch * 1.01}"], report) == []
    fails = guards.check_guards([f"p95_ms>{(p95_torch + p95_ort) / 2}"], report)
    assert len(fails) == 1 and "torch" in fails[0] and "onnxruntime" not in fails[0]
    stage_p99 = report["backends"]["onnxruntime"]["stages"]["slot_attention"]["p99_ms"]
    assert guards.check_guards([f"onnxruntime.slot_attention.p99_ms>={stage_p99}"], report)
    assert not guards.check_guards([f"onnxruntime.slot_attention.p99_ms>{stage_p99}"], report)
    with pytest.raises(InputError, match="neither a measured backend"):
        guards.check_guards(["tensorrt.p95_ms>1"], report)
    with pytest.raises(InputError, match="not 'METRIC>NUMBER'"):
        guards.check_guards(["p95_ms is big"], report)
    with pytest.raises(InputError, match="needs --compare"):
        guards.check_guards(["p95_ratio>1.1"], report)
    with pytest.raises(InputError, match="predates the video-rate figures"):   # an old report
        guards.check_guards(["headroom_p99_ms<5"], report)


def test_backends_against_the_reference_in_json_markdown_and_guards():
    from jsa_rt.profile.model import against_reference
    from jsa_rt.runtime.base import MAP_NAMES, Maps

    report = synthetic_report()
    ref = Maps(**{m: np.zeros(4, np.float32) for m in MAP_NAMES[:-1]}, confidence=0.5)
    off = Maps(**{m: np.zeros(4, np.float32) for m in MAP_NAMES[:-1]}, confidence=0.5)
    off.heatmap[2] = 0.25
    against_reference(report, {"torch": ref, "onnxruntime": off})
    assert "vs_reference" not in report["backends"]["torch"]
    v = report["backends"]["onnxruntime"]["vs_reference"]
    assert v["reference"] == "torch" and v["max_abs_diff"] == 0.25
    assert v["max_abs_diff_by_output"]["heatmap"] == 0.25 and v["max_abs_diff_by_output"]["confidence"] == 0
    p50 = {n: b["total"]["p50_ms"] for n, b in report["backends"].items()}
    assert v["p50_speedup"] == pytest.approx(p50["torch"] / p50["onnxruntime"])
    md = markdown.to_markdown(report)
    assert "## Against torch (same inputs)" in md and "| onnxruntime | x2." in md and "| heatmap |" in md
    assert guards.check_guards(["onnxruntime.p50_speedup<1.4", "max_abs_diff>0.5"], report) == []
    assert len(guards.check_guards(["p50_speedup<4", "max_abs_diff>1e-3"], report)) == 2
    # a backend without outputs (CUDA graphs) still gets its speedup, but no difference
    against_reference(report, {"torch": ref})
    assert "max_abs_diff" not in report["backends"]["onnxruntime"]["vs_reference"]


def test_compare_ratios():
    a, b = synthetic_report(1.0), synthetic_report(2.0)      # same noise, twice as slow
    rows = guards.compare(a, b)
    assert {r["backend"] for r in rows} == {"torch", "onnxruntime"}
    assert all(r["ratio"] == pytest.approx(2.0) for r in rows)
    assert guards.check_guards(["p95_ratio>1.5"], b, baseline=a)
    assert not guards.check_guards(["p95_ratio>2.5"], b, baseline=a)


def test_cli_compare_and_fail_if_exit_codes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    profiling.save_report(synthetic_report(1.0), str(a))
    profiling.save_report(synthetic_report(1.5), str(b))

    res = run_tool("--compare", a, b)
    assert res.returncode == 0, res.stderr
    assert "x1.50" in res.stdout and "onnxruntime" in res.stdout

    assert run_tool("--compare", a, b, "--fail-if", "p95_ratio>1.2").returncode == 1
    assert run_tool("--compare", a, b, "--fail-if", "p95_ratio>1.8").returncode == 0

    limit = profiling.load_report(str(b))["backends"]["torch"]["total"]["p95_ms"]
    assert run_tool("check", b, "--fail-if", f"p95_ms>{limit - 0.01}").returncode == 1
    assert run_tool("check", b, "--fail-if", f"p95_ms>{limit + 0.01}").returncode == 0
    res = run_tool("check", b, "--fail-if", "p95_ms>>3")
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr
    res = run_tool("--compare", a, tmp_path / "missing.json")
    assert res.returncode == 2 and "not found" in res.stderr


# ---- will it hold video rate? ---------------------------------------------------------------
def test_model_video_rate_headroom_over_budget_and_verdicts():
    budget = 1000 / 30
    samples = [10.0] * 90 + [40.0] * 10                # 10 % of calls over the 33.3 ms budget
    v = video_rate.model_video_rate(samples, 30)
    assert v["budget_ms"] == pytest.approx(budget)
    assert v["p50_ms"] == 10.0 and v["p99_ms"] == 40.0
    assert v["headroom_p50_ms"] == pytest.approx(budget - 10) and v["headroom_p99_ms"] == pytest.approx(budget - 40)
    assert v["over_budget"] == 10 and v["over_budget_fraction"] == pytest.approx(0.1)
    assert v["jitter_ms"] == pytest.approx(30.0) and v["samples"] == 100
    assert v["max_fps_p50"] == pytest.approx(100.0)
    assert v["verdict"] == "median only" and "10.0 %" in v["summary"]
    assert video_rate.model_video_rate([10.0] * 100, 30)["verdict"] == "holds"
    slow = video_rate.model_video_rate([50.0] * 100, 30)
    assert slow["verdict"] == "no" and "does not hold 30 fps" in slow["summary"]
    assert video_rate.model_video_rate([50.0] * 100, 15)["verdict"] == "holds"      # 66.7 ms budget


def test_pipeline_video_rate_from_intervals_work_and_drops():
    # 25 intervals, 5 of them a missed frame (66.7 ms): 26 frames rendered in 1 s
    intervals = [1000 / 30] * 20 + [2000 / 30] * 5
    v = video_rate.pipeline_video_rate(work_ms=[8.0] * 25 + [40.0], intervals_ms=intervals,
                                      ages_ms=[12.0] * 24 + [50.0, 60.0], dropped=5, frames=26,
                                      target_fps=30)
    assert v["fps"] == pytest.approx(1000 * 25 / sum(intervals)) == pytest.approx(25.0)
    assert v["late_intervals"] == 5 and v["late_interval_fraction"] == pytest.approx(5 / 25)
    assert v["dropped_fraction"] == pytest.approx(5 / 31)
    assert v["over_budget"] == 1 and v["age_over_budget_fraction"] == pytest.approx(2 / 26)
    assert v["frame_interval_max_ms"] == pytest.approx(2000 / 30)
    assert v["verdict"] == "no" and "25.0 fps measured" in v["summary"]
    held = video_rate.pipeline_video_rate([8.0] * 30, [1000 / 30] * 29, [12.0] * 30, 0, 30, 30)
    assert held["fps"] == pytest.approx(30.0) and held["verdict"] == "holds"
    # one missed frame in 30 is within the 5 % a paced source may wobble
    one_late = video_rate.pipeline_video_rate([8.0] * 31, [1000 / 30] * 29 + [2000 / 30],
                                             [12.0] * 31, 1, 31, 30)
    assert one_late["fps"] == pytest.approx(29.03, abs=0.01) and one_late["verdict"] == "holds"
    tail = video_rate.pipeline_video_rate([8.0] * 27 + [40.0] * 3, [1000 / 30] * 29, [12.0] * 30, 0, 30, 30)
    assert tail["verdict"] == "held, tail over budget"


def test_report_has_video_rate_and_stage_sums_in_json_markdown_and_guards(tmp_path):
    report = synthetic_report()
    report["settings"]["target_fps"] = 100.0                  # a 10 ms budget: torch misses it
    report = profiling.finish_report(report)
    path = tmp_path / "r.json"
    profiling.save_report(report, str(path))
    loaded = profiling.load_report(str(path))
    torch_entry = loaded["backends"]["torch"]
    raw = np.asarray(torch_entry["raw_ms"]["total"])
    v = torch_entry["video_rate"]
    assert v["budget_ms"] == pytest.approx(10.0)
    assert v["over_budget_fraction"] == pytest.approx(np.mean(raw > 10.0))
    assert v["headroom_p99_ms"] == pytest.approx(10.0 - np.percentile(raw, 99))
    summed = torch_entry["stage_sum"]
    assert summed["stages"] == list(profiling.MODEL_STAGES)
    assert summed["mean_ms"] == pytest.approx(
        sum(torch_entry["stages"][s]["mean_ms"] for s in profiling.MODEL_STAGES))
    md = markdown.to_markdown(loaded)
    assert "## Video rate: 100.0 fps, a budget of 10.00 ms per frame" in md
    assert v["summary"] in md and f"{v['headroom_p99_ms']:.2f}" in md
    assert "| fps at p50 |" not in md                          # 1000 / latency is not a frame rate
    assert "**sum of stages**" in md and f"The stages add up to {summed['mean_ms']:.2f} ms" in md
    # the stage shares of one backend add up to 100 %
    rows = [line.split(" | ") for line in md.splitlines()
            if line.startswith("| ") and line.split(" | ")[0][2:] in profiling.MODEL_STAGES]
    shares = [float(r[6].rstrip(" %")) for r in rows[:len(profiling.MODEL_STAGES)]]
    assert sum(shares) == pytest.approx(100, abs=len(shares))
    assert guards.check_guards([f"torch.over_budget_fraction>{v['over_budget_fraction'] - 1e-9}"], loaded)
    assert not guards.check_guards(["onnxruntime.headroom_p99_ms<-1000"], loaded)


def test_plot_marks_the_frame_budget(tmp_path):
    pytest.importorskip("matplotlib")
    from jsa_rt.profile.plots import figure

    report = synthetic_report()
    report["settings"]["target_fps"] = 60.0
    report = profiling.finish_report(report)
    fig = figure(report)
    cdf = fig.axes[0]
    budget = [line for line in cdf.get_lines() if line.get_label().startswith("frame budget")]
    assert len(budget) == 1 and budget[0].get_xdata()[0] == pytest.approx(1000 / 60)
    labels = [line.get_label() for line in cdf.get_lines()]
    p50 = report["backends"]["torch"]["total"]["p50_ms"]
    assert any(label.startswith(f"torch: p50 {p50:.2f} ms") and "over budget" in label for label in labels)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_peak_note_when_a_rate_beats_the_measured_peak():
    from jsa_rt.profile.model import peak_notes

    report = synthetic_report()
    report["environment"]["other_cpu_cores"] = 0.5
    assert peak_notes(report) == []
    report["backends"]["torch"]["flops"] = {
        "stages": {"image_encoder": {"gflop": 1.0, "gflops_per_s": 190.0, "fraction_of_peak": 1.9}},
        "total": {"gflop": 2.0, "gflops_per_s": 90.0, "fraction_of_peak": 0.9}}
    notes = peak_notes(report)
    assert len(notes) == 1 and "190 %" in notes[0] and "image_encoder" in notes[0]


def test_bench_dir_names_a_report_after_its_checkpoint_else_its_preset():
    from jsa_rt.profile.cli import report_model_name
    assert report_model_name({"settings": {"preset": "edge", "checkpoint": "edge-jsa"}}) == "edge-jsa"
    assert report_model_name({"settings": {"preset": "edge", "checkpoint": "/runs/a/best.pt"}}) == "best"
    assert report_model_name({"settings": {"preset": "edge", "checkpoint": "m/edge-jsa.visual.onnx"}}) == "edge-jsa"
    assert report_model_name({"settings": {"preset": "paper", "checkpoint": None}}) == "paper"


def test_cli_bad_input_fails_fast_with_one_line(tmp_path):
    """Bad numbers, names and paths stop before any measurement, in one line, no traceback."""
    cases = [
        (["model", "--preset", "tiny", "--threads", "-1", "--iterations", "1"], "--threads -1"),
        (["model", "--preset", "tiny", "--backends", "torch,onnxrutime", "--iterations", "1"],
         "unknown backend 'onnxrutime'"),
        (["model", "--preset", "tiny", "--target-fps", "0", "--iterations", "1"], "--target-fps 0"),
        (["model", "--preset", "tiny", "--iterations", "1", "--json", tmp_path / "out.md"],
         "ending in .json"),
        (["pipeline", "--camera", "file://nowhere.mp4", "--mic", "file://nowhere.wav",
          "--duration", "nan"], "--duration nan"),
        (["pipeline", "--camera", "file://nowhere.mp4", "--mic", "file://nowhere.wav",
          "--preset", "nope", "--duration", "3"], "unknown preset 'nope'"),
    ]
    for args, message in cases:
        res = run_tool(*args, timeout=120)
        assert res.returncode == 2, (args, res.stdout[-500:], res.stderr[-1000:])
        assert "Traceback" not in res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, res.stderr)
        assert "measuring" not in res.stderr and "running the live pipeline" not in res.stderr
    assert not list(tmp_path.iterdir())


# ---- the torch stage plan and onnxruntime's per-stage split (real model, tiny preset) -------
@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from jsa_rt.model import build_model
    return build_model("tiny", pretrained=False).eval().requires_grad_(False)


def test_stage_plan_reproduces_localize_and_covers_its_flops(tiny_model):
    from jsa_rt.profile import torch_stages as pt
    from jsa_rt.profile.timing import synthetic_inputs

    frame, audio = synthetic_inputs(tiny_model.cfg)
    frame_t, wave = pt.model_inputs(frame, audio, "cpu")
    assert pt.check_stage_plan(tiny_model, frame_t, wave) <= 1e-5
    flops = pt.model_flops(tiny_model, frame, audio, "cpu")
    stage_sum = sum(flops[s] for s in profiling.MODEL_STAGES)
    assert stage_sum == flops["forward"] > 0          # the six stages are the whole forward
    assert flops["audio_branch"] + flops["visual_branch"] == flops["forward"]
    samples = pt.time_stages(pt.stage_plan(tiny_model, frame_t, wave)[0], 1, 3, "cpu")
    assert list(samples) == list(profiling.MODEL_STAGES)
    assert all(len(v) == 3 and min(v) > 0 for v in samples.values())


def test_onnxruntime_node_profile_splits_into_model_stages(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from jsa_rt.profile.model import export_full_graph
    from jsa_rt.profile.timing import synthetic_inputs
    from jsa_rt.profile.ort_stages import exported_stages, ort_profile, ort_stage_samples

    path = export_full_graph(tiny_model, str(tmp_path / "tiny.onnx"))
    graph = onnx.load(path).graph
    stages = exported_stages(graph)
    assert set(stages.values()) == set(profiling.MODEL_STAGES)
    producer = {out: n.name for n in graph.node for out in n.output}
    assert stages[producer["heatmap"]] == "upsample"          # upsampled, normalised, blended
    assert stages[producer["confidence"]] == "maps_fusion"    # from the slots, not the maps
    assert stages[producer["audio_slot"]] != "upsample"
    frame, audio = synthetic_inputs(tiny_model.cfg)
    samples = ort_stage_samples(path, frame, audio, warmup=1, iterations=4, threads=1)
    assert set(samples) == set(profiling.MODEL_STAGES)          # nothing left as "other"
    assert all(len(v) == 4 and min(v) >= 0 for v in samples.values())
    assert min(samples["image_encoder"]) > 0 and min(samples["slot_attention"]) > 0
    # each profiled run's length (warm-up left out) holds the kernel times summed into stages
    stages, runs = ort_profile(path, frame, audio, warmup=2, iterations=3, threads=1)
    assert len(runs) == 3 and all(len(v) == 3 for v in stages.values())
    kernels = np.sum([stages[s] for s in profiling.MODEL_STAGES], axis=0)
    assert np.all(kernels <= np.asarray(runs) + 1e-6) and np.all(kernels > 0)


# ---- short real runs of the tool on `tiny` -------------------------------------------------
def _runtime_or_skip():
    try:
        from jsa_rt.runtime import available_backends, load_backend  # noqa: F401
    except ImportError:
        pytest.skip("jsa_rt.runtime.load_backend (the engine issue) is not there yet")
    return available_backends()


def test_model_mode_on_tiny(tmp_path):
    available = _runtime_or_skip()
    out = tmp_path / "tiny.json"
    res = run_tool("model", "--preset", "tiny", "--backends", "torch,onnxruntime,tensorrt",
                   "--iterations", 5, "--warmup", 1, "--threads", 1, "--target-fps", 400,
                   "--json", out)
    assert res.returncode == 0, res.stderr[-2000:]
    report = profiling.load_report(str(out))
    assert report["mode"] == "model" and report["settings"]["preset"] == "tiny"
    assert report["settings"]["target_fps"] == 400 and report["settings"]["frame_budget_ms"] == 2.5
    # headroom and over-budget share, recomputed by hand from the saved samples
    for name, entry in report["backends"].items():
        raw = np.asarray(entry["raw_ms"]["total"])
        rate = entry["video_rate"]
        assert rate["over_budget"] == int(np.sum(raw > 2.5))
        assert rate["headroom_p99_ms"] == pytest.approx(2.5 - np.percentile(raw, 99))
        assert f"{name}: {rate['summary']}" in res.stdout        # the verdict line after the tables
        assert entry["precision"] == "fp32" and entry["threads"] >= 1
        assert entry["stage_sum"]["why"]
    assert report["backends"]["torch"]["threads"] == 1
    assert "## Video rate: 400.0 fps" in (tmp_path / "tiny.md").read_text()
    env = report["environment"]
    assert env["cores"] >= 1 and env["cpu"] and env["versions"]["numpy"]
    assert report["peak"]["fp32_gflops"] > 1.0

    torch_entry = report["backends"]["torch"]
    assert torch_entry["total"]["samples"] == 5 == len(torch_entry["raw_ms"]["total"])
    for stage in (*profiling.MODEL_STAGES, "forward", *profiling.BRANCH_STAGES):
        assert torch_entry["stages"][stage]["samples"] == 5
    flops = torch_entry["flops"]
    assert flops["total"]["gflop"] == pytest.approx(
        sum(flops["stages"][s]["gflop"] for s in profiling.MODEL_STAGES))
    assert 0 < flops["stages"]["image_encoder"]["fraction_of_peak"] < 5
    if "onnxruntime" in available:
        ort_entry = report["backends"]["onnxruntime"]
        assert set(profiling.MODEL_STAGES) <= set(ort_entry["stages"])
        # the stages come from a slower, profiled session: the report says how long its runs took
        assert ort_entry["profiled_run"]["samples"] == 5
        assert f"{ort_entry['profiled_run']['mean_ms']:.2f} ms" in ort_entry["stage_sum"]["why"]
        # the same maps as eager torch on the same inputs
        assert ort_entry["vs_reference"]["reference"] == "torch"
        assert ort_entry["vs_reference"]["max_abs_diff"] < 1e-3
        assert ort_entry["vs_reference"]["p50_speedup"] == pytest.approx(
            torch_entry["total"]["p50_ms"] / ort_entry["total"]["p50_ms"])
        assert "## Against torch" in (tmp_path / "tiny.md").read_text()
    if "tensorrt" not in available:
        assert "tensorrt" in report["skipped"] and report["skipped"]["tensorrt"]
    assert (tmp_path / "tiny.md").read_text().count("| torch | cpu |") == 1
    assert (tmp_path / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a guard on the fresh report: the measured p50 is above half itself, below twice itself
    p50 = torch_entry["total"]["p50_ms"]
    assert run_tool("check", out, "--fail-if", f"torch.p50_ms>{p50 / 2}").returncode == 1
    assert run_tool("check", out, "--fail-if", f"torch.p50_ms>{p50 * 2}").returncode == 0


def test_report_without_matplotlib_skips_only_the_png(tmp_path):
    """The edge install (`jsa-rt[live]`) has no matplotlib: the JSON and markdown still come."""
    _runtime_or_skip()
    blocker = tmp_path / "no_matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    out = tmp_path / "r.json"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, str(TOOL), "model", "--preset", "tiny", "--backends", "torch",
                          "--iterations", "2", "--warmup", "0", "--threads", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "matplotlib is not installed: no PNG" in res.stderr
    assert profiling.load_report(str(out))["backends"]["torch"]["total"]["samples"] == 2
    assert (tmp_path / "r.md").is_file() and not (tmp_path / "r.png").exists()
    assert f"wrote {out}, {tmp_path / 'r.md'};" in res.stdout


def _write_clip(tmp_path: Path, seconds: float = 4.0, fps: float = 15.0):
    """A video panning over a real photo and a real spoken-digit recording (../shared/data);
    without the data, a synthetic gradient and a tone (timing does not depend on content)."""
    import cv2
    import soundfile as sf
    from jsa_rt.audio_io import load_audio

    data = Path(os.environ.get("JSA_DATA", REPO.parent / "shared" / "data"))
    photo = data / "backgrounds" / "astronaut.png"
    digits = sorted((data / "fsdd" / "recordings").glob("3_*.wav"))[:8]
    image = cv2.imread(str(photo)) if photo.is_file() else None
    if image is None:
        image = np.tile(np.linspace(0, 255, 512, dtype=np.uint8)[None, :, None], (512, 1, 3))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(int(seconds * fps)):
        x = int(i * (image.shape[1] - 320) / (seconds * fps))
        writer.write(cv2.resize(image[:240, x:x + 320], (160, 120)))
    writer.release()
    if digits:
        speech = np.concatenate([load_audio(str(p), 16000) for p in digits])
        wave = np.resize(speech, int(seconds * 16000)).astype(np.float32)
    else:
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
    audio = tmp_path / "clip.wav"
    sf.write(str(audio), wave, 16000)
    return video, audio


def test_pipeline_mode_on_tiny(tmp_path):
    available = _runtime_or_skip()
    backend = "onnxruntime" if "onnxruntime" in available else "torch"
    video, audio = _write_clip(tmp_path)
    out = tmp_path / "pipe.json"
    res = run_tool("pipeline", "--camera", f"file://{video}", "--mic", f"file://{audio}",
                   "--duration", 3, "--backend", backend, "--preset", "tiny", "--json", out,
                   "--max-side", 80, "--bench-dir", tmp_path / "bench")
    assert res.returncode == 0, res.stderr[-2000:]
    report = profiling.load_report(str(out))
    assert report["mode"] == "pipeline" and list(report["backends"]) == [backend]
    # the frames were shrunk at capture, and the report says so; it carries the host's speed
    settings = report["settings"]
    assert settings["source_size"] == [160, 120] and settings["frame_size"] == [80, 60]
    assert settings["max_side"] == 80 and report["peak"]["fp32_gflops"] > 0.5
    assert "Measured fp32 matmul peak" in (tmp_path / "pipe.md").read_text()
    # --bench-dir names the report after what was measured (random tiny weights: the preset)
    assert (tmp_path / "bench" / f"profile_pipeline_{report['machine']}_tiny.json").is_file()
    entry = report["backends"][backend]
    counters = entry["pipeline"]
    assert counters["frames"] >= 20 and counters["fps"] > 5          # a 15 fps clip, paced
    assert counters["audio_overflows"] == 0 and counters["dropped_frames"] >= 0
    assert counters["rss_mb_peak"] > 50
    assert entry["total"]["samples"] == counters["frames"] - counters["warmup_frames"]
    # fps over the frames kept after the warm-up, from their render-to-render intervals
    intervals = entry["raw_ms"]["frame_interval"]
    assert len(intervals) == entry["total"]["samples"] - 1
    assert counters["fps"] == pytest.approx(1000 * len(intervals) / sum(intervals), abs=0.01)
    assert counters["fps_whole_run"] > 0
    rate = entry["video_rate"]
    assert report["settings"]["source_fps"] == 15 and rate["target_fps"] == 15   # the clip's rate
    work = np.asarray(entry["raw_ms"]["work"])             # the inference thread's time per frame
    per_frame = entry["raw_ms"]["stages"]
    assert work == pytest.approx(np.sum([per_frame[s] for s in ("preprocess", "audio", "visual")], axis=0))
    assert rate["over_budget"] == int(np.sum(work > 1000 / 15))
    assert rate["p99_ms"] == pytest.approx(np.percentile(work, 99))
    assert entry["precision"] == "fp32" and entry["threads"] >= 1
    # progress while it runs, and the verdict at the end
    assert len([line for line in res.stderr.splitlines() if " / 3 s: " in line]) >= 1, res.stderr
    assert f"{backend}: {rate['summary']}" in res.stdout
    md = (tmp_path / "pipe.md").read_text()
    assert "## Video rate: 15.0 fps" in md and "| fps at p50 |" not in md
    assert "The stages add up to" in md
    for stage in (*profiling.PIPELINE_STAGES, "audio_branch", "visual_branch"):
        assert entry["stages"][stage]["samples"] > 0
    # the pipeline's stages split each frame's capture-to-render age (rounded to 0.01 ms each)
    raw = entry["raw_ms"]
    for i, age in enumerate(raw["total"]):
        assert sum(raw["stages"][s][i] for s in profiling.PIPELINE_STAGES) == pytest.approx(age, abs=0.1)
    # the audio branch runs once per audio hop (0.25 s), not per frame
    assert entry["stages"]["audio_branch"]["samples"] < entry["stages"]["visual_branch"]["samples"]
    assert (tmp_path / "pipe.png").is_file() and "Pipeline counters" in (tmp_path / "pipe.md").read_text()
