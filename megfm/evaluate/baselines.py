"""Baseline features computed from the same windows the model sees.

Two families that any claim about foundation-model features must beat:

* **raw signals** (:func:`raw_features`): each window low-pass filtered and downsampled,
  then flattened; :class:`RawPCA` (standardise + PCA) reduces them inside each training
  fold of a study, never on the test subjects.
* **classic spectral and evoked features** (:func:`spectral_features`): relative band
  power (delta, theta, alpha, beta, gamma) averaged per sensor type and scalp region,
  peak alpha frequency, and the evoked amplitude of each repetition block of task states
  (habituation).

Both accept a :class:`~megfm.data.Windows` or the path of a store, and return
``(features, names)`` with ``features`` of shape ``(n_windows, n_features)`` in the window
order of the input (the store's global window index).
"""

from __future__ import annotations

import logging
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly, welch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted, validate_data

from ..data.geometry import SENSOR_TYPES, SensorGeometry
from ..data.windows import Windows
from ..tokenize import BANDS

logger = logging.getLogger(__name__)

__all__ = ["BANDS", "REGIONS", "RawPCA", "raw_features", "sensor_regions", "spectral_features"]


#: Scalp regions that sensors are grouped into (see :func:`sensor_regions`).
REGIONS: tuple[str, ...] = (
    "left_temporal", "right_temporal", "frontal", "central", "parietal", "occipital",
)


def _as_windows(windows_or_store) -> Windows:
    if isinstance(windows_or_store, Windows):
        return windows_or_store
    if isinstance(windows_or_store, (str, Path)):
        from ..data.store import read_store  # the store layer; imported only when needed

        return read_store(windows_or_store)
    raise TypeError(
        "Expected a megfm.data.Windows or the path of a megfm store; got "
        f"{type(windows_or_store).__name__}."
    )


# ---------------------------------------------------------------------------- raw signals
def raw_features(windows, *, sfreq: float = 50.0) -> tuple[np.ndarray, list[str]]:
    """Downsampled, flattened raw signals of each window.

    Parameters
    ----------
    windows : Windows | path-like
        The windows, or the path of a store (read with :func:`megfm.data.store.read_store`).
    sfreq : float
        Target sampling frequency in Hz; signals are resampled with an anti-aliasing
        polyphase filter (no change when ``sfreq`` is not below the windows' rate).

    Returns
    -------
    features : array, shape (n_windows, n_sensors * n_times_down)
        float32, sensor-major (all samples of sensor 0, then sensor 1, ...). Bad and padded
        sensors are zero.
    names : list of str
        ``"<channel>@<time>s"`` (channel names when all windows share one layout,
        ``"s<index>"`` otherwise).

    Notes
    -----
    Use with :class:`RawPCA` inside the classifier pipeline, so the projection is learned
    on the training subjects of each fold only.
    """
    win = _as_windows(windows)
    if not sfreq > 0:
        raise ValueError(f"Invalid value for 'sfreq': expected a positive number; got {sfreq}.")
    data = win.data
    if sfreq < win.sfreq:
        ratio = Fraction(float(sfreq) / win.sfreq).limit_denominator(200)
        data = resample_poly(data, ratio.numerator, ratio.denominator, axis=-1)
        new_sfreq = win.sfreq * ratio.numerator / ratio.denominator
    else:
        new_sfreq = win.sfreq
    data = np.array(data, dtype=np.float32)
    for rec, geom in enumerate(win.geometries):  # zero bad sensors and padding
        rows = win.metadata["recording"] == rec
        if rows.any():
            bad = np.concatenate([geom.bads, np.ones(data.shape[1] - geom.n_sensors, bool)])
            data[np.ix_(rows, bad)] = 0.0
    n_sensors, n_times = data.shape[1:]
    same = len(win.geometries) == 1 and win.geometries[0].n_sensors == n_sensors
    chans = win.geometries[0].names if same else [f"s{i}" for i in range(n_sensors)]
    times = np.arange(n_times) / new_sfreq
    names = [f"{c}@{t:.3f}s" for c in chans for t in times]
    return data.reshape(len(data), -1), names


class RawPCA(TransformerMixin, BaseEstimator):
    """Standardise each feature, then project on the leading principal components.

    Meant for :func:`raw_features` inside a classifier pipeline: the scaling and the
    components are learned in ``fit`` on the training subjects only.

    Parameters
    ----------
    n_components : int
        Number of components kept; clipped to ``min(n_samples, n_features)`` at fit time.
    whiten : bool
        Scale the components to unit variance.
    random_state : int | None
        Seed of the randomised SVD that large inputs use (see
        :class:`sklearn.decomposition.PCA`, ``svd_solver="auto"``).

    Attributes
    ----------
    mean_, scale_ : array, shape (n_features,)
        Per-feature mean and standard deviation of the training data.
    pca_ : sklearn.decomposition.PCA
        The fitted projection.
    n_features_in_ : int
        Number of input features.
    """

    def __init__(self, n_components: int = 20, whiten: bool = False, random_state=0):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None):
        """Learn the scaling and the principal components of ``X``."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if not (isinstance(self.n_components, (int, np.integer)) and self.n_components >= 1):
            raise ValueError(
                f"Invalid value for 'n_components': expected an int >= 1; got {self.n_components!r}."
            )
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        k = int(min(self.n_components, X.shape[0], X.shape[1]))
        self.pca_ = PCA(n_components=k, whiten=self.whiten, svd_solver="auto",
                        random_state=self.random_state)
        self.pca_.fit((X - self.mean_) / self.scale_)
        return self

    def transform(self, X):
        """Project ``X`` on the components learned in :meth:`fit`."""
        check_is_fitted(self, "pca_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.pca_.transform((X - self.mean_) / self.scale_)


# ---------------------------------------------------------------------------- regions
def sensor_regions(geometry: SensorGeometry) -> np.ndarray:
    """Assign each sensor to a scalp region from its position.

    Positions are taken relative to the centre of the array and read with MNE's
    conventions for the Neuromag device frame and the head frame: x towards the right
    ear, y towards the nose, z up.

    Parameters
    ----------
    geometry : SensorGeometry
        The sensors.

    Returns
    -------
    regions : array of str, shape (n_sensors,)
        One of :data:`REGIONS` per sensor.
    """
    pos = np.asarray(geometry.positions, dtype=np.float64)
    centre = pos.mean(axis=0)
    centre[2] = pos[:, 2].min()  # helmet rim level: the cap points up from there
    u = pos - centre
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    x, y, z = u.T
    region = np.full(len(pos), "central", dtype=object)
    region[y < -0.2] = "parietal"
    region[y < -0.6] = "occipital"
    region[y > 0.45] = "frontal"
    temporal = (np.abs(x) > 0.65) & (z < 0.6) & (y > -0.6)
    region[temporal & (x < 0)] = "left_temporal"
    region[temporal & (x > 0)] = "right_temporal"
    return region.astype(str)


# ---------------------------------------------------------------------------- spectra
def _parabolic_peak(freqs: np.ndarray, power: np.ndarray) -> float:
    i = int(np.argmax(power))
    if 0 < i < len(power) - 1:
        a, b, c = power[i - 1], power[i], power[i + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(freqs[i] + np.clip(shift, -0.5, 0.5) * (freqs[1] - freqs[0]))
    return float(freqs[i])


def spectral_features(windows, *, bands: dict[str, tuple[float, float]] | None = None,
                      alpha_range: tuple[float, float] = (7.0, 14.0), evoked: bool = True,
                      batch_size: int = 256) -> tuple[np.ndarray, list[str]]:
    """Relative band power per sensor type and region, peak alpha frequency, evoked blocks.

    Parameters
    ----------
    windows : Windows | path-like
        The windows, or the path of a store.
    bands : dict of str to (float, float) | None
        Frequency bands in Hz; default :data:`BANDS` (bands above Nyquist are dropped).
        Relative power = band power / power over all bands, per sensor, then averaged
        over the good sensors of each (sensor type, region).
    alpha_range : (float, float)
        Search range of the peak alpha frequency (Hz), found on the mean relative
        spectrum of the parietal and occipital sensors (all sensors if none).
    evoked : bool
        Add, for each task state (windows with ``block >= 0``), the evoked amplitude of
        each repetition block: the peak over post-stimulus time of the root mean square
        over sensors (per type) of the subject's block average. These are per-subject
        values (no labels used) given to every window of that subject and state; other
        windows hold NaN. The window start is taken as ``windows.info["tmin"]`` seconds
        from the event (0 if absent); the pre-stimulus part, if any, is the baseline.
    batch_size : int
        Windows per spectral batch (bounds memory).

    Returns
    -------
    features : array, shape (n_windows, n_features)
        float64; NaN where a feature does not apply (a study imputes them from the
        training subjects). Columns that are NaN for every window are dropped.
    names : list of str
        ``relpow_<band>_<type>_<region>``, ``peak_alpha_hz``,
        ``evoked_<state>_<type>_block<b>``.
    """
    win = _as_windows(windows)
    bands = dict(BANDS if bands is None else bands)
    nyquist = win.sfreq / 2
    bands = {k: (lo, min(hi, nyquist)) for k, (lo, hi) in bands.items() if lo < nyquist}
    if not bands:
        raise ValueError(f"No frequency band lies below the Nyquist frequency ({nyquist} Hz).")
    types_present = sorted({int(t) for g in win.geometries for t in g.types})
    groups = [(SENSOR_TYPES[t], r) for t in types_present for r in REGIONS]
    names = [f"relpow_{b}_{t}_{r}" for b in bands for (t, r) in groups] + ["peak_alpha_hz"]
    n = win.n_windows
    feats = np.full((n, len(names)), np.nan)
    nperseg = min(win.n_times, int(round(2 * win.sfreq)))
    fmin = min(lo for lo, _ in bands.values())
    fmax = max(hi for _, hi in bands.values())
    with warnings.catch_warnings():  # flat (all-zero) windows give NaN, not warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        for rec, geom in enumerate(win.geometries):
            rows = np.flatnonzero(win.metadata["recording"] == rec)
            if not len(rows):
                continue
            regions = sensor_regions(geom)
            good = ~geom.bads
            members = [np.flatnonzero(good & (geom.types == SENSOR_TYPES.index(t)) & (regions == r))
                       for (t, r) in groups]
            posterior = np.flatnonzero(good & np.isin(regions, ["parietal", "occipital"]))
            if not len(posterior):
                posterior = np.flatnonzero(good)
            for start in range(0, len(rows), batch_size):
                idx = rows[start:start + batch_size]
                freqs, psd = welch(win.data[idx, :geom.n_sensors], fs=win.sfreq, nperseg=nperseg,
                                   axis=-1)
                in_total = (freqs >= fmin) & (freqs < fmax)
                total = psd[..., in_total].sum(-1)
                total = np.where(total > 0, total, np.nan)
                col = 0
                for lo, hi in bands.values():
                    rel = psd[..., (freqs >= lo) & (freqs < hi)].sum(-1) / total  # (n, S)
                    for m in members:
                        if len(m):
                            feats[idx, col] = np.nanmean(rel[:, m], axis=1)
                        col += 1
                arange = (freqs >= alpha_range[0]) & (freqs <= alpha_range[1])
                if arange.sum() >= 1 and len(posterior):
                    relpsd = psd[:, posterior] / total[:, posterior, None]
                    mean_spec = np.nanmean(relpsd[..., arange], axis=1)  # (n, F_alpha)
                    fa = freqs[arange]
                    feats[idx, col] = [_parabolic_peak(fa, s) if np.all(np.isfinite(s)) else np.nan
                                       for s in mean_spec]
    if evoked:
        ev, ev_names = _evoked_block_features(win, types_present)
        feats = np.concatenate([feats, ev], axis=1)
        names += ev_names
    keep = ~np.all(np.isnan(feats), axis=0)
    logger.info("spectral features: %d columns (%d dropped, all NaN)", keep.sum(), (~keep).sum())
    return feats[:, keep], [nm for nm, k in zip(names, keep, strict=True) if k]


def _evoked_block_features(win: Windows, types_present: list[int]) -> tuple[np.ndarray, list[str]]:
    meta = win.metadata
    task = (meta["block"] >= 0) & (meta["state"] != "rest")
    states = sorted(set(meta["state"][task].tolist()))
    tmin = float(win.info.get("tmin", 0.0) or 0.0)
    times = tmin + np.arange(win.n_times) / win.sfreq
    pre, post = times < 0, times >= 0
    columns: list[tuple[str, int, int]] = []  # (state, type, block)
    for state in states:
        blocks = sorted(set(meta["block"][task & (meta["state"] == state)].tolist()))
        columns += [(state, t, b) for t in types_present for b in blocks]
    names = [f"evoked_{s}_{SENSOR_TYPES[t]}_block{b}" for s, t, b in columns]
    out = np.full((win.n_windows, len(columns)), np.nan)
    col_of = {c: i for i, c in enumerate(columns)}
    for state in states:
        in_state = task & (meta["state"] == state)
        for subject in sorted(set(meta["subject"][in_state].tolist())):
            sel = in_state & (meta["subject"] == subject)
            for block in sorted(set(meta["block"][sel].tolist())):
                rows = np.flatnonzero(sel & (meta["block"] == block))
                recs = meta["recording"][rows]
                for rec in np.unique(recs):
                    geom = win.geometries[int(rec)]
                    avg = win.data[rows[recs == rec], :geom.n_sensors].mean(axis=0)  # (S, T)
                    base = avg[:, pre].mean(axis=1) if pre.any() else avg.mean(axis=1)
                    avg = avg - base[:, None]
                    for t in types_present:
                        m = (geom.types == t) & ~geom.bads
                        if m.any():
                            rms = np.sqrt(np.mean(avg[m][:, post] ** 2, axis=0))
                            out[np.flatnonzero(sel), col_of[(state, t, int(block))]] = rms.max()
    return out, names
