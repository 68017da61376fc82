"""Subject-level folds: stratified, repeatable, balanced on request, never leaking."""

from __future__ import annotations

import numpy as np
import pytest

from megfm.evaluate.splits import (
    Fold,
    check_no_leak,
    subject_folds,
    subject_labels,
    window_indices,
)


def _cohort(n_hc=12, n_mig=18, windows_per_subject=5):
    subjects = [f"sub-{i:02d}" for i in range(n_hc + n_mig)]
    labels = ["HC"] * n_hc + ["migraine"] * n_mig
    return (np.repeat(subjects, windows_per_subject), np.repeat(labels, windows_per_subject))


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("n_repeats", [1, 3])
def test_folds_never_leak_and_cover_subjects(balanced, n_repeats):
    subjects, labels = _cohort()
    folds = subject_folds(subjects, labels, n_splits=4, n_repeats=n_repeats,
                          balanced_test=balanced, seed=3)
    assert len(folds) == 4 * n_repeats
    uniq = set(subjects.tolist())
    for r in range(n_repeats):
        rep = [f for f in folds if f.repeat == r]
        tested = np.concatenate([f.test for f in rep])
        assert len(tested) == len(set(tested.tolist()))  # each subject tested at most once
        for f in rep:
            # explicit leak check, by subject and by window
            assert not set(f.train.tolist()) & set(f.test.tolist())
            assert set(f.train.tolist()) | set(f.test.tolist()) == uniq
            tr, te = window_indices(f, subjects)
            assert not set(subjects[tr].tolist()) & set(subjects[te].tolist())
            assert len(tr) + len(te) == len(subjects)
        if not balanced:
            assert set(tested.tolist()) == uniq
    check_no_leak(folds)


def test_stratified_and_balanced_test_sets():
    subjects, labels = _cohort(n_hc=10, n_mig=20)
    lab = dict(zip(subjects.tolist(), labels.tolist(), strict=True))
    for f in subject_folds(subjects, labels, n_splits=5, seed=0):
        counts = [lab[s] for s in f.test.tolist()]
        assert counts.count("HC") == 2 and counts.count("migraine") == 4
    for f in subject_folds(subjects, labels, n_splits=5, balanced_test=True, seed=0):
        counts = [lab[s] for s in f.test.tolist()]
        assert counts.count("HC") == counts.count("migraine") == 2


def test_folds_are_seeded():
    subjects, labels = _cohort()
    a = subject_folds(subjects, labels, n_splits=3, seed=1)
    b = subject_folds(subjects, labels, n_splits=3, seed=1)
    c = subject_folds(subjects, labels, n_splits=3, seed=2)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=True))
    r = subject_folds(subjects, labels, n_splits=3, n_repeats=2, seed=1)
    assert not all(np.array_equal(r[i].test, r[i + 3].test) for i in range(3))


def test_check_no_leak_detects_leaks():
    with pytest.raises(RuntimeError, match=r"leak in fold 0: \['b'\]"):
        check_no_leak([Fold(0, 0, np.array(["a", "b"]), np.array(["b", "c"]))])
    subjects = np.array(["a", "a", "b", "b"])
    check_no_leak([(np.array([0, 1]), np.array([2, 3]))], subjects)
    with pytest.raises(RuntimeError, match="leak"):
        check_no_leak([(np.array([0, 2]), np.array([1, 3]))], subjects)


def test_subject_labels():
    subjects, labels = subject_labels(["b", "a", "b"], ["HC", "migraine", "HC"])
    assert subjects.tolist() == ["a", "b"] and labels.tolist() == ["migraine", "HC"]


@pytest.mark.parametrize("subjects, labels, kwargs, match", [
    (["a", "b", "c"], ["HC"] * 3, {"n_splits": 2}, "Only one class"),
    (["a", "a", "b", "c", "d"], ["HC", "migraine", "HC", "migraine", "HC"], {"n_splits": 2},
     "more than one label"),
    (["a", "b", "c", "d"], ["HC", "migraine"] * 2, {"n_splits": 5}, "Only 4 subjects"),
    (["a", "b", "c", "d", "e", "f"], ["HC"] * 4 + ["migraine"] * 2, {"n_splits": 3},
     r"\{'migraine': 2\} are fewer than n_splits=3"),
    (["a", "b"], ["HC"], {}, "same length"),
    (["a", "", "c", "d"], ["HC", "migraine"] * 2, {"n_splits": 2}, "empty subject id"),
    (["a", "b", "c", "d"], ["HC", "migraine"] * 2, {"n_splits": 1}, "'n_splits'"),
    (["a", "b", "c", "d"], ["HC", "migraine"] * 2, {"n_splits": 2, "n_repeats": 0}, "'n_repeats'"),
])
def test_bad_input(subjects, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        subject_folds(np.array(subjects), np.array(labels), **kwargs)
