"""`jsa-rt devices`: the cameras (/dev/video* opened through OpenCV) and microphones (PortAudio)."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeviceError
from .audio import COMMON_RATES, import_sounddevice, input_devices
from .video import cameras_present


def camera_name(dev: str) -> str:
    sysfs = Path("/sys/class/video4linux") / Path(dev).name / "name"
    try:
        return sysfs.read_text().strip()
    except OSError:
        return ""


def probe_camera(dev: str) -> dict:
    """Open a V4L2 device briefly: its default size, rate and pixel format (or why it failed)."""
    import cv2
    info = {"device": dev, "name": camera_name(dev)}
    cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
    try:
        if not cap.isOpened():
            info["error"] = "cannot open (busy, no permission, or a metadata-only node)"
            return info
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        info.update(width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                    fps=round(cap.get(cv2.CAP_PROP_FPS), 2),
                    fourcc="".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\0") or "?")
        ok, _ = cap.read()
        if not ok:
            info["error"] = "opened but delivered no frame"
    finally:
        cap.release()
    return info


def list_cameras(probe: bool = True) -> list[dict]:
    return [probe_camera(d) if probe else {"device": d, "name": camera_name(d)} for d in cameras_present()]


def list_microphones() -> list[dict]:
    """Input devices with their channels, default rate and the common rates they accept."""
    sd = import_sounddevice()
    try:
        default_in = sd.default.device[0]
    except Exception:
        default_in = -1
    mics = []
    for d in input_devices(sd):
        rates = []
        for rate in COMMON_RATES:
            try:
                sd.check_input_settings(device=d["index"], samplerate=rate, channels=1, dtype="float32")
                rates.append(rate)
            except Exception:
                pass
        mics.append({"index": d["index"], "name": d["name"], "channels": d["max_input_channels"],
                     "default_rate": int(d["default_samplerate"]), "rates": sorted(rates),
                     "default": d["index"] == default_in})
    return mics


def print_devices(probe: bool = True) -> int:
    cams = list_cameras(probe)
    print("cameras:")
    if not cams:
        print("  none (no /dev/video*); a file works as a camera: --camera file://clip.mp4")
    for c in cams:
        desc = c.get("error") or f"{c['width']}x{c['height']} @ {c['fps']:g} fps {c['fourcc']}" if probe else ""
        print(f"  {c['device']:<14} {c['name'] or '':<28} {desc}".rstrip())
    print("microphones:")
    mics = []
    try:
        mics = list_microphones()
    except DeviceError as exc:
        print(f"  unavailable: {exc}")
    else:
        if not mics:
            print("  none; a file works as a microphone: --mic file://clip.wav")
        for m in mics:
            star = "*" if m["default"] else " "
            rates = ", ".join(str(r) for r in m["rates"]) or "none of the common rates"
            print(f" {star}{m['index']:>3}  {m['name']:<36} {m['channels']} ch, default {m['default_rate']} Hz, "
                  f"accepts {rates}")
    print(f"devices: {len(cams)} camera(s), {len(mics)} microphone(s); next: jsa-rt live --camera "
          f"{cams[0]['device'] if cams else 'file://clip.mp4'} --mic {'default' if mics else 'file://clip.wav'}")
    return 0
