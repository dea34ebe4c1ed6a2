"""`LiveOptions`: every run-time setting of the live pipeline, with its default, in one place.
The `jsa-rt live` flags, `SoundLocator` and `Pipeline` all read their defaults from here (the
drawing and gating ones from render.RenderOptions, which it holds)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .render import RenderOptions


@dataclass
class LiveOptions:
    camera: str = "0"
    mic: str = "default"
    input_width: int | None = None
    input_height: int | None = None
    input_rate: float | None = None
    max_side: int = 640                   # frames larger than this (longer side, px) are shrunk at capture; 0 keeps them
    loop: bool = False
    reconnect: bool = False
    paced: bool = True                    # files play in real time; False: every frame, as fast as possible
    audio_window: float | None = None     # seconds; None: the model's window
    audio_hop: float = 0.25
    av_offset_ms: float = 0.0
    crop: str = "resize"
    hfov_deg: float | None = None         # camera's horizontal field of view: logs the source's bearing
    render: RenderOptions = field(default_factory=RenderOptions)
    output: str | None = None
    record_max_fps: float = 30.0          # recordings run at the source's rate, up to this (a 120 fps camera: 30)
    headless: bool = False
    duration: float | None = None
    log_json: str | None = None
    quiet: bool = False                   # no warnings printed (tests, soak)
