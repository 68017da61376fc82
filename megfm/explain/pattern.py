"""Decision patterns: which sensors' band power moves with a classifier's decision.

A gradient attribution (integrated gradients, gradient x input) explains how a classifier
*reads* its input. When the inputs are strongly correlated, as neighbouring MEG sensors and
subject-wide rhythms are, a discriminative model reads them with weights of both signs: it
adds the sensors that carry the group effect and subtracts others to cancel what the
subjects share (a subject's overall theta level, say). Its attribution then sits on the
cancelling sensors as much as on the effect, and does not localise the effect: the weights of
a backward (decoding) model are not a map of where the signal is (Haufe et al., *On the
interpretation of weight vectors of linear models in multivariate neuroimaging*,
NeuroImage 2014).

The remedy of that paper is the *activation pattern* of the decoder, the covariance of each
input with the decoder's output. :func:`decision_pattern` computes it for any classifier
(linear or not, no gradients needed) on a physiologically meaningful input feature: for each
window the decision score ``s`` (the log-odds of the target class) and each sensor's log band
power ``p[s]``; averaged per subject when ``groups`` are given; then per sensor ::

    pattern[s] = corr(p[s], score)      (statistic="corr", default)
    pattern[s] = cov(p[s], score) / var(score)   (statistic="cov", Haufe's A = cov / var)

across the units. It answers "where does the power rise when the classifier says
migraine?", and its positive part, :meth:`DecisionPattern.positive`, is a non-negative map
for :func:`megfm.explain.rank_regions`. It explains the decision through the data, so two
classifiers that decide alike have the same pattern however they weigh their inputs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..data.batch import iter_batches
from ..data.geometry import SensorGeometry
from ..data.windows import Windows
from ._common import (
    _load_windows,
    _mean_units,
    _union_columns,
    _union_geometry,
)

__all__ = ["DecisionPattern", "decision_pattern"]

logger = logging.getLogger(__name__)


@dataclass
class DecisionPattern:
    """Result of :func:`decision_pattern`.

    Attributes
    ----------
    values : array, shape (n_sensors,)
        Signed pattern per sensor of ``geometry`` (NaN where a sensor is in fewer than three
        units or its power is constant).
    scores : array, shape (n_units,)
        The decision score (log-odds of the target class) of each unit.
    power : array, shape (n_units, n_sensors)
        The log band power of each unit and sensor (NaN where the sensor is absent).
    units : array, shape (n_units,)
        The subject of each unit (``groups``), or the window index without ``groups``.
    geometry : SensorGeometry
        The sensors of the map: the union of the windows' sensors by name.
    target : int
        The class whose log-odds is the decision score.
    band : tuple of float | None
        Frequency band (Hz) of the power, or None for the total power.
    statistic : ``"corr"`` | ``"cov"``
        What ``values`` holds.
    """

    values: np.ndarray
    scores: np.ndarray
    power: np.ndarray
    units: np.ndarray
    geometry: SensorGeometry
    target: int
    band: tuple[float, float] | None
    statistic: str

    def positive(self) -> np.ndarray:
        """Positive part, shape (n_sensors,) (NaN kept): sensors whose power rises with the
        target class's log-odds, as a non-negative map."""
        return np.where(np.isnan(self.values), np.nan, np.clip(self.values, 0.0, None))


def _log_band_power(windows: Windows, band, union: SensorGeometry) -> np.ndarray:
    """Log power per window and union sensor (NaN where absent or marked bad)."""
    freqs = np.fft.rfftfreq(windows.n_times, 1.0 / windows.sfreq)
    if band is None:
        keep = freqs > 0.0
    else:
        keep = (freqs >= band[0]) & (freqs < band[1])
        if not keep.any():
            raise ValueError(f"The band {tuple(band)} Hz holds no frequency of a "
                             f"{windows.n_times}-sample window at {windows.sfreq:g} Hz "
                             f"(resolution {freqs[1]:g} Hz, up to {freqs[-1]:g} Hz); widen it.")
    out = np.full((windows.n_windows, union.n_sensors), np.nan)
    for rows, valid, cols in _union_columns(windows, union):
        for start in range(0, len(rows), 256):  # bounded memory on long stores
            r = rows[start:start + 256]
            spec = np.abs(np.fft.rfft(np.asarray(windows.data[r][:, valid], np.float64),
                                      axis=-1)) ** 2
            out[np.ix_(r, cols)] = np.log(spec[..., keep].sum(-1) + 1e-300)
    return out


@torch.no_grad()
def _decision_scores(classifier: torch.nn.Module, windows: Windows, target: int,
                     batch_size: int, device) -> np.ndarray:
    """Log-odds of ``target`` per window: its logit minus the log-sum-exp of the others."""
    device = torch.device(device or "cpu")
    was_training = classifier.training
    classifier.eval().to(device)
    out = []
    try:
        for batch in iter_batches(windows, batch_size=batch_size):
            b = batch.to(device)
            logits = classifier(b.x, b.pos, b.ori, b.sensor_type, b.sensor_mask).double()
            if logits.ndim != 2 or logits.shape[1] < 2:
                raise ValueError(f"The classifier returned logits of shape "
                                 f"{tuple(logits.shape)}; expected (n_windows, n_classes) "
                                 "with at least two classes.")
            if not 0 <= target < logits.shape[1]:
                raise ValueError(f"'target' {target} is not a class of a classifier with "
                                 f"{logits.shape[1]} outputs.")
            others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=1)
            out.append((logits[:, target] - torch.logsumexp(others, dim=1)).cpu().numpy())
    finally:
        classifier.train(was_training)
    return np.concatenate(out)


def decision_pattern(classifier, windows, *, target: int = 1,
                     band: tuple[float, float] | None = (4.0, 8.0), groups=None,
                     statistic: str = "corr", batch_size: int = 64,
                     device=None) -> DecisionPattern:
    """Per-sensor pattern of a classifier's decision: how each sensor's band power covaries
    with the target class's log-odds (Haufe et al. 2014's activation pattern).

    Parameters
    ----------
    classifier : torch.nn.Module | array, shape (n_windows,)
        Maps the batch contract ``(x, pos, ori, sensor_type, sensor_mask)`` to logits of
        shape ``(n_windows, n_classes)``, e.g. :class:`~megfm.explain.EncoderClassifier` or
        the ``module`` of :func:`megfm.finetune`'s result wrapped in one. Only forward
        passes are run, so it need not be differentiable. Or the decision score of each
        window, precomputed: e.g. *out-of-fold* log-odds from cross-validation, each
        subject scored by a classifier that never saw it, so that the pattern shows what
        the classifier generalises from rather than what it fitted (``target`` is then
        unused).
    windows : Windows | path-like
        The windows whose decisions are explained (a store path is read).
    target : int
        Class index whose log-odds is the decision score (1 = the positive class of a
        binary classifier, e.g. migraine in ``migraine-vs-HC``).
    band : (float, float) | None
        ``(fmin, fmax)`` in Hz of the power; None for the total power.
    groups : array, shape (n_windows,) | None
        Subject of each window: scores and powers are averaged per subject first, so the
        units are subjects (recommended: windows of one subject are not independent, and a
        subject-level decision is what a study reports).
    statistic : ``"corr"`` | ``"cov"``
        ``"corr"`` (default): Pearson correlation per sensor, comparable across sensor
        types. ``"cov"``: covariance divided by the score variance (Haufe's pattern, in
        log-power units per unit of log-odds).
    batch_size : int
        Windows per forward pass.
    device : str | torch.device | None
        Where the classifier runs (CPU when None).

    Returns
    -------
    pattern : DecisionPattern
        ``values`` (signed), ``positive()`` (for :func:`~megfm.explain.rank_regions`), the
        unit scores and powers.

    Raises
    ------
    ValueError
        An unknown ``statistic``, ``groups`` of the wrong length, fewer than three units, a
        band outside the windows' spectrum, logits of the wrong shape, precomputed scores
        of the wrong length or not finite, or a decision score that is the same for every
        unit (then nothing covaries with it).
    """
    if statistic not in ("corr", "cov"):
        raise ValueError(f"Invalid value for 'statistic': expected 'corr' or 'cov'; got "
                         f"{statistic!r}.")
    windows = _load_windows(windows)
    union = _union_geometry(windows.geometries)
    units = np.arange(windows.n_windows)
    if groups is not None:
        units = np.asarray(groups)
        if units.shape != (windows.n_windows,):
            raise ValueError(f"'groups' must have one entry per window ({windows.n_windows}); "
                             f"got shape {units.shape}.")
    names = np.unique(units)
    if len(names) < 3:
        raise ValueError(f"A decision pattern needs at least three units (subjects with "
                         f"'groups'); got {len(names)}.")
    power = _log_band_power(windows, None if band is None else tuple(band), union)
    if isinstance(classifier, torch.nn.Module):
        scores = _decision_scores(classifier, windows, int(target), batch_size, device)
    else:
        scores = np.asarray(classifier, dtype=np.float64)
        if scores.shape != (windows.n_windows,) or not np.all(np.isfinite(scores)):
            raise ValueError(f"Precomputed scores must be finite, one per window "
                             f"({windows.n_windows}); got shape {scores.shape}"
                             + ("" if scores.shape != (windows.n_windows,)
                                else " with NaN/Inf") + ".")
    grouping = None if groups is None else units  # without groups each window is a unit
    with warnings.catch_warnings():  # sensors absent in every window of a subject
        warnings.simplefilter("ignore", RuntimeWarning)
        power = _mean_units(power, grouping)
    scores = _mean_units(scores, grouping)
    centred = scores - scores.mean()
    if not np.any(np.abs(centred) > 1e-12 * max(1.0, np.abs(scores).max())):
        raise ValueError("The classifier gives every unit the same decision score, so no "
                         "sensor covaries with it; check that it was trained (and on these "
                         "classes).")
    values = np.full(union.n_sensors, np.nan)
    for s in range(union.n_sensors):
        ok = np.isfinite(power[:, s])
        if ok.sum() < 3:
            continue
        p = power[ok, s] - power[ok, s].mean()
        c = scores[ok] - scores[ok].mean()
        if statistic == "cov":
            var = np.mean(c ** 2)
            values[s] = np.mean(p * c) / var if var > 0 else np.nan
        else:
            denom = np.sqrt(np.sum(p ** 2) * np.sum(c ** 2))
            values[s] = np.sum(p * c) / denom if denom > 0 else np.nan
    logger.info("decision pattern (%s, band %s) over %d units", statistic, band, len(names))
    return DecisionPattern(values=values, scores=scores, power=power, units=names,
                           geometry=union, target=int(target),
                           band=None if band is None else (float(band[0]), float(band[1])),
                           statistic=statistic)
