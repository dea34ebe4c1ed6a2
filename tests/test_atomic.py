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
