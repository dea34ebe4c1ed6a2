"""The shipped models, by name: which names exist and where their files are. No torch here, so
the runtime and the engine builder resolve names on a machine without PyTorch (a Jetson)."""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError
from .paths import WEIGHTS_DIR

SHIPPED = ("edge-jsa", "edge-jsa-listen", "edge-ezvsl", "paper-jsa")
DEFAULT_MODEL = "edge-jsa"


def resolve_checkpoint(name_or_path: str | Path | None, suffix: str = ".pt") -> Path:
    """A shipped model name (or None for the default) -> its file; a path -> itself."""
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if name in SHIPPED:
        path = WEIGHTS_DIR / f"{name}{suffix}"
        if not path.is_file():
            raise CheckpointError(f"shipped model {name!r} is not in this install ({path}); "
                                  f"train one with `jsa-rt train` or pass --checkpoint PATH")
        return path
    path = Path(name)
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.pt"))[:4])
        raise CheckpointError(f"{path} is a folder, not a checkpoint: pass a .pt file in it "
                              f"({found or 'it has none; a training run writes best.pt and final.pt'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (pass a .pt file or one of {', '.join(SHIPPED)})")
    return path
