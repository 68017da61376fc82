"""LitData export of a store: same windows, same API, same training, clear errors."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import h5py
import lightning.pytorch as pl
import numpy as np
import pytest
import training_helpers as helpers
from cli_helpers import one_error_line

pytest.importorskip("litdata")

from megfm.cli.main import main  # noqa: E402
from megfm.data.store import open_store, read_store, write_store  # noqa: E402
from megfm.data.streaming import LitDataReader, export_litdata  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


def _two_layouts(path, *, n_windows=20, dtype="float32"):
    """A store of 40 windows from two recordings with 6 and 9 sensors (10 subjects)."""
    write_store(helpers.tiny_windows(n_windows=n_windows, n_sensors=6, n_subjects=10),
                path, dtype=dtype)
    write_store(helpers.tiny_windows(n_windows=n_windows, n_sensors=9, n_subjects=10, seed=1),
                path, dtype=dtype)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    store = _two_layouts(root / "store")
    # small chunks: a window's reads cross chunk boundaries
    return store, export_litdata(store, root / "export", chunk_bytes="8KB")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_export_reads_back_the_same_windows(tmp_path, dtype):
    store = _two_layouts(tmp_path / "store", n_windows=8, dtype=dtype)
    export = export_litdata(store, tmp_path / "export", chunk_bytes="8KB")
    reader = open_store(export)
    assert isinstance(reader, LitDataReader) and reader.dtype == dtype
    a, b = read_store(store), read_store(export)
    assert np.array_equal(a.data, b.data)  # bit-exact, in store order
    assert a.metadata.keys() == b.metadata.keys()
    assert all(np.array_equal(a.metadata[k], b.metadata[k]) for k in a.metadata)
    assert [g.names for g in a.geometries] == [g.names for g in b.geometries]
    assert np.array_equal(a.geometries[1].positions, b.geometries[1].positions)
    rows = reader.read_rows(1, np.array([3, 0, 3]), dtype=None)  # any order, repeats
    assert rows.dtype == np.dtype(dtype) and rows.shape == (3, 9, a.n_times)
    assert np.array_equal(rows[0], rows[2]) and np.array_equal(rows[1], b.data[8, :9])
    assert "item 9 of the LitData export" in reader.describe(9)


def test_export_is_idempotent_and_never_overwrites_by_accident(exported, tmp_path):
    store, export = exported
    stamp = (export / "megfm.h5").stat().st_mtime_ns
    assert export_litdata(store, export) == export  # the same store: nothing to do
    assert (export / "megfm.h5").stat().st_mtime_ns == stamp
    other = _two_layouts(tmp_path / "other", n_windows=4)
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    with pytest.raises(FileExistsError, match="another store; pass overwrite=True"):
        export_litdata(other, copy)
    export_litdata(other, copy, overwrite=True)
    assert len(open_store(copy)) == 8
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a megfm LitData export"):
        export_litdata(store, tmp_path / "busy")
    assert not list(tmp_path.glob(".export.tmp-*"))  # no temporary folder left behind
    with pytest.raises(ValueError, match="writes to a local folder"):
        export_litdata(store, "s3://bucket/export")


def test_embed_and_pretrain_from_the_export_match_the_store(exported, tmp_path):
    import megfm
    from megfm.training import load_metrics, pretrain

    store, export = exported
    model = helpers.tiny_model()
    f_store, m_store = megfm.embed(model, store, progress=False)
    f_export, m_export = megfm.embed(model, export, progress=False)
    assert np.array_equal(f_store, f_export)
    assert np.array_equal(m_store["subject"], m_export["subject"])
    losses = []
    for name, source in (("a", store), ("b", export)):
        pretrain(source, tmp_path / name, model="tiny", max_steps=4, batch_size=4,
                 accelerator="cpu", progress=False, seed=0, val_fraction=0.2,
                 log_every_n_steps=1)
        losses.append(load_metrics(tmp_path / name)["train/loss_step"])
    # same sampler, same order, same windows: the same loss at every step
    assert np.isfinite(losses[0]).sum() == 4
    np.testing.assert_array_equal(losses[0], losses[1])


DDP = textwrap.dedent('''
    import sys
    import torch
    from megfm.training import pretrain

    torch.set_num_threads(1)
    source, out = sys.argv[1:3]
    pretrain(source, out, model="tiny", max_steps=6, batch_size=4, devices=2,
             accelerator="cpu", strategy="ddp", val_fraction=0.2, progress=False, seed=0,
             log_every_n_steps=1)
''')


def test_two_process_loss_curve_matches_the_store(exported, tmp_path):
    from megfm.training import load_metrics

    store, export = exported
    for name, source in (("a", store), ("b", export)):
        done = helpers.run_ddp_script(DDP, tmp_path, source, tmp_path / name, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (load_metrics(tmp_path / n)["train/loss_step"] for n in ("a", "b"))
    assert np.isfinite(a).sum() == 6
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bad_exports_give_one_line(exported, tmp_path, capsys):
    store, export = exported
    index = json.loads((export / "index.json").read_text())["chunks"]
    missing, truncated, newer = (tmp_path / n for n in ("missing", "truncated", "newer"))
    for copy in (missing, truncated, newer):
        shutil.copytree(export, copy)
    (missing / index[2]["filename"]).unlink()
    chunk = truncated / index[3]["filename"]
    chunk.write_bytes(chunk.read_bytes()[:100])
    with h5py.File(newer / "megfm.h5", "r+") as f:
        f.attrs["format_version"] = 99
        f.attrs["megfm_version"] = "9.0"
    cases = [(missing, f"Chunk {index[2]['filename']} of the LitData export"),
             (truncated, f"{index[3]['filename']} of the LitData export"),
             (truncated, "is truncated (100 of"),
             (newer, "written by megfm 9.0 in export format 'megfm-litdata' version 99")]
    for bad, expected in cases:
        out = tmp_path / f"f{abs(hash(expected))}.npz"
        assert main(["embed", str(_model_folder(tmp_path)), str(bad), "--out", str(out),
                     "--no-progress"]) == 1
        assert expected in one_error_line(capsys.readouterr().err)


def _model_folder(tmp_path):
    """A tiny model folder (untrained) for the embed command."""
    path = tmp_path / "model"
    if not (path / "config.json").exists():
        helpers.tiny_model().save_pretrained(path)
    return path


def test_object_store_without_credentials_names_the_variables(tmp_path, capsys, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEGFM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup
    assert main(["embed", str(_model_folder(tmp_path)), "s3://megfm-test-no-bucket/export",
                 "--out", str(tmp_path / "f.npz"), "--no-progress"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no credentials for s3://" in line and "AWS_ACCESS_KEY_ID" in line


def test_export_command(exported, tmp_path, capsys):
    store, _ = exported
    assert main(["export", str(store), str(tmp_path / "exp"), "--chunk-bytes", "16KB"]) == 0
    assert "40 windows of 2 recording(s)" in capsys.readouterr().out
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", str(store), str(tmp_path / "busy")]) == 1
    assert "not a megfm LitData export" in one_error_line(capsys.readouterr().err)


class _LoseChunks(pl.Callback):
    """Move every chunk of an export away before global step ``at`` (a disk gone bad)."""

    def __init__(self, export: Path, aside: Path, at: int) -> None:
        self.export, self.aside, self.at = export, aside, at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at and not self.aside.exists():
            self.aside.mkdir()
            for chunk in self.export.glob("chunk-*.bin"):
                chunk.rename(self.aside / chunk.name)


def test_chunks_lost_during_a_run_are_named_and_nothing_trained_is_lost(exported, tmp_path):
    from megfm.training import load_metrics, pretrain

    store, export = exported
    export = Path(shutil.copytree(export, tmp_path / "export"))
    aside = tmp_path / "aside"
    kw = dict(model="tiny", max_steps=8, batch_size=4, accelerator="cpu", progress=False,
              seed=0, val_fraction=0.2, log_every_n_steps=1, checkpoint_every=2, num_workers=0)
    pretrain(export, tmp_path / "full", **kw)
    with pytest.raises(OSError, match=r"Chunk chunk-\S+ of the LitData export .* is missing"):
        pretrain(export, tmp_path / "cut", callbacks=[_LoseChunks(export, aside, at=5)], **kw)
    for chunk in aside.iterdir():  # the user restores the chunks and resumes
        chunk.rename(export / chunk.name)
    pretrain(export, tmp_path / "cut", resume=True, **kw)
    full, cut = (load_metrics(tmp_path / n)["train/loss_step"] for n in ("full", "cut"))
    np.testing.assert_allclose(cut, full, rtol=1e-6)  # the resumed curve is the same curve
