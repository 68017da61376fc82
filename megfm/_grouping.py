"""Group means of window features (private; torch-free).

One computation shared by :func:`megfm.embedding.aggregate_by_subject` (long format, one row
per subject and state) and :func:`megfm.evaluate.classification.subject_state_matrix` (wide
format, one row per subject with the states side by side).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["group_codes", "group_means"]


def group_codes(values, order: Sequence | np.ndarray) -> np.ndarray:
    """Position of each value in ``order``, -1 for values not in it.

    Parameters
    ----------
    values : array, shape (n,)
        Group labels, compared as strings.
    order : sequence of str
        The groups, in output order.

    Returns
    -------
    codes : array of int64, shape (n,)
    """
    pos = {s: i for i, s in enumerate(np.asarray(order).astype(str).tolist())}
    return np.array([pos.get(v, -1) for v in np.asarray(values).astype(str).tolist()],
                    dtype=np.int64)


def group_means(features, codes, n_groups: int, *,
                skipna: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rows of ``features`` in each group.

    Parameters
    ----------
    features : array, shape (n, dim)
        Row features (e.g. one row per window).
    codes : array of int, shape (n,)
        Group of each row in ``[0, n_groups)``; rows with a negative code are left out.
    n_groups : int
        Number of groups (rows of the output).
    skipna : bool
        True: each entry is the mean of the group's finite values in that column (NaN where
        there is none). False: a plain mean, so a non-finite value makes its entry NaN or
        infinite, as :meth:`numpy.ndarray.mean` does.

    Returns
    -------
    means : array of float64, shape (n_groups, dim)
        Group means; NaN for a group with no rows.
    n_rows : array of int64, shape (n_groups,)
        Number of rows in each group.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (n, dim); got {features.shape}.")
    codes = np.asarray(codes, dtype=np.int64)
    if codes.shape != (features.shape[0],):
        raise ValueError(f"codes must have shape ({features.shape[0]},); got {codes.shape}.")
    keep = codes >= 0
    x, cell = features[keep], codes[keep]
    n_rows = np.bincount(cell, minlength=n_groups).astype(np.int64)
    sums = np.zeros((n_groups, features.shape[1]))
    if skipna:
        finite = np.isfinite(x)
        counts = np.zeros_like(sums)
        np.add.at(sums, cell, np.where(finite, x, 0.0))
        np.add.at(counts, cell, finite)
    else:
        np.add.at(sums, cell, x)
        counts = np.broadcast_to(n_rows[:, None].astype(np.float64), sums.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return means, n_rows
