"""Crash-safe writes: the old file survives a failed write, no temporary file is left."""

import pytest

from megfm._io import atomic_dir, atomic_path, atomic_write_text


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


def test_atomic_dir_swaps_a_whole_folder(tmp_path):
    path = tmp_path / "model"
    with atomic_dir(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path and not any(tmp.iterdir())
        (tmp / "a").write_text("1")
    with atomic_dir(path) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in path.iterdir()) == ["b"]  # the old folder's files are gone
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "model"
    path.mkdir()
    (path / "a").write_text("complete")
    with pytest.raises(RuntimeError, match="crash"), atomic_dir(path) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash while writing")
    assert (path / "a").read_text() == "complete"
    # the final rename fails after the old folder was moved aside: it is put back
    import megfm._io as io

    real = io.os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"), atomic_dir(path) as tmp:
        (tmp / "a").write_text("new")
    assert (path / "a").read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
