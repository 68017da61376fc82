"""Riemannian tangent-space baseline: the classic covariance features of MEG/EEG decoding.

Each window's spatial covariance, in a label-free reduced sensor space, is averaged per
subject and state by the study and mapped to the tangent space at the Riemannian mean of the
training subjects inside each fold (pyriemann's ``TangentSpace``), so no test subject shapes
the reference point.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..data.windows import Windows
from .baselines import _as_windows

__all__ = ["TangentSpaceBlocks", "covariance_features"]


def _good_columns(win: Windows) -> np.ndarray:
    """Sensors valid in every recording (bad and padded ones are dropped)."""
    n_sensors = win.data.shape[1]
    good = np.ones(n_sensors, bool)
    for geom in win.geometries:
        mask = np.zeros(n_sensors, bool)
        mask[: geom.n_sensors] = ~np.asarray(geom.bads, bool)
        good &= mask
    return np.flatnonzero(good)


def covariance_features(windows, *, n_components: int = 32, shrinkage: float = 1e-3,
                        batch_size: int = 256) -> tuple[np.ndarray, list[str]]:
    """Spatial covariance of every window in a reduced, label-free sensor space.

    Parameters
    ----------
    windows : Windows | path-like
        The windows, or the path of a store.
    n_components : int
        Principal components of the standardised sensors kept (sensors of different types
        and units are made comparable by their standard deviation over all windows, then
        projected on the leading components of their pooled correlation; no labels used).
    shrinkage : float
        Ridge added to each covariance, relative to its mean eigenvalue, so every matrix is
        positive definite.
    batch_size : int
        Windows per batch (bounds memory).

    Returns
    -------
    features : array, shape (n_windows, n_components * (n_components + 1) // 2)
        The upper triangle (row-major) of each covariance; use with
        :class:`TangentSpaceBlocks` inside the classifier pipeline.
    names : list of str
        ``"cov_<i>_<j>"``.

    Raises
    ------
    ValueError
        Fewer valid sensors in every recording than ``n_components``, or bad parameters.
    """
    win = _as_windows(windows)
    if not (isinstance(n_components, (int, np.integer)) and n_components >= 2):
        raise ValueError(f"Invalid value for 'n_components': expected an int >= 2; got {n_components!r}.")
    cols = _good_columns(win)
    if len(cols) < n_components:
        raise ValueError(
            f"Only {len(cols)} sensors are valid in every recording, fewer than "
            f"n_components={n_components}; lower n_components."
        )
    n = win.n_windows
    # pass 1: per-sensor scale and pooled correlation (the label-free projection)
    sq = np.zeros(len(cols))
    gram = np.zeros((len(cols), len(cols)))
    for start in range(0, n, batch_size):
        x = np.asarray(win.data[start:start + batch_size][:, cols], np.float64)
        x -= x.mean(-1, keepdims=True)
        sq += (x ** 2).sum((0, 2))
        gram += np.einsum("nst,nut->su", x, x)
    scale = np.sqrt(sq / (n * win.n_times))
    scale = np.where(scale > 0, scale, 1.0)
    corr = gram / np.outer(scale, scale)
    eigval, eigvec = np.linalg.eigh(corr)
    proj = (eigvec[:, ::-1][:, :n_components] / scale[:, None]).T  # (C, S)
    iu = np.triu_indices(n_components)
    out = np.empty((n, len(iu[0])), np.float64)
    for start in range(0, n, batch_size):
        x = np.asarray(win.data[start:start + batch_size][:, cols], np.float64)
        x -= x.mean(-1, keepdims=True)
        z = np.einsum("cs,nst->nct", proj, x)
        cov = np.einsum("nct,ndt->ncd", z, z) / win.n_times
        ridge = shrinkage * np.trace(cov, axis1=1, axis2=2) / n_components
        cov += ridge[:, None, None] * np.eye(n_components)
        out[start:start + len(z)] = cov[:, iu[0], iu[1]]
    names = [f"cov_{i}_{j}" for i, j in zip(*iu, strict=True)]
    return out, names


class TangentSpaceBlocks(TransformerMixin, BaseEstimator):
    """Tangent-space map of rows holding one or more covariance upper triangles.

    A study row concatenates one covariance per state (:func:`covariance_features`
    averaged per subject and state); each block gets its own reference point, the
    Riemannian mean of the training rows (pyriemann ``TangentSpace``).

    Parameters
    ----------
    n_channels : int
        Size of each covariance matrix.
    metric : str
        pyriemann metric of the reference mean and the map.
    """

    def __init__(self, n_channels: int = 32, metric: str = "riemann"):
        self.n_channels = n_channels
        self.metric = metric

    def _blocks(self, X: np.ndarray) -> list[np.ndarray]:
        c = self.n_channels
        m = c * (c + 1) // 2
        if X.ndim != 2 or X.shape[1] % m:
            raise ValueError(
                f"Expected rows of k * {m} covariance entries (n_channels={c}); got shape "
                f"{X.shape}. Pass the n_components of covariance_features as n_channels."
            )
        iu = np.triu_indices(c)
        out = []
        for b in range(X.shape[1] // m):
            mats = np.zeros((len(X), c, c))
            mats[:, iu[0], iu[1]] = X[:, b * m:(b + 1) * m]
            mats = mats + np.triu(mats, 1).transpose(0, 2, 1)
            out.append(mats)
        return out

    def fit(self, X, y=None):
        """Learn each block's reference point from the training rows."""
        from pyriemann.tangentspace import TangentSpace

        X = np.asarray(X, np.float64)
        self.spaces_ = [TangentSpace(metric=self.metric).fit(m) for m in self._blocks(X)]
        return self

    def transform(self, X):
        """Tangent vectors of every block, concatenated."""
        check_is_fitted(self, "spaces_")
        blocks = self._blocks(np.asarray(X, np.float64))
        if len(blocks) != len(self.spaces_):
            raise ValueError(f"Expected {len(self.spaces_)} covariance blocks per row; got "
                             f"{len(blocks)}.")
        return np.concatenate([s.transform(m) for s, m in zip(self.spaces_, blocks, strict=True)],
                              axis=1)
