"""Atomic writes: all or nothing, and the result is an ordinary file (not mkstemp's 0600)."""
import os

import pytest

from jsa_rt.atomic import atomic_path, write_json, write_text


def test_written_file_has_default_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(mask)
    assert path.read_text() == "hello"
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_json(tmp_path / "r.json", {"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi")
            raise KeyboardInterrupt
    assert path.read_text().strip().endswith("}") and '"v": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_unwritable_targets_are_one_line_errors_and_leave_no_temp(tmp_path):
    from jsa_rt.errors import InputError
    a_file = write_text(tmp_path / "a.txt", "hello")
    (tmp_path / "folder").mkdir()
    for target, needle in ((a_file / "out.json", "is a file, not a folder"),
                           (a_file / "deeper" / "out.json", "is a file, not a folder"),
                           (tmp_path / "folder", "it is a folder")):
        with pytest.raises(InputError, match=needle):
            write_json(target, {"v": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "folder"]
    assert not any((tmp_path / "folder").iterdir())


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_temp(tmp_path, monkeypatch, code):
    """Issue 16.7: a full disk gave a traceback (export-onnx, localize, make-scenes all write here)."""
    import errno
    from pathlib import Path
    from jsa_rt.atomic import write_bytes
    from jsa_rt.errors import InputError
    target = write_text(tmp_path / "model.onnx", "the old one")

    def full(self, data):
        with open(self, "wb") as f:
            f.write(data[:3])                                 # part of it went in, then the disk filled
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(InputError) as err:
        write_bytes(target, b"the new graph")
    message = str(err.value)
    assert "the disk is full" in message and str(target) in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]          # no .model.onnx.*.tmp left
    assert target.read_text() == "the old one"


def test_a_full_disk_when_creating_the_temp_file_is_one_line(tmp_path, monkeypatch):
    import errno
    import tempfile
    from jsa_rt.errors import InputError

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(tempfile, "mkstemp", no_room)
    with pytest.raises(InputError, match="the disk is full"):
        write_text(tmp_path / "scenes.json", "{}")


def test_a_librarys_own_write_error_counts_as_full_only_when_the_disk_is(tmp_path, monkeypatch):
    """torch.save and libsndfile raise RuntimeError, not OSError: the free space decides."""
    from jsa_rt.errors import InputError

    def torch_like():
        with atomic_path(tmp_path / "last.pt") as tmp:
            tmp.write_bytes(b"PK")
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):       # room left: not a full disk
        torch_like()

    class Full:
        f_bavail, f_frsize = 3, 4096
    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    with pytest.raises(InputError, match=r"last.pt: the disk is full"):
        torch_like()
    assert list(tmp_path.iterdir()) == []
