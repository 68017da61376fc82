"""megfm.evaluate.scorecard: the study, probes and subject-identity fraction of one model."""

from __future__ import annotations

import json

import numpy as np
import pytest

import megfm
from megfm.evaluate.card import (
    find_ground_truth,
    layer_features,
    scorecard,
    subject_variance_fraction,
)
from megfm.evaluate.riemann import TangentSpaceBlocks, covariance_features
from megfm.models import MaskedSignalModel, ModelConfig


@pytest.fixture(scope="module")
def cohort_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorecard")
    megfm.simulate_cohort(root / "cohort", n_subjects=10, groups=("HC", "migraine"),
                          states=["rest", "auditory"], array="kit160", duration=12.0,
                          sfreq=200.0, block_size=3, seed=3, verbose=False)
    store = root / "store"
    megfm.prepare([root / "cohort"], store, window_seconds=1.0, progress=False, verbose=False)
    return root, store


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    torch.manual_seed(0)
    return MaskedSignalModel(ModelConfig.preset("tiny", sfreq=200.0)).eval()


def test_subject_variance_fraction_limits():
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(50), 10)
    identity = rng.normal(size=(50, 5))[subjects]  # features = subject identity only
    assert subject_variance_fraction(identity, subjects) == pytest.approx(1.0)
    noise = rng.normal(size=(500, 5))
    chance = 49 / 499
    assert subject_variance_fraction(noise, subjects) == pytest.approx(chance, abs=0.04)
    mixed = identity + rng.normal(size=(500, 5))  # half the variance is the subject's
    assert 0.4 < subject_variance_fraction(mixed, subjects) < 0.65


def test_layer_features_shapes_and_order(cohort_store, tiny_model):
    _, store = cohort_store
    feats = layer_features(tiny_model, store, batch_size=16)
    n = megfm.read_store(store).n_windows
    assert set(feats) == {"block1", "block2", "embedding"}
    assert all(v.shape == (n, tiny_model.config.dim) for v in feats.values())
    # the read-out is what megfm.embed returns, in the store's window order
    emb, _ = megfm.embed(tiny_model, store, progress=False)
    np.testing.assert_allclose(feats["embedding"], emb, rtol=1e-4, atol=1e-5)


def test_covariance_features_tangent_space(cohort_store):
    _, store = cohort_store
    cov, names = covariance_features(store, n_components=6)
    assert cov.shape[1] == 21 and len(names) == 21
    ts = TangentSpaceBlocks(n_channels=6).fit(np.concatenate([cov, cov], axis=1))
    out = ts.transform(np.concatenate([cov, cov], axis=1))
    assert out.shape == (len(cov), 42)
    np.testing.assert_allclose(out[:, :21], out[:, 21:])
    # at the reference point (the mean) the tangent vectors average to about zero
    assert np.abs(out.mean(0)).max() < 0.1 * np.abs(out).mean()
    with pytest.raises(ValueError, match="n_channels"):
        TangentSpaceBlocks(n_channels=5).fit(cov)


def test_scorecard_end_to_end(cohort_store, tiny_model, tmp_path):
    root, store = cohort_store
    assert find_ground_truth(store) == root / "cohort" / "ground_truth.json"
    card = scorecard(tiny_model, store, random_seeds=(0, 1), n_splits=2, n_permutations=20,
                     n_bootstrap=20, riemann_components=8, progress=False, out=tmp_path / "sc")
    methods = {m.split("/")[0] for m in card.study.metrics}
    assert methods == {"megfm", "random0", "random1", "raw", "spectral", "megfm+spectral",
                       "riemann"}
    pairs = {(c["reference"], c["other"]) for c in card.study.comparisons}
    assert ("megfm/logreg", "random0/logreg") in pairs
    assert ("megfm+spectral/logreg", "spectral/logreg") in pairs
    assert card.planted_bands == ["theta"]  # the migraine group's planted effect
    assert set(card.probes) == {"block1", "block2", "embedding"}
    assert set(card.probes["embedding"]) == set(megfm.evaluate.BANDS)
    assert all(np.isfinite(v) and v <= 1.0 for r in card.probes.values() for v in r.values())
    assert np.isfinite(card.planted_probe())
    assert 0.0 < card.subject_variance["chance"] < card.subject_variance["spectral"] <= 1.0
    assert 0.0 <= card.auroc("megfm") <= 1.0
    saved = json.loads((tmp_path / "sc" / "scorecard.json").read_text())
    assert saved["planted_bands"] == ["theta"]
    assert "| megfm/logreg |" in (tmp_path / "sc" / "scorecard.md").read_text()


def test_scorecard_without_ground_truth(cohort_store, tiny_model, tmp_path):
    _, store = cohort_store
    windows = megfm.read_store(store)  # in-memory windows: no source to find a truth from
    with pytest.raises(ValueError, match="ground_truth.json"):
        scorecard(tiny_model, windows, progress=False)
    card = scorecard(tiny_model, windows, random_seeds=(), baselines=("spectral",),
                     probe_bands=["alpha"], n_splits=2, n_permutations=0, n_bootstrap=10,
                     progress=False)
    assert card.planted_bands == [] and set(card.probes["embedding"]) == {"alpha"}
    with pytest.raises(ValueError, match="ground_truth.json"):
        card.planted_probe()
    with pytest.raises(ValueError, match="Unknown band"):
        scorecard(tiny_model, windows, probe_bands=["kappa"], progress=False)
    with pytest.raises(ValueError, match="Unknown baseline"):
        scorecard(tiny_model, windows, baselines=("fft",), probe_bands=None, progress=False)
