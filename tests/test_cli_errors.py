"""Known failures reach a CLI user as one line naming the file and the fix, exit code 1."""

from __future__ import annotations

import pytest
import training_helpers as helpers
from cli_helpers import one_error_line

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
    return one_error_line(capsys.readouterr().err)


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


def _damage(path, how):
    import numpy as np

    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                      "random": np.random.default_rng(0).bytes(len(data))}[how])


@pytest.mark.parametrize("how", ["empty", "truncated", "random"])
def test_select_checkpoint_skips_damaged_ones(tmp_path, how):
    import torch

    from megfm.training import _checkpoints

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name, step in [("previous-step=2.ckpt", 2), ("previous-step=4.ckpt", 4),
                       ("last.ckpt", 6)]:
        torch.save({"state_dict": {}, "global_step": step}, folder / name)
    assert _checkpoints.select_checkpoint(folder) == folder / "last.ckpt"
    _damage(folder / "last.ckpt", how)
    assert "weights_only" not in _checkpoints.problem(folder / "last.ckpt")
    assert _checkpoints.select_checkpoint(folder) == folder / "previous-step=4.ckpt"
    assert (folder / "last.ckpt.corrupt").is_file() and not (folder / "last.ckpt").exists()
    for name in ("previous-step=4.ckpt", "previous-step=2.ckpt"):
        _damage(folder / name, how)
    with pytest.raises(_checkpoints.NoValidCheckpointError,
                       match=r"no checkpoint in .* can be loaded \(previous-step=4.ckpt: it is "):
        _checkpoints.select_checkpoint(folder)


def _weights(run):
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


def test_resume_falls_back_to_an_older_checkpoint_and_keeps_k(tmp_path, capsys):
    import shutil

    import torch

    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    base = ["pretrain", str(store), "--batch-size", "4", "--accelerator", "cpu",
            "--no-progress", "--checkpoint-every", "2", "--val-fraction", "0",
            "--max-steps", "8"]
    assert main(base + ["--out", str(tmp_path / "full")]) == 0
    ckpts = tmp_path / "full" / "checkpoints"
    # 3 kept: last.ckpt (step 8) and the two before it
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == [
        "last.ckpt", "previous-step=4.ckpt", "previous-step=6.ckpt"]
    run = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", run)
    shutil.rmtree(run / "model")
    ckpts = run / "checkpoints"
    _damage(ckpts / "last.ckpt", "random")  # the newest is damaged: resume from step 6
    capsys.readouterr()
    assert main(base + ["--out", str(run), "--resume"]) == 0
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 8
    assert (ckpts / "last.ckpt.corrupt").is_file()
    full, resumed = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # as if never interrupted
    # every checkpoint damaged: one line, the way forward, never torch's weights_only advice
    for path in ckpts.glob("*.ckpt"):
        _damage(path, "random")
    assert main(base[:-1] + ["9", "--out", str(run), "--resume"]) == 1
    err = _one_error_line(capsys)
    assert "no checkpoint in" in err and "--overwrite" in err and "weights_only" not in err


def test_a_run_killed_before_its_first_checkpoint_is_not_circular(tmp_path, capsys):
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    run = tmp_path / "run"
    base = ["pretrain", str(store), "--out", str(run), "--batch-size", "4", "--accelerator",
            "cpu", "--no-progress", "--max-steps", "2", "--val-fraction", "0"]
    (run / "checkpoints").mkdir(parents=True)  # what a run killed at its first step leaves
    (run / "run.json").write_text("{}")
    assert main(base) == 1
    err = _one_error_line(capsys)
    assert "stopped before its first checkpoint" in err and "--overwrite" in err
    assert main(base + ["--resume"]) == 1
    err = _one_error_line(capsys)
    assert "stopped before its first checkpoint" in err and "--overwrite" in err
    assert main(base + ["--overwrite"]) == 0


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupted_window_in_embed_names_window_shard_and_checksum(trained, tmp_path, capsys,
                                                                   workers):
    import shutil

    import h5py

    store, run = trained
    bad = tmp_path / "store"
    shutil.copytree(store, bad)
    with h5py.File(bad / "shard-00001.h5", "r") as f:
        chunk = f["data"].id.get_chunk_info_by_coord((2, 0, 0))
    with open(bad / "shard-00001.h5", "r+b") as fid:  # finite garbage in window 14's chunk
        fid.seek(chunk.byte_offset + 16)
        fid.write(b"\x00\x00\x80\x3f" * 256)
    assert main(["embed", str(run), str(bad), "--out", str(tmp_path / "f.npz"), "--no-progress",
                 "--num-workers", workers]) == 1
    err = _one_error_line(capsys)
    assert "window 14 (row 2) from shard" in err and "shard-00001.h5" in err
    assert "checksum does not match" in err and "DataLoader" not in err


def test_nan_window_in_embed_is_named_by_store_index_shard_and_recording(trained, tmp_path,
                                                                         capsys):
    import shutil

    import h5py

    store, run = trained
    bad = tmp_path / "store"
    shutil.copytree(store, bad)
    with h5py.File(bad / "shard-00001.h5", "r+") as f:  # checksum rewritten with the NaN
        f["data"][5, 1, 3] = float("nan")
    assert main(["embed", str(run), str(bad), "--out", str(tmp_path / "f.npz"),
                 "--no-progress"]) == 1
    err = _one_error_line(capsys)
    assert "store index [17] have NaN or Inf samples (embed)" in err
    assert "window 17 (row 5 of shard-00001.h5" in err and "of the batch" not in err


def test_random_model_weights_give_one_line_without_torch_advice(trained, tmp_path, capsys):
    import json
    import shutil

    import numpy as np

    store, run = trained
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    noise = np.random.default_rng(0).bytes(5000)
    (bad / "model" / "model.safetensors").write_bytes(noise)
    assert main(["embed", str(bad), str(store), "--out", str(tmp_path / "f.npz"),
                 "--no-progress"]) == 1
    err = _one_error_line(capsys)
    assert "model.safetensors does not match the sha256 recorded in config.json" in err
    # an old pickle-based export (weights.pt, format 1) holding random bytes
    config = json.loads((bad / "model" / "config.json").read_text())
    config["format_version"] = 1
    config.pop("weights", None)
    (bad / "model" / "config.json").write_text(json.dumps(config))
    (bad / "model" / "model.safetensors").unlink()
    (bad / "model" / "weights.pt").write_bytes(noise)
    assert main(["embed", str(bad), str(store), "--out", str(tmp_path / "f.npz"),
                 "--no-progress"]) == 1
    err = _one_error_line(capsys)
    assert "weights.pt: the file is truncated, corrupt or holds objects other than tensors " \
        "(UnpicklingError)" in err
    assert "weights_only" not in err
