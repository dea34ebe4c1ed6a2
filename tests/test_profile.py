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
from jsa_rt.runtime import profiling

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
    md = profiling.to_markdown(loaded)
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
    assert profiling.check_guards([f"p95_ms>{p95_torch * 1.01}"], report) == []
    fails = profiling.check_guards([f"p95_ms>{(p95_torch + p95_ort) / 2}"], report)
    assert len(fails) == 1 and "torch" in fails[0] and "onnxruntime" not in fails[0]
    stage_p99 = report["backends"]["onnxruntime"]["stages"]["slot_attention"]["p99_ms"]
    assert profiling.check_guards([f"onnxruntime.slot_attention.p99_ms>={stage_p99}"], report)
    assert not profiling.check_guards([f"onnxruntime.slot_attention.p99_ms>{stage_p99}"], report)
    with pytest.raises(InputError, match="neither a measured backend"):
        profiling.check_guards(["tensorrt.p95_ms>1"], report)
    with pytest.raises(InputError, match="not 'METRIC>NUMBER'"):
        profiling.check_guards(["p95_ms is big"], report)
    with pytest.raises(InputError, match="needs --compare"):
        profiling.check_guards(["p95_ratio>1.1"], report)


def test_compare_ratios():
    a, b = synthetic_report(1.0), synthetic_report(2.0)      # same noise, twice as slow
    rows = profiling.compare(a, b)
    assert {r["backend"] for r in rows} == {"torch", "onnxruntime"}
    assert all(r["ratio"] == pytest.approx(2.0) for r in rows)
    assert profiling.check_guards(["p95_ratio>1.5"], b, baseline=a)
    assert not profiling.check_guards(["p95_ratio>2.5"], b, baseline=a)


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


# ---- the torch stage plan and onnxruntime's per-stage split (real model, tiny preset) -------
@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from jsa_rt.model import build_model
    return build_model("tiny", pretrained=False).eval().requires_grad_(False)


def test_stage_plan_reproduces_localize_and_covers_its_flops(tiny_model):
    from jsa_rt.runtime import profiling_torch as pt
    from jsa_rt.runtime.profiling_model import synthetic_inputs

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
    from jsa_rt.runtime.profiling_model import export_full_graph, synthetic_inputs
    from jsa_rt.runtime.profiling_ort import exported_stages, ort_stage_samples

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
                   "--iterations", 5, "--warmup", 1, "--threads", 1, "--json", out)
    assert res.returncode == 0, res.stderr[-2000:]
    report = profiling.load_report(str(out))
    assert report["mode"] == "model" and report["settings"]["preset"] == "tiny"
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
    if "tensorrt" not in available:
        assert "tensorrt" in report["skipped"] and report["skipped"]["tensorrt"]
    assert (tmp_path / "tiny.md").read_text().count("| torch |") == 1
    assert (tmp_path / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a guard on the fresh report: the measured p50 is above half itself, below twice itself
    p50 = torch_entry["total"]["p50_ms"]
    assert run_tool("check", out, "--fail-if", f"torch.p50_ms>{p50 / 2}").returncode == 1
    assert run_tool("check", out, "--fail-if", f"torch.p50_ms>{p50 * 2}").returncode == 0


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
                   "--duration", 3, "--backend", backend, "--preset", "tiny", "--json", out)
    assert res.returncode == 0, res.stderr[-2000:]
    report = profiling.load_report(str(out))
    assert report["mode"] == "pipeline" and list(report["backends"]) == [backend]
    entry = report["backends"][backend]
    counters = entry["pipeline"]
    assert counters["frames"] >= 20 and counters["fps"] > 5          # a 15 fps clip, paced
    assert counters["audio_overflows"] == 0 and counters["dropped_frames"] >= 0
    assert counters["rss_mb_peak"] > 50
    assert entry["total"]["samples"] == counters["frames"] - counters["warmup_frames"]
    for stage in (*profiling.PIPELINE_STAGES, "audio_branch", "visual_branch"):
        assert entry["stages"][stage]["samples"] > 0
    # the pipeline's stages split each frame's capture-to-render age (rounded to 0.01 ms each)
    raw = entry["raw_ms"]
    for i, age in enumerate(raw["total"]):
        assert sum(raw["stages"][s][i] for s in profiling.PIPELINE_STAGES) == pytest.approx(age, abs=0.1)
    # the audio branch runs once per audio hop (0.25 s), not per frame
    assert entry["stages"]["audio_branch"]["samples"] < entry["stages"]["visual_branch"]["samples"]
    assert (tmp_path / "pipe.png").is_file() and "Pipeline counters" in (tmp_path / "pipe.md").read_text()
