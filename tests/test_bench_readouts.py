"""benchmarks/bench_readouts.py: --readouts scores only the named read-outs, and refuses others."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import megfm
from megfm.models import MaskedSignalModel, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_readouts  # noqa: E402


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("readouts")
    megfm.simulate_cohort(root / "cohort", n_subjects=10, groups=("HC", "migraine"),
                          states=["rest"], array="kit160", duration=8.0, sfreq=200.0,
                          seed=4, verbose=False)
    megfm.prepare([root / "cohort"], root / "store", window_seconds=1.0, progress=False,
                  verbose=False)
    return root / "store"


def test_only_the_named_readouts_are_scored(labelled_store):
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset("tiny", sfreq=200.0)).eval()
    rows = bench_readouts.score_store(model, labelled_store, [1], n_permutations=20,
                                      only=["block1|none", "final|pca20"])
    assert set(rows) == {"block1|none", "final|pca20"}
    for row in rows.values():
        assert set(row["auroc"]) == {"megfm", "random1", "raw", "spectral"}
        assert all(0.0 <= v <= 1.0 for v in row["auroc"].values())


def test_unknown_readout_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_readouts.main(["--checkpoint", "tiny", "--stores", "nowhere",
                             "--readouts", "block9|none"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown --readouts ['block9|none']" in err and "block2|none" in err
