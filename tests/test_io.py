"""Crash-safe writes: the old file survives a failed write, no temporary file is left."""

import pytest

from megfm._io import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_cleans(tmp_path):
    path = tmp_path / "store.json"
    atomic_write_text(path, "old", fsync=True)
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("complete report")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(path) as tmp:
        tmp.write_text("half a rep")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "complete report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_keep_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "roc.png", keep_suffix=True) as tmp:
        assert tmp.name == "roc.tmp.png"
        tmp.write_bytes(b"png")
    assert (tmp_path / "roc.png").read_bytes() == b"png"
