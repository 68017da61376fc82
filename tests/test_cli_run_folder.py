"""Every command and function that takes a model takes the run folder of `megfm pretrain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import training_helpers as helpers
from cli_helpers import one_error_line

import megfm
from megfm.cli.main import main
from megfm.models.checkpoint import resolve_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny store and a 2-step `megfm pretrain` run on it."""
    root = tmp_path_factory.mktemp("run_folder")
    store = helpers.tiny_store(root / "store", n_windows=24)
    assert main(["pretrain", str(store), "--out", str(root / "run"), "--max-steps", "2",
                 "--batch-size", "8", "--accelerator", "cpu", "--no-progress",
                 "--val-fraction", "0", "--num-workers", "0"]) == 0
    return store, root / "run"


def test_run_folder_and_its_model_folder_load_the_same_model(run):
    _, out = run
    assert resolve_checkpoint(out) == out / "model"
    assert resolve_checkpoint(out / "model") == out / "model"
    from_run, from_model = megfm.load_pretrained(out), megfm.load_pretrained(out / "model")
    state = from_model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in from_run.state_dict().items())


def test_explain_takes_the_run_folder(run, tmp_path, capsys):
    store, out = run
    assert main(["explain", str(out), str(store), "--out", str(tmp_path / "figs"),
                 "--batch-size", "8", "--no-rollout", "--no-regions"]) == 0
    result = json.loads((tmp_path / "figs" / "explain.json").read_text())
    assert set(result["groups"]) == {"rest", "auditory"}


def test_embed_takes_the_run_folder_and_its_model_folder_alike(run, tmp_path):
    store, out = run
    for name, model in (("run", out), ("model", out / "model")):
        assert main(["embed", str(model), str(store), "--out", str(tmp_path / f"{name}.npz"),
                     "--no-progress"]) == 0
    with np.load(tmp_path / "run.npz") as a, np.load(tmp_path / "model.npz") as b:
        np.testing.assert_array_equal(a["features"], b["features"])


def test_a_run_without_its_exported_model_names_the_resume_command(run, tmp_path, capsys):
    import shutil

    store, out = run
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "model")  # what a run stopped before its export leaves
    with pytest.raises(ValueError, match="without an exported model.*--resume"):
        megfm.load_pretrained(cut)
    assert main(["explain", str(cut), str(store), "--out", str(tmp_path / "figs")]) == 1
    err = one_error_line(capsys.readouterr().err)
    assert "without an exported model" in err and f"--out {cut} --resume" in err
