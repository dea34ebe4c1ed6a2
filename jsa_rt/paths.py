"""Where jsa-rt's files live: the shipped weights, the engine cache, the shared data folder.
One definition each; everything else imports them from here."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"                  # shipped models (in the package)
ENGINES_DIR = PACKAGE_DIR.parent / "engines"           # built TensorRT engines and exports (git-ignored)
REPO_DATA = PACKAGE_DIR.parents[1] / "shared" / "data"  # ../shared/data next to the repository


def data_root() -> Path:
    """The real images and recordings: $JSA_DATA, else ../shared/data next to the repository."""
    env = os.environ.get("JSA_DATA")
    return Path(env) if env else REPO_DATA
