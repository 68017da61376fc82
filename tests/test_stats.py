"""Metrics, bootstrap confidence intervals and the paired permutation test."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from megfm.evaluate.stats import (
    METRICS,
    bootstrap_metrics,
    compute_metrics,
    paired_permutation_test,
)


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    score = np.round(y * 0.7 + rng.normal(size=50), 1)  # rounded: ties
    pred = (score > 0.3).astype(int)
    m = compute_metrics(y, score, pred)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, score))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    # two-column probabilities are read as the positive class column
    m2 = compute_metrics(y, np.c_[1 - score, score], pred)
    assert m2 == pytest.approx(m)


def test_known_answers():
    y = np.array([0, 0, 1, 1])
    assert compute_metrics(y, [0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])["auroc"] == 1.0
    assert compute_metrics(y, [0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])["balanced_accuracy"] == 0.0
    m = compute_metrics(y, [0.1, 0.6, 0.4, 0.9], [0, 1, 0, 1])
    assert m == {"auroc": 0.75, "balanced_accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5}


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet([1, 1, 1], 60)
    proba[np.arange(60), y] += 0.3
    proba /= proba.sum(1, keepdims=True)
    m = compute_metrics(y, proba, proba.argmax(1))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, proba.argmax(1)))


def test_bootstrap_ci_brackets_value_and_is_seeded():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 30)
    score = y + rng.normal(size=60)
    pred = (score > 0.5).astype(int)
    a = bootstrap_metrics(y, score, pred, n_bootstrap=500, seed=4)
    b = bootstrap_metrics(y, score, pred, n_bootstrap=500, seed=4)
    assert a == b and set(a) == set(METRICS)
    for v in a.values():
        assert v["ci_low"] <= v["value"] <= v["ci_high"]
        assert 0 < v["ci_high"] - v["ci_low"] < 0.5
    wide = bootstrap_metrics(y[::3], score[::3], pred[::3], n_bootstrap=500, seed=4)
    assert (wide["auroc"]["ci_high"] - wide["auroc"]["ci_low"]
            > a["auroc"]["ci_high"] - a["auroc"]["ci_low"])


def test_bootstrap_ci_covers_chance_under_null():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 30)
    score = rng.normal(size=60)
    ci = bootstrap_metrics(y, score, (score > 0).astype(int), seed=0)["auroc"]
    assert ci["ci_low"] < 0.5 < ci["ci_high"]


def test_permutation_test_detects_difference_and_not_null():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 30)
    good = y * 2 + rng.normal(size=60)
    noise = rng.normal(size=60)
    res = paired_permutation_test(y, good, noise, n_permutations=999, seed=0)
    assert res["p_value"] < 0.01 and res["difference"] > 0.3
    assert res["auroc_a"] == pytest.approx(roc_auc_score(y, good))
    # scale does not matter: a monotone transform of a method is the same method
    same = paired_permutation_test(y, good, 1e3 * good + 7, n_permutations=200, seed=0)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    # two equally informative methods: no significant difference
    a, b = y + rng.normal(size=60), y + rng.normal(size=60)
    assert paired_permutation_test(y, a, b, n_permutations=500, seed=1)["p_value"] > 0.05
    # seeded
    assert (paired_permutation_test(y, a, noise, seed=5)
            == paired_permutation_test(y, a, noise, seed=5))
    # minimum p-value is 1 / (n + 1)
    assert res["p_value"] >= 1 / 1000


def test_permutation_test_multiclass():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1, 2], 20)
    good = np.eye(3)[y] + 0.5 * rng.random((60, 3))
    bad = rng.random((60, 3))
    assert paired_permutation_test(y, good, bad, n_permutations=300)["p_value"] < 0.01


@pytest.mark.parametrize("args, err, match", [
    ((np.array([0, 1]), np.array([0.1, 0.2, 0.3]), np.array([0, 1])), ValueError, "shape"),
    ((np.array([0.0, 1.0]), np.array([0.1, 0.2]), np.array([0, 1])), TypeError, "integer"),
    ((np.array([0, 1]), np.array([0.1, np.nan]), np.array([0, 1])), ValueError, "NaN"),
    ((np.array([0, 1]), np.array([0.1, 0.2]), np.array([0, 1, 1])), ValueError, "pred"),
])
def test_bad_input(args, err, match):
    with pytest.raises(err, match=match):
        compute_metrics(*args)
    with pytest.raises(ValueError, match="'ci'"):
        bootstrap_metrics(np.array([0, 1]), np.array([0.1, 0.2]), np.array([0, 1]), ci=95)
