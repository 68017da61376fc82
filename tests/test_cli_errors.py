"""Known failures reach a CLI user as one line naming the file and the fix, exit code 1."""

from __future__ import annotations

import pytest
import training_helpers as helpers

from megfm.cli.main import main, one_line


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny store and a 2-step run on it."""
    root = tmp_path_factory.mktemp("trained")
    store = helpers.tiny_store(root / "store", n_windows=12)
    helpers.tiny_store(store, n_windows=12, seed=1)
    assert main(["pretrain", str(store), "--out", str(root / "run"), "--max-steps", "2",
                 "--batch-size", "8", "--accelerator", "cpu", "--no-progress"]) == 0
    return store, root / "run"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("megfm ")
    return err


def _truncated_copy(store, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    shard = copy / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:5000])
    return copy


def test_truncated_shard_in_embed_and_pretrain(trained, tmp_path, capsys):
    store, run = trained
    bad = _truncated_copy(store, tmp_path)
    assert main(["embed", str(run), str(bad), "--out", str(tmp_path / "f.npz"),
                 "--no-progress"]) == 1
    err = _one_error_line(capsys)
    assert "shard-00001.h5: it is truncated or corrupt" in err and "re-create" in err
    assert main(["pretrain", str(bad), "--out", str(tmp_path / "run"), "--max-steps", "2",
                 "--accelerator", "cpu", "--no-progress"]) == 1
    assert "shard-00001.h5: it is truncated or corrupt" in _one_error_line(capsys)


def test_one_line_keeps_the_message_of_a_dataloader_worker_error():
    wrapped = OSError("Caught OSError in DataLoader worker process 0.\nOriginal Traceback "
                      "(most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"
                      "OSError: Cannot read windows from shard s/shard-00000.h5: it is corrupt")
    assert one_line(wrapped) == ("Cannot read windows from shard s/shard-00000.h5: it is "
                                 "corrupt")
    assert one_line(ValueError("two\nlines")) == "two lines"
