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
