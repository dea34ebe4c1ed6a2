"""The shipped models, by name: which names exist and where their files are. No torch here, so
the runtime and the engine builder resolve names on a machine without PyTorch (a Jetson)."""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError
from .paths import WEIGHTS_DIR

SHIPPED = ("edge-jsa", "edge-jsa-listen", "edge-ezvsl", "edge-ezvsl-listen", "paper-jsa")
DEFAULT_MODEL = "edge-jsa-listen"     # listens: see the README's Listening section

# What a shipped model's training data allows, where that limits its use; `live` and `demo` say it
# when they run the model (jsa_rt/weights/MODELS.md has every model's data and terms).
_URBANSOUND = "non-commercial use only: trained on UrbanSound8K (CC BY-NC 3.0); for other uses pass --model "
TERMS = {"edge-jsa-listen": _URBANSOUND + "edge-jsa (it does not listen: jsa_rt/weights/MODELS.md)",
         "edge-ezvsl-listen": _URBANSOUND + "edge-ezvsl (trained without it: jsa_rt/weights/MODELS.md)"}


def terms_line(model: str | None) -> str | None:
    """The terms notice for a shipped model name (None: the default), or None."""
    name = DEFAULT_MODEL if model is None else str(model)
    return f"model {name}: {TERMS[name]}" if name in TERMS else None


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
