"""`jsa-rt doctor`: what this machine can do for jsa-rt, and how to fix what it cannot.

Every check prints one line: `ok`, `warn` (works, but something is missing) or `info`, and a
fix for each problem. Optional parts (TensorRT, pycuda, a camera) only warn: the exit code is 0
unless doctor itself crashes. Nothing here imports torch (its version comes from package metadata).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..machine import gpus, is_jetson, package_version
from ..paths import WEIGHTS_DIR


@dataclass
class Check:
    status: str           # "ok" | "warn" | "info"
    name: str
    detail: str
    fix: str = ""


def _run(cmd: list[str], timeout: float = 5.0) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ---- checks ---------------------------------------------------------------------------------------
def check_python() -> list[Check]:
    return [Check("ok", "python", f"{sys.version.split()[0]} on {platform.machine()} ({platform.system()})")]


def check_opencv() -> list[Check]:
    if importlib.util.find_spec("cv2") is None:
        return [Check("warn", "opencv", "not installed", "pip install opencv-python (on Jetson: the system "
                                                          "python3-opencv, see docs/jetson.md)")]
    import cv2
    from .outputs import opencv_has_gui
    from .video import opencv_has_gstreamer
    checks = [Check("ok", "opencv", cv2.__version__)]
    checks.append(Check("ok", "opencv GUI", "imshow available") if opencv_has_gui() else
                  Check("warn", "opencv GUI", "none (headless build): no live window, --output still works",
                        "pip uninstall opencv-python-headless && pip install opencv-python"))
    if opencv_has_gstreamer():
        checks.append(Check("ok", "opencv GStreamer", "yes: csi:// cameras and GStreamer pipelines work"))
    else:
        fix = ("use the system OpenCV in a venv with --system-site-packages and pip uninstall opencv-python "
               "(docs/jetson.md)" if is_jetson() else "only needed for csi:// cameras (Jetson)")
        checks.append(Check("warn" if is_jetson() else "info", "opencv GStreamer", "no", fix))
    return checks


def check_display() -> list[Check]:
    from .outputs import display_available
    if display_available():
        return [Check("ok", "display", os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "yes")]
    return [Check("warn", "display", "none (DISPLAY unset): live runs headless",
                  "run in a desktop session, or ssh -X, or use --output out.mp4")]


def check_audio() -> list[Check]:
    from ..errors import DeviceError
    from .audio import describe_inputs, import_sounddevice, input_devices
    try:
        sd = import_sounddevice()
    except DeviceError as exc:
        return [Check("warn", "PortAudio", str(exc).split(":")[0],
                      "sudo apt install libportaudio2 && pip install sounddevice")]
    checks = [Check("ok", "PortAudio", sd.get_portaudio_version()[1])]
    try:
        dev = sd.query_devices(kind="input")
        checks.append(Check("ok", "default microphone", f"{dev['name']} ({int(dev['default_samplerate'])} Hz)"))
    except Exception:
        n = len(input_devices(sd))
        checks.append(Check("warn", "default microphone", f"none ({n} input devices): {describe_inputs(sd)}",
                            "plug in a microphone, pick one with --mic NAME (jsa-rt devices), "
                            "or use --mic file://clip.wav"))
    return checks


def check_cameras() -> list[Check]:
    from .video import cameras_present
    cams = cameras_present()
    if cams:
        return [Check("ok", "cameras", ", ".join(cams))]
    return [Check("warn", "cameras", "no /dev/video*" + (" (CSI cameras use csi://0)" if is_jetson() else ""),
                  "plug in a USB camera, or use --camera file://clip.mp4 (jsa-rt demo needs none)")]


def check_ffmpeg() -> list[Check]:
    path = shutil.which("ffmpeg")
    if path:
        return [Check("ok", "ffmpeg", _run([path, "-version"]).splitlines()[0][:60] if path else "")]
    return [Check("warn", "ffmpeg", "missing: recordings have no sound", "sudo apt install ffmpeg")]


def check_inference() -> list[Check]:
    checks = []
    ort = package_version("onnxruntime", "onnxruntime-gpu")
    if ort:
        import onnxruntime
        providers = [p.replace("ExecutionProvider", "") for p in onnxruntime.get_available_providers()]
        checks.append(Check("ok", "onnxruntime", f"{ort} ({', '.join(providers)})"))
    else:
        checks.append(Check("warn", "onnxruntime", "not installed", "pip install onnxruntime "
                            "(Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack)"))
    torch_v = package_version("torch")
    checks.append(Check("ok" if torch_v else "info", "torch", torch_v or "not installed (not needed for live)"))
    found = gpus()
    if found:
        checks.append(Check("ok", "CUDA GPU", f"{found[0]['name']}, driver {found[0]['driver']}"))
    elif is_jetson():
        checks.append(Check("ok", "CUDA GPU", "Jetson integrated GPU"))
    else:
        checks.append(Check("info", "CUDA GPU", "none found: CPU backends only"))
    cuda_v = package_version("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime")
    nvcc = Path("/usr/local/cuda/version.json")
    if cuda_v or nvcc.is_file():
        checks.append(Check("ok", "CUDA runtime", cuda_v or nvcc.read_text()[:80].replace("\n", " ")))
    trt_spec = importlib.util.find_spec("tensorrt")
    if trt_spec is not None:
        try:
            import tensorrt
            checks.append(Check("ok", "TensorRT", tensorrt.__version__))
        except Exception as exc:
            checks.append(Check("warn", "TensorRT", f"installed but does not load: {exc}",
                                "reinstall TensorRT for this CUDA (JetPack ships it)"))
    else:
        checks.append(Check("info" if not found and not is_jetson() else "warn", "TensorRT", "not installed",
                            "on Jetson: python3 -m venv --system-site-packages (JetPack's TensorRT); "
                            "on x86: pip install tensorrt from NVIDIA's index"))
    pycuda = package_version("pycuda")
    checks.append(Check("ok" if pycuda else "info", "pycuda", pycuda or "not installed (the TensorRT backend "
                        "can use cuda-python instead)",
                        "" if pycuda else "pip install pycuda (builds against the local CUDA)"))
    return checks


def check_model() -> list[Check]:
    found = sorted(p.name for p in WEIGHTS_DIR.glob("*") if p.suffix in (".pt", ".onnx", ".engine"))
    if any(n.startswith("edge-jsa") for n in found):
        return [Check("ok", "shipped models", ", ".join(found))]
    return [Check("warn", "shipped models", f"edge-jsa missing from {WEIGHTS_DIR}",
                  "reinstall jsa-rt, or pass --model CHECKPOINT (or --preset edge for random weights)")]


def check_demo_data() -> list[Check]:
    from .demo_material import find_stamp_root
    root = find_stamp_root(None)
    if root is not None:
        return [Check("ok", "demo data", str(root))]
    return [Check("warn", "demo data", "no Tux Paint stamps", "sudo apt install tuxpaint-stamps-default "
                                                               "(or set JSA_DATA)")]


def check_jetson() -> list[Check]:
    if not is_jetson():
        return []
    release = Path("/etc/nv_tegra_release").read_text(errors="replace").splitlines()[0].strip("# ")
    checks = [Check("ok", "L4T", release)]
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\0\n ")
        checks.append(Check("ok", "Jetson model", model))
    except OSError:
        pass
    mode = _run(["nvpmodel", "-q"])
    if mode:
        line = next((l for l in mode.splitlines() if "Power Mode" in l), mode.splitlines()[0])
        checks.append(Check("ok", "power mode", line.replace("NV Power Mode:", "").strip(),
                            ""))
        checks.append(Check("info", "clocks", "for steady timings: sudo nvpmodel -m 0 && sudo jetson_clocks"))
    else:
        checks.append(Check("warn", "power mode", "nvpmodel not found or not permitted",
                            "sudo nvpmodel -q (install nvidia-l4t-tools)"))
    return checks


CHECKS = (check_python, check_opencv, check_display, check_audio, check_cameras, check_ffmpeg,
          check_inference, check_model, check_demo_data, check_jetson)


def collect() -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            results.extend(check())
        except Exception as exc:     # one broken probe must not hide the others
            results.append(Check("warn", check.__name__.replace("check_", ""), f"check failed: {exc}"))
    return results


def run_checks() -> int:
    results = collect()
    width = max(len(c.name) for c in results)
    for c in results:
        print(f"[{c.status:>4}] {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != "ok":
            print(f"       {'':<{width}}  fix: {c.fix}")
    warns = sum(c.status == "warn" for c in results)
    print(f"doctor: {sum(c.status == 'ok' for c in results)} ok, {warns} warning(s); next: "
          f"{'jsa-rt demo' if warns == 0 else 'apply the fixes above, then jsa-rt demo'}")
    return 0
