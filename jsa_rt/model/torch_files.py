"""Reading PyTorch weight files: one `torch.load` for checkpoints, official imports and ImageNet
trunks. `weights_only` always (a file from elsewhere must not run code), and a file that does not
load is a one-line error naming the file and what to do."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError


def load_torch_file(path: str | Path, what: str, fix: str):
    """The object saved in `path`; `what` names the kind of file, `fix` the remedy."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable {what} ({type(exc).__name__}): the file is "
                              f"corrupt or truncated; {fix}") from None


def load_trunk(trunk: torch.nn.Module, path: str | Path, drop_prefix: str, what: str, fix: str) -> None:
    """ImageNet weights into an image encoder trunk, without the classifier (`drop_prefix`)."""
    state = load_torch_file(path, what, fix)
    try:
        trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith(drop_prefix)})
    except (AttributeError, RuntimeError):
        raise CheckpointError(f"{path} is not a {what} state dict; {fix}") from None
