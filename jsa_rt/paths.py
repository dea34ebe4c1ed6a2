"""Where jsa-rt's files live (the shipped weights, the engine cache, the shared data folder), and
how files are named and identified (`slug`, `file_sha256`). One definition each."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"                  # shipped models (in the package)
ENGINES_DIR = PACKAGE_DIR.parent / "engines"           # built TensorRT engines and exports (git-ignored)
REPO_DATA = PACKAGE_DIR.parents[1] / "shared" / "data"  # ../shared/data next to the repository


def data_root() -> Path:
    """The real images and recordings: $JSA_DATA, else ../shared/data next to the repository."""
    env = os.environ.get("JSA_DATA")
    return Path(env) if env else REPO_DATA


def slug(text: str) -> str:
    """'NVIDIA Jetson AGX Orin' -> 'nvidia-jetson-agx-orin' (safe in any file system)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
