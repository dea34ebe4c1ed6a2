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
    with pytest.raises(InputError, match="not found"):
        profiling.load_report(str(tmp_path / "missing.json"))


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
