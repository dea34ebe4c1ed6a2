"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash or Ctrl-C at any point leaves either the previous file or the new one, never half a
file. Every checkpoint, engine, graph, report and log summary in jsa-rt is written through here.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from .errors import InputError, JsaError


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
    except BaseException as exc:
        full = isinstance(exc, Exception) and disk_full(exc, path.parent)     # asked before the space is freed
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise disk_full_error(path) from None
        raise


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NEARLY_FULL_BYTES = 1 << 20         # a library's own write error (torch, libsndfile) with less left = full


def disk_full(exc: BaseException, folder: str | Path | None = None) -> bool:
    """Whether `exc` (or what caused it) is a full disk or an exhausted quota. Libraries that wrap
    the OS error in their own (torch.save, libsndfile) count when `folder`'s disk has (almost) no
    room left; ask before removing the partial file, which frees that room."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if any(os.strerror(e) in str(seen) for e in DISK_FULL_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    if folder is None or isinstance(exc, (OSError, JsaError)):
        return False                    # an OSError says what it is; a one-line error already is one
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES


def disk_full_error(path: str | Path) -> InputError:
    return InputError(f"cannot write {path}: the disk is full (or your quota is used up) in {Path(path).parent}; "
                      f"free some space or choose another folder")


def _unwritable(path: Path, exc: OSError) -> InputError:
    if exc.errno in DISK_FULL_ERRNOS:
        return disk_full_error(path)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return InputError(f"cannot write {path}: part of {path.parent} is a file, not a folder; "
                          f"choose another output path")
    return InputError(f"cannot write {path}: {exc.strerror or exc} in {path.parent}; "
                      f"choose a folder you can write to")


_OPEN_FLAGS = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
               "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}


def refuse_symlink(path: str | Path, what: str = "") -> None:
    """A one-line error when `path` itself is a symbolic link: a file written in place through it
    would be the one it points to (a log named like another file, or a link planted in a shared
    folder). Folders above it may be links."""
    path = Path(path)
    if path.is_symlink():
        raise InputError(f"{what + ' ' if what else ''}{path} is a symbolic link (to {os.readlink(path)}): "
                         f"refusing to write through it; give the path of a plain file, or remove the link")


def open_no_follow(path: str | Path, mode: str = "w", what: str = "", **kwargs):
    """open(path, mode) for a file written in place ("w", "a", "a+"), never through a symbolic
    link (O_NOFOLLOW: no gap between a check and the open)."""
    try:
        fd = os.open(path, _OPEN_FLAGS[mode] | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path, what)
        raise
    return os.fdopen(fd, mode, **kwargs)


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
