"""Subject-level cross-validation folds, never a subject in both training and test.

Windows of one subject are strongly correlated, so every split in megfm is made over
subjects and only then mapped to windows. :func:`subject_folds` builds stratified folds
(``StratifiedGroupKFold`` over one row per subject, repeated with different seeds), with an
option for balanced test sets (the same number of subjects of each class in every test
fold, as clinical papers report). :func:`check_no_leak` verifies a list of folds explicitly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

logger = logging.getLogger(__name__)

__all__ = ["Fold", "check_no_leak", "subject_folds", "subject_labels", "window_indices"]


@dataclass(frozen=True)
class Fold:
    """One train/test split over subjects.

    Parameters
    ----------
    repeat : int
        Index of the repetition (0 .. n_repeats - 1).
    fold : int
        Index of the fold within the repetition (0 .. n_splits - 1).
    train : array of str
        Subject ids used for training.
    test : array of str
        Subject ids used for testing.
    """

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def subject_labels(subjects, labels) -> tuple[np.ndarray, np.ndarray]:
    """Collapse per-window subject ids and labels into one label per subject.

    Parameters
    ----------
    subjects : array of str, shape (n_windows,)
        Subject id of each window.
    labels : array of str, shape (n_windows,)
        Label (group) of each window.

    Returns
    -------
    unique_subjects : array of str, shape (n_subjects,)
        Sorted subject ids.
    subject_label : array of str, shape (n_subjects,)
        The label of each subject.

    Raises
    ------
    ValueError
        When lengths differ, a subject id is empty, or a subject's windows carry more than
        one label.
    """
    subjects = np.asarray(subjects).astype(str)
    labels = np.asarray(labels).astype(str)
    if subjects.shape != labels.shape or subjects.ndim != 1:
        raise ValueError(
            f"subjects and labels must be 1-D arrays of the same length; got shapes "
            f"{subjects.shape} and {labels.shape}."
        )
    if len(subjects) and np.any(subjects == ""):
        raise ValueError(
            f"{int(np.sum(subjects == ''))} windows have an empty subject id; subject-level "
            "splits need metadata['subject'] for every window (megfm never falls back to "
            "window-level splits)."
        )
    unique, inverse = np.unique(subjects, return_inverse=True)
    first = np.zeros(len(unique), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(subjects))[::-1]
    subject_label = labels[first]
    conflict = subject_label[inverse] != labels
    if np.any(conflict):
        bad = sorted(set(subjects[conflict].tolist()))
        detail = {
            s: sorted(set(labels[subjects == s].tolist())) for s in bad[:3]
        }
        raise ValueError(
            f"{len(bad)} subject(s) have windows with more than one label, e.g. {detail}; "
            "a subject belongs to one group. Fix the labels (participants.tsv) or use "
            "distinct subject ids."
        )
    return unique, subject_label


def _check_counts(subject_label: np.ndarray, n_splits: int) -> None:
    classes, counts = np.unique(subject_label, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"Only one class ({classes.tolist()}) among the subjects; classification needs "
            "subjects of at least two groups."
        )
    if n_splits < 2:
        raise ValueError(f"Invalid value for 'n_splits': expected an int >= 2; got {n_splits}.")
    if len(subject_label) < n_splits:
        raise ValueError(
            f"Only {len(subject_label)} subjects for n_splits={n_splits} folds; lower "
            "n_splits or add subjects (folds are made over subjects, never windows)."
        )
    small = {str(c): int(n) for c, n in zip(classes, counts, strict=True) if n < n_splits}
    if small:
        raise ValueError(
            f"Subjects per class {small} are fewer than n_splits={n_splits}; every fold "
            "needs subjects of each class. Lower n_splits or add subjects."
        )


def _balanced_split(y: np.ndarray, n_splits: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Test index sets with the same number of subjects of each class in every fold."""
    chunks = {}
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        chunks[c] = np.array_split(members, n_splits)
    tests = []
    for f in range(n_splits):
        k = min(len(ch[f]) for ch in chunks.values())
        tests.append(np.sort(np.concatenate([ch[f][:k] for ch in chunks.values()])))
    return tests


def subject_folds(subjects, labels, *, n_splits: int = 5, n_repeats: int = 1,
                  balanced_test: bool = False, seed: int = 0) -> list[Fold]:
    """Stratified, subject-level K-fold splits, optionally repeated.

    Parameters
    ----------
    subjects : array of str, shape (n_windows,) or (n_subjects,)
        Subject id of each window (or of each subject).
    labels : array of str, same shape as ``subjects``
        Label of each window; all windows of a subject must share it.
    n_splits : int
        Number of folds (>= 2; every class needs at least this many subjects).
    n_repeats : int
        Number of repetitions with different shuffles.
    balanced_test : bool
        If True, every test fold holds the same number of subjects of each class; subjects
        of the larger classes that do not fit stay in training for that fold (so some are
        never tested in a repetition; use ``n_repeats > 1`` to cover them).
    seed : int
        Seed of the shuffles; repetition ``r`` uses ``seed + r``.

    Returns
    -------
    folds : list of Fold
        ``n_repeats * n_splits`` folds, repetition-major.

    Raises
    ------
    ValueError
        On a single class, a subject with two labels, fewer subjects than folds, or a
        class with fewer subjects than folds.
    """
    if int(n_repeats) < 1:
        raise ValueError(f"Invalid value for 'n_repeats': expected an int >= 1; got {n_repeats}.")
    unique, y = subject_labels(subjects, labels)
    _check_counts(y, int(n_splits))
    folds: list[Fold] = []
    for r in range(int(n_repeats)):
        if balanced_test:
            rng = np.random.default_rng([int(seed), r])
            tests = _balanced_split(y, int(n_splits), rng)
        else:
            # One row per subject, the subject as its own group: stratification counts
            # subjects, not windows.
            cv = StratifiedGroupKFold(n_splits=int(n_splits), shuffle=True,
                                      random_state=int(seed) + r)
            tests = [test for _, test in cv.split(np.zeros(len(y)), y, groups=unique)]
        for f, test in enumerate(tests):
            train = np.setdiff1d(np.arange(len(y)), test)
            folds.append(Fold(repeat=r, fold=f, train=unique[train], test=unique[test]))
    check_no_leak(folds)
    logger.info("%d subject-level folds (%d x %d) over %d subjects", len(folds), n_repeats,
                n_splits, len(unique))
    return folds


def check_no_leak(folds, subjects=None) -> None:
    """Raise if any fold shares a subject between training and test.

    Parameters
    ----------
    folds : list of Fold | list of (train, test)
        Subject-level folds (:class:`Fold`, subject ids) or window-level pairs of index
        arrays, in which case ``subjects`` maps window indices to subject ids.
    subjects : array of str, shape (n_windows,) | None
        Subject id of each window, for window-index folds.

    Raises
    ------
    RuntimeError
        Naming the fold and the leaked subjects.
    """
    subj = None if subjects is None else np.asarray(subjects).astype(str)
    for i, fold in enumerate(folds):
        train, test = (fold.train, fold.test) if isinstance(fold, Fold) else fold
        train, test = np.asarray(train), np.asarray(test)
        if subj is not None:
            train, test = subj[train.astype(np.int64)], subj[test.astype(np.int64)]
        shared = np.intersect1d(train.astype(str), test.astype(str))
        if len(shared):
            raise RuntimeError(
                f"Subject leak in fold {i}: {shared[:5].tolist()} are in both training and "
                "test. This is a bug; please report it."
            )


def window_indices(fold: Fold, subjects) -> tuple[np.ndarray, np.ndarray]:
    """Map a subject-level fold to window indices.

    Parameters
    ----------
    fold : Fold
        A fold over subject ids.
    subjects : array of str, shape (n_windows,)
        Subject id of each window.

    Returns
    -------
    train_idx, test_idx : array of int
        Indices of the windows of the training and test subjects.
    """
    subjects = np.asarray(subjects).astype(str)
    train_idx = np.flatnonzero(np.isin(subjects, fold.train))
    test_idx = np.flatnonzero(np.isin(subjects, fold.test))
    return train_idx, test_idx
