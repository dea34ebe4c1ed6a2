"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash or Ctrl-C at any point leaves either the previous file or the new one, never half a
file. Every checkpoint, engine, graph, report and log summary in jsa-rt is written through here.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name inside it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes 0600; the result is an ordinary file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:        # make the bytes durable before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritable(path: Path, exc: OSError) -> InputError:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return InputError(f"cannot write {path}: part of {path.parent} is a file, not a folder; "
                          f"choose another output path")
    return InputError(f"cannot write {path}: {exc.strerror or exc} in {path.parent}; "
                      f"choose a folder you can write to")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj, **kwargs) -> Path:
    return write_text(path, json.dumps(obj, indent=2, **kwargs) + "\n")


def refuse_same_file(outputs: dict[str, str | Path | None]) -> None:
    """A one-line error when two output flags ({flag: path}, None = not given) name one file
    (also through a symlink or a hard link): the second write would destroy the first."""
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if not path:
            continue
        resolved = Path(path).expanduser().resolve()
        for other, other_flag in seen.items():
            if other == resolved or (resolved.exists() and other.exists() and os.path.samefile(resolved, other)):
                raise InputError(f"{other_flag} and {flag} both name {path}: one would overwrite the other; "
                                 f"give them different file names")
        seen[resolved] = flag
