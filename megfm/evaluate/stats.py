"""Metrics, bootstrap confidence intervals and paired permutation tests over subjects.

Every function takes one row per subject: true class codes ``y`` (ints), continuous scores
(1-D for two classes: higher = more likely the positive class 1; 2-D ``(n, n_classes)``
probabilities for more) and hard predictions ``pred``. AUROC is computed from ranks
(Mann-Whitney U with average ranks for ties), vectorised over resamples, so 1000
bootstrap resamples or permutations cost milliseconds.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["METRICS", "bootstrap_metrics", "compute_metrics", "paired_permutation_test"]

#: Names of the metrics reported for every method.
METRICS: tuple[str, ...] = ("auroc", "balanced_accuracy", "sensitivity", "specificity")


def _check(y, score, pred=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or score.shape[0] != y.shape[0] or score.ndim not in (1, 2):
        raise ValueError(
            f"Expected y of shape (n,) and scores of shape (n,) or (n, n_classes); got "
            f"{y.shape} and {score.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class codes; got dtype {y.dtype}.")
    if score.ndim == 2 and score.shape[1] == 2:
        score = score[:, 1]  # two classes: the positive-class column
    if not np.all(np.isfinite(score)):
        raise ValueError("Scores contain NaN or infinite values.")
    if pred is not None:
        pred = np.asarray(pred)
        if pred.shape != y.shape:
            raise ValueError(f"pred has shape {pred.shape}; expected {y.shape}.")
    return y.astype(np.int64), score, pred


def _auroc_rows(pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Binary AUROC of each row. pos: (B, n) bool, score: (B, n). NaN if a class is absent."""
    ranks = rankdata(score, axis=-1)
    n1 = pos.sum(axis=-1).astype(np.float64)
    n0 = pos.shape[-1] - n1
    u = (ranks * pos).sum(axis=-1) - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def _metric_rows(y: np.ndarray, score: np.ndarray, pred: np.ndarray,
                 n_classes: int) -> dict[str, np.ndarray]:
    """Metrics for each row of (B, n) resampled arrays (score (B, n) or (B, n, K))."""
    if n_classes == 2:
        auroc = _auroc_rows(y == 1, score)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = ((pred == 1) & (y == 1)).sum(-1) / (y == 1).sum(-1)
            spec = ((pred == 0) & (y == 0)).sum(-1) / (y == 0).sum(-1)
        return {"auroc": auroc, "balanced_accuracy": (sens + spec) / 2,
                "sensitivity": sens, "specificity": spec}
    aucs, recalls, specs = [], [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(n_classes):
            pos = y == k
            aucs.append(_auroc_rows(pos, score[..., k]))
            recalls.append(((pred == k) & pos).sum(-1) / pos.sum(-1))
            specs.append(((pred != k) & ~pos).sum(-1) / (~pos).sum(-1))
    sens = np.nanmean(np.stack(recalls), axis=0)
    return {"auroc": np.nanmean(np.stack(aucs), axis=0), "balanced_accuracy": sens,
            "sensitivity": sens, "specificity": np.nanmean(np.stack(specs), axis=0)}


def _n_classes(y: np.ndarray, score: np.ndarray) -> int:
    return 2 if score.ndim == 1 else score.shape[1]


def compute_metrics(y, score, pred) -> dict[str, float]:
    """AUROC, balanced accuracy, sensitivity and specificity.

    Parameters
    ----------
    y : array of int, shape (n,)
        True class codes (0 = negative, 1 = positive for two classes).
    score : array, shape (n,) | (n, n_classes)
        Continuous scores; AUROC uses only their order (one-vs-rest macro mean for
        more than two classes).
    pred : array of int, shape (n,)
        Predicted class codes.

    Returns
    -------
    metrics : dict of str to float
        Keys of :data:`METRICS`. For more than two classes, sensitivity is the macro
        mean recall (= balanced accuracy) and specificity the macro mean one-vs-rest
        specificity.
    """
    y, score, pred = _check(y, score, pred)
    rows = _metric_rows(y[None], score[None], pred[None], _n_classes(y, score))
    return {k: float(v[0]) for k, v in rows.items()}


def bootstrap_metrics(y, score, pred, *, n_bootstrap: int = 1000, ci: float = 0.95,
                      seed: int = 0) -> dict[str, dict[str, float]]:
    """Metrics with bootstrap confidence intervals over subjects.

    Subjects are resampled with replacement within each class (stratified bootstrap, so
    every resample holds both classes); the interval is the percentile interval.

    Parameters
    ----------
    y, score, pred
        As in :func:`compute_metrics`, one row per subject.
    n_bootstrap : int
        Number of resamples.
    ci : float
        Coverage of the interval (0.95 = 95 %).
    seed : int
        Seed of the resampling.

    Returns
    -------
    metrics : dict
        ``{metric: {"value", "ci_low", "ci_high"}}`` for each of :data:`METRICS`.
    """
    y, score, pred = _check(y, score, pred)
    if not 0 < ci < 1:
        raise ValueError(f"Invalid value for 'ci': expected a number in (0, 1); got {ci}.")
    n_classes = _n_classes(y, score)
    point = compute_metrics(y, score, pred)
    rng = np.random.default_rng(seed)
    idx = np.empty((int(n_bootstrap), len(y)), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        idx[:, members] = rng.choice(members, size=(int(n_bootstrap), len(members)))
    rows = _metric_rows(y[idx], score[idx], pred[idx], n_classes)
    alpha = (1 - ci) / 2
    out = {}
    for name in METRICS:
        lo, hi = np.nanquantile(rows[name], [alpha, 1 - alpha])
        out[name] = {"value": point[name], "ci_low": float(lo), "ci_high": float(hi)}
    return out


def _rank_normalise(score: np.ndarray) -> np.ndarray:
    return rankdata(score, axis=0) / score.shape[0]


def paired_permutation_test(y, score_a, score_b, *, n_permutations: int = 1000,
                            seed: int = 0) -> dict[str, float]:
    """Two-sided paired permutation test of the AUROC difference of two methods.

    Both methods scored the same subjects on the same folds. Under the null hypothesis
    the two methods are exchangeable, so each permutation swaps the two methods' scores
    of a random half of the subjects (a coin flip per subject). Scores are first turned
    into within-method ranks (AUROC depends only on order), so methods whose scores have
    different scales (probabilities, SVM margins) can be swapped.

    Parameters
    ----------
    y : array of int, shape (n,)
        True class codes.
    score_a, score_b : array, shape (n,) | (n, n_classes)
        Scores of the two methods for the same subjects, in the same order.
    n_permutations : int
        Number of random permutations.
    seed : int
        Seed of the permutations.

    Returns
    -------
    result : dict
        ``auroc_a``, ``auroc_b``, ``difference`` (a - b) and ``p_value``
        (``(1 + #{|d_perm| >= |d_obs|}) / (1 + n_permutations)``).
    """
    y, a, _ = _check(y, score_a)
    _, b, _ = _check(y, score_b)
    if a.shape != b.shape:
        raise ValueError(f"score_a and score_b must have the same shape; got {a.shape}, {b.shape}.")
    n_classes = _n_classes(y, a)
    dummy = np.zeros_like(y)
    a, b = _rank_normalise(a), _rank_normalise(b)
    auc_a = _metric_rows(y[None], a[None], dummy[None], n_classes)["auroc"][0]
    auc_b = _metric_rows(y[None], b[None], dummy[None], n_classes)["auroc"][0]
    observed = auc_a - auc_b
    rng = np.random.default_rng(seed)
    swap = rng.random((int(n_permutations), len(y))) < 0.5
    if a.ndim == 2:
        swap = swap[..., None]
    pa, pb = np.where(swap, b, a), np.where(swap, a, b)
    ys = np.broadcast_to(y, (int(n_permutations), len(y)))
    dz = np.zeros_like(ys)
    diff = (_metric_rows(ys, pa, dz, n_classes)["auroc"]
            - _metric_rows(ys, pb, dz, n_classes)["auroc"])
    p_value = (1 + np.sum(np.abs(diff) >= abs(observed) - 1e-12)) / (1 + int(n_permutations))
    return {"auroc_a": float(auc_a), "auroc_b": float(auc_b), "difference": float(observed),
            "p_value": float(p_value)}
