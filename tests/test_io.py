"""mlsl_gluon.io: whole-or-nothing writes, npz bytes, scratch files for file-only APIs."""
import io
import json
import os

import numpy as np
import pytest

from mlsl_gluon.io import (
    atomic_write_bytes,
    atomic_write_file,
    atomic_write_json,
    atomic_write_text,
    bytes_written_by,
    npz_bytes,
    read_via_file,
)


def test_writes_create_folders_and_replace(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    atomic_write_text(tmp_path / "t.txt", "h\u00e9")
    assert (tmp_path / "t.txt").read_bytes() == "h\u00e9".encode("utf-8")
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "j.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert sorted(os.listdir(path.parent)) == ["f.bin"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"good")

    def half_then_crash(name):
        with open(name, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_file(path, half_then_crash)
    assert path.read_bytes() == b"good"

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_callback_writes_through_the_temporary_name(tmp_path):
    seen = []

    def write(name):
        seen.append(name)
        np.save(name, np.arange(3))

    path = atomic_write_file(tmp_path / "x.npy", write)
    assert os.path.dirname(seen[0]) == str(tmp_path) and seen[0] != path
    np.testing.assert_array_equal(np.load(path), np.arange(3))


def test_npz_bytes_round_trip():
    data = npz_bytes(hist=np.arange(6, dtype=np.int64).reshape(2, 3), shift=np.int64(2))
    with np.load(io.BytesIO(data)) as loaded:
        np.testing.assert_array_equal(loaded["hist"], np.arange(6).reshape(2, 3))
        assert loaded["hist"].dtype == np.int64 and int(loaded["shift"]) == 2


def test_scratch_files_are_removed(tmp_path):
    def write(name):
        with open(name, "wb") as handle:
            handle.write(b"abc")

    assert bytes_written_by(write, str(tmp_path)) == b"abc"
    assert read_via_file(b"xyz", lambda name: open(name, "rb").read(), str(tmp_path)) == b"xyz"
    def refuse(name):
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        read_via_file(b"xyz", refuse, str(tmp_path))
    assert os.listdir(tmp_path) == []
