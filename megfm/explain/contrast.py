"""Class-contrast sensor maps: where a classifier's evidence differs between two groups.

A plain attribution map (the mean absolute attribution over windows) shows where the signal
is strong *and* the gradient large. Much of that is the same in both groups (e.g. the
strongest rhythm of every subject), so the plain map of a migraine-vs-control classifier can
peak at a sensor that carries no group difference at all. :func:`class_contrast` removes the
part common to both groups::

    contrast[s] = mean_{target units} a[s] - mean_{reference units} a[s]

where ``a[s]`` is the (optionally band-limited) attribution of ONE logit (the target class)
summed over the time samples of a window, per sensor. With ``groups`` (subject ids), windows
are first averaged per subject so that every subject weighs the same; units are then the
subjects. The signed contrast is positive where the windows of the target class carry more
evidence *for the target class* than the windows of the reference class (a feature that is
higher in the target group with a positive weight, or lower with a negative weight), and
close to zero where the attribution is the same in both groups. Its positive part,
:meth:`ClassContrast.positive`, is a non-negative map for
:func:`megfm.explain.rank_regions`.

Example: a linear head reading band power at sensors A (planted effect, small power) and B
(strong in everybody). The plain map peaks at B; the contrast cancels B and peaks at A.

The difference of two means of a few subjects is itself noisy, and its noise is largest
where the attribution varies most *between subjects* (sensors over strong, variable rhythms).
With no group effect at all the difference map still peaks there, and the region ranking
follows. ``statistic="t"`` scales each sensor by its own between-subject variability: the
Welch t statistic of the per-subject means of the two classes,

    t[s] = (mean_T a[s] - mean_R a[s]) / sqrt(var_T a[s] / n_T + var_R a[s] / n_R)

(sample variances over subjects), so a small but consistent difference outranks a large but
noisy one, and with no group effect every sensor follows (approximately) the same t
distribution, whatever its variance.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from ..data.geometry import SensorGeometry
from ._common import _mean_units, _union_columns, _union_geometry

__all__ = ["ClassContrast", "class_contrast"]

logger = logging.getLogger(__name__)


@dataclass
class ClassContrast:
    """Result of :func:`class_contrast`.

    Attributes
    ----------
    values : array, shape (n_sensors,)
        Signed contrast: ``target_mean - reference_mean`` with ``statistic="difference"``,
        the Welch t statistic with ``statistic="t"`` (NaN where a sensor is absent from every
        window of a class, or, for ``"t"``, present in fewer than two subjects of a class).
    target_mean, reference_mean : array, shape (n_sensors,)
        Mean attribution per sensor over the units (windows, or subjects when ``groups`` was
        given) of the target and of the reference class.
    plain : array, shape (n_sensors,)
        The class-blind map of the same quantity for comparison: the mean *absolute*
        attribution of the windows of both classes (what a plain attribution map shows),
        averaged per subject first when ``groups`` was given; absolute values are taken per
        window, so opposite signs do not cancel.
    geometry : SensorGeometry | None
        The sensors of the maps (the union of the windows' sensors by name); None when the
        input was an array.
    target, reference : object, list
        The target label and the reference labels.
    n_target, n_reference : int
        Number of units averaged in each class.
    band : tuple of float | None
        The frequency band (Hz) of the attribution, or None for the total.
    statistic : ``"difference"`` | ``"t"``
        What ``values`` holds.
    dof : array, shape (n_sensors,) | None
        Welch-Satterthwaite degrees of freedom per sensor with ``statistic="t"``; None
        otherwise.
    """

    values: np.ndarray
    target_mean: np.ndarray
    reference_mean: np.ndarray
    plain: np.ndarray
    geometry: SensorGeometry | None
    target: object
    reference: list
    n_target: int
    n_reference: int
    band: tuple[float, float] | None = None
    statistic: str = "difference"
    dof: np.ndarray | None = None

    def positive(self) -> np.ndarray:
        """Positive part of the contrast, shape (n_sensors,) (NaN kept): evidence for the
        target class that is larger in the target group, as a non-negative map."""
        return np.where(np.isnan(self.values), np.nan, np.clip(self.values, 0.0, None))


def _per_window(attribution, band) -> tuple[np.ndarray, SensorGeometry | None]:
    """Per-window, per-sensor signed attribution on the union geometry (NaN where absent)."""
    from .attribution import Attribution

    if isinstance(attribution, Attribution):
        targets = np.unique(np.asarray(attribution.target))
        if len(targets) > 1:
            raise ValueError(
                f"The attribution explains different logits in different windows (classes "
                f"{targets.tolist()}); a class contrast compares ONE logit across groups. "
                "Attribute with a fixed class, e.g. integrated_gradients(clf, windows, target=1)."
            )
        if band is None:
            per = attribution.values.sum(axis=2)
        else:
            per = attribution.to_bands({"band": tuple(band)})["band"]
        w = attribution.windows
        union = _union_geometry(w.geometries)
        out = np.full((w.n_windows, union.n_sensors), np.nan)
        for rows, valid, cols in _union_columns(w, union):
            out[np.ix_(rows, cols)] = per[np.ix_(rows, valid)]
        return out, union
    arr = np.asarray(attribution, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"Expected an Attribution or an array of shape (n_windows, n_sensors); "
                         f"got an array of shape {arr.shape}.")
    if band is not None:
        raise ValueError("'band' needs an Attribution (band limits act on its gradients); "
                         "pass band=None with an array of per-sensor values.")
    return arr, None


def _welch_t(tgt: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column Welch t statistic and Welch-Satterthwaite dof of two unit tables, NaN-aware.

    NaN where a class has fewer than two non-NaN units in a column. Where both classes are
    constant (zero standard error): 0 for equal means, +-inf otherwise.
    """
    n_t = np.sum(~np.isnan(tgt), axis=0).astype(float)
    n_r = np.sum(~np.isnan(ref), axis=0).astype(float)
    ok = (n_t >= 2) & (n_r >= 2)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # < 2 units: masked by 'ok' below
        diff = np.nanmean(tgt, axis=0) - np.nanmean(ref, axis=0)
        v_t = np.nanvar(tgt, axis=0, ddof=1) / n_t
        v_r = np.nanvar(ref, axis=0, ddof=1) / n_r
        se2 = v_t + v_r
        t = np.where(se2 > 0, diff / np.sqrt(se2), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        dof = np.where(se2 > 0, se2 ** 2 / (v_t ** 2 / (n_t - 1) + v_r ** 2 / (n_r - 1)),
                       n_t + n_r - 2)
    return np.where(ok, t, np.nan), np.where(ok, dof, np.nan)


def class_contrast(attribution, labels, *, target, reference=None,
                   band: tuple[float, float] | None = None, absolute: bool = False,
                   groups=None, statistic: str = "difference") -> ClassContrast:
    """Per-sensor difference (or Welch t) of the attribution between a target and a reference class.

    Parameters
    ----------
    attribution : Attribution | array, shape (n_windows, n_sensors)
        An input-level :class:`~megfm.explain.Attribution` (``gradient_x_input`` or
        ``integrated_gradients``; Grad-CAM only without ``band``) that explains the SAME
        logit in every window (attribute with a fixed ``target=``), or per-window sensor
        values.
    labels : array, shape (n_windows,)
        Class label of each window (e.g. ``windows.metadata["label"]``).
    target : object
        The label of the target class (e.g. ``"migraine"``).
    reference : object | list | None
        Label(s) of the reference class; every other label when None.
    band : (float, float) | None
        ``(fmin, fmax)`` in Hz: use the band-limited attribution
        (:meth:`Attribution.to_bands`); the total over time when None.
    absolute : bool
        Contrast the absolute attribution ``|a|`` instead of the signed one (the contrast of
        the plain map's quantity; its sign then says where the attribution is larger, not
        in which direction it pushes the decision).
    groups : array, shape (n_windows,) | None
        Subject id of each window: average windows per subject first, so each subject
        weighs the same (every subject must have one label). Required with
        ``statistic="t"``.
    statistic : ``"difference"`` | ``"t"``
        ``"difference"`` (default): ``values`` is the difference of the class means.
        ``"t"``: ``values`` is the per-sensor Welch t statistic between the per-subject
        means of the two classes, ``(mean_T - mean_R) / sqrt(var_T / n_T + var_R / n_R)``
        (sample variances over subjects; at least two subjects per class). Use it to rank
        sensors or regions: the difference of two noisy means is largest where the
        attribution varies most between subjects, so with few subjects the difference map
        peaks at high-variance sensors even with no group effect; the t statistic scales
        each sensor by its own between-subject variability, so a small but consistent group
        difference outranks a large noisy one. Subjects, not windows, are the units:
        windows of one subject are not independent.

    Returns
    -------
    contrast : ClassContrast
        ``values`` (signed), ``positive()`` (non-negative, for region ranking), the class
        means, the plain map, and with ``statistic="t"`` the Welch degrees of freedom
        (``dof``).

    Raises
    ------
    ValueError
        On labels of the wrong length, a class with no window, a subject with two labels,
        an attribution that explains different logits in different windows, an unknown
        ``statistic``, or ``statistic="t"`` without ``groups`` or with fewer than two
        subjects in a class.
    """
    if statistic not in ("difference", "t"):
        raise ValueError(f"Unknown statistic {statistic!r}; use 'difference' (difference of "
                         "the class means) or 't' (Welch t statistic over subjects).")
    if statistic == "t" and groups is None:
        raise ValueError("statistic='t' needs 'groups' (the subject id of each window): the t "
                         "statistic compares per-subject means, and windows of one subject are "
                         "not independent units. Pass groups=windows.metadata['subject'].")
    per, geometry = _per_window(attribution, band)
    labels = np.asarray(labels)
    if labels.shape != (per.shape[0],):
        raise ValueError(f"'labels' must have one entry per window ({per.shape[0]}); got shape "
                         f"{labels.shape}.")
    if absolute:
        per = np.abs(per)
    is_target = labels == target
    if reference is None:
        ref_labels = sorted({v for v in labels[~is_target].tolist()}, key=str)
    else:
        ref_labels = list(np.atleast_1d(np.asarray(reference, dtype=object)))
    # compare as Python objects: a cast to the labels' dtype would truncate "CTL_old" to
    # "CTL" (fixed-width strings) or 0.7 to 0 (integer labels)
    is_ref = np.isin(labels.astype(object), np.asarray(ref_labels, dtype=object)) & ~is_target
    if not is_target.any():
        raise ValueError(f"No window has the target label {target!r}; labels present: "
                         f"{sorted(set(labels.tolist()), key=str)}.")
    if not is_ref.any():
        raise ValueError(f"No window has a reference label ({ref_labels}); a contrast needs "
                         "windows of two classes.")
    grp = None
    if groups is not None:
        grp = np.asarray(groups)
        if grp.shape != labels.shape:
            raise ValueError(f"'groups' must have one entry per window ({len(labels)}); got "
                             f"shape {grp.shape}.")
        for g in np.unique(grp):
            if len(np.unique(labels[grp == g])) > 1:
                raise ValueError(f"Group {g!r} has windows with different labels; a subject "
                                 "must belong to one class.")
    with warnings.catch_warnings():  # 'Mean of empty slice' for sensors absent in a class
        warnings.simplefilter("ignore", RuntimeWarning)
        tgt = _mean_units(per[is_target], None if grp is None else grp[is_target])
        ref = _mean_units(per[is_ref], None if grp is None else grp[is_ref])
        # |a| before any averaging: opposite signs within a subject must not cancel
        both = _mean_units(np.abs(per[is_target | is_ref]),
                           None if grp is None else grp[is_target | is_ref])
        t_mean = np.nanmean(tgt, axis=0)
        r_mean = np.nanmean(ref, axis=0)
        plain = np.nanmean(both, axis=0)
    values, dof = t_mean - r_mean, None
    if statistic == "t":
        if len(tgt) < 2 or len(ref) < 2:
            raise ValueError(f"statistic='t' needs at least two subjects per class; got "
                             f"{len(tgt)} with label {target!r} and {len(ref)} with "
                             f"{ref_labels}. Use statistic='difference' or more subjects.")
        values, dof = _welch_t(tgt, ref)
    logger.info("class contrast (%s) %r vs %s over %d / %d units", statistic, target,
                ref_labels, len(tgt), len(ref))
    return ClassContrast(values=values, target_mean=t_mean, reference_mean=r_mean,
                         plain=plain, geometry=geometry, target=target, reference=ref_labels,
                         n_target=len(tgt), n_reference=len(ref),
                         band=None if band is None else (float(band[0]), float(band[1])),
                         statistic=statistic, dof=dof)
