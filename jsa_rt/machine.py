"""Facts about this machine, probed in one place (doctor, the profiler's environment block,
`--threads` checks and the backend choice all ask here): package versions, CPU, memory, cores,
NVIDIA GPUs and driver, Jetson. Cheap and torch-free: files under /proc and /dev, package
metadata, and `nvidia-smi` when present.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from .paths import slug

# distribution names, first installed one wins
LIBRARIES = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "triton": ("triton",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-lean", "tensorrt_lean"),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "sounddevice": ("sounddevice",),
    "jsa-rt": ("jsa-rt",),
}


def library_versions() -> dict:
    return {name: package_version(*dists) for name, dists in LIBRARIES.items()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi reports them (empty without a driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            found.append(dict(name=parts[0], driver=parts[1], memory=parts[2],
                              compute_capability=parts[3] if len(parts) > 3 else None))
    return found


def machine_name(gpu_list: list[dict] | None = None) -> str:
    """Short name for benchmark files: `cpu-2core-x86_64` or `gpu-nvidia-h100-80gb-hbm3`."""
    gpu_list = gpus() if gpu_list is None else gpu_list
    if gpu_list:
        return "gpu-" + slug(gpu_list[0]["name"])
    return f"cpu-{os.cpu_count()}core-{platform.machine()}"


def package_version(*dists: str) -> str | None:
    """The installed version of the first of `dists` that is installed, else None."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").is_file()


# device files of an NVIDIA driver: desktop / server GPUs, Jetson (nvgpu / nvhost), WSL (dxg)
_DRIVER_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/nvgpu", "/dev/nvhost-ctrl-gpu", "/dev/dxg")


def nvidia_driver_present() -> bool:
    """Cheap: could any CUDA backend run here? Without a driver, the backend choice never imports
    torch (or tensorrt) just to learn that CUDA is missing, so a CPU machine's live path stays
    torch-free."""
    import ctypes.util
    return any(os.path.exists(node) for node in _DRIVER_NODES) or ctypes.util.find_library("cuda") is not None
