"""The environment block of a profile report: which machine, which libraries.

Reads /proc, nvidia-smi and package metadata; imports no torch (versions come from
`importlib.metadata`), so it is cheap and safe on the onnxruntime / TensorRT paths.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

from ..machine import cpu_model, gpus, library_versions, machine_name, memory_total_gb

def environment() -> dict:
    gpu_list = gpus()
    return {
        "machine": machine_name(gpu_list),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "memory_gb": memory_total_gb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "gpu": ", ".join(g["name"] for g in gpu_list) or None,
        "gpus": gpu_list,
        "driver": gpu_list[0]["driver"] if gpu_list else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": library_versions(),
    }


_NUMPY_GEMM = """
import sys, time, numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
a = np.random.rand(n, n).astype(np.float32); b = a.copy(); a @ b
best = float("inf")
for _ in range(repeats):
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(2.0 * n ** 3 / best / 1e9)
"""


def numpy_matmul_gflops(n: int, repeats: int, threads: int) -> float | None:
    """numpy's BLAS picks its thread count at import, so measure it in a child process with the
    same thread count as torch (None if that fails)."""
    env = dict(os.environ, **{v: str(threads) for v in
                              ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    try:
        out = subprocess.run([sys.executable, "-c", _NUMPY_GEMM, str(n), str(repeats)], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        return float(out.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def cpu_matmul_peak(n: int = 1024, repeats: int = 10) -> dict:
    """This host's fp32 GEMM throughput on all cores, without torch (numpy's BLAS and
    onnxruntime's MLAS, the better): a shared VM's speed changes from day to day, and a report
    that carries it can be compared with one from another day."""
    from .ort_stages import ort_matmul_gflops
    cores = os.cpu_count() or 1
    rates = {"numpy": numpy_matmul_gflops(n, repeats, cores), "onnxruntime": ort_matmul_gflops(n, repeats, cores)}
    best = max((g for g in rates.values() if g), default=None)
    return {"fp32_gflops": best, "threads": cores, "size": n, "device": "cpu", "by_library": rates,
            "method": f"best of {repeats} fp32 {n}x{n} GEMMs (numpy, onnxruntime) on all {cores} cores"}


class CpuContention:
    """How much CPU other processes used while we measured, in cores (0 = we had the machine).

    /proc/stat's busy time of the whole machine (steal included: a hypervisor's other guests)
    minus this process's and its children's CPU time, over the wall time. The load average lags
    by a minute; this covers exactly the measured interval.
    """

    def __init__(self):
        self._start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system

    def others_cores(self) -> float | None:
        end = self._snapshot()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall = end[0] - self._start[0]
        others = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return round(max(0.0, others) / wall, 2)
