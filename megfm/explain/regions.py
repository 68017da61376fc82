"""From a sensor map to brain regions: minimum-norm projection and ranked region scores.

A sensor map from :mod:`megfm.explain` (attention mass, absolute attribution) is
non-negative, a power-like quantity rather than a signed field. :func:`project_to_sources`
therefore solves the minimum-norm problem on the *power gain* of the array's forward model,
``P[s, j] = sum_o G[s, j, o] ** 2`` (sensor ``s``, source ``j``, three orientations), after
whitening each sensor type to a common scale, with MNE's depth weighting and a Tikhonov
regulariser set from ``snr``: ``w = R P^T (P R P^T + lambda^2 I)^-1 m``. With
``mode="field"`` a signed map is projected with the ordinary free-orientation minimum-norm
operator on ``G`` and the source power is the squared amplitude summed over orientations.

The forward model comes from MNE (:func:`mne.make_forward_solution`): a sphere head model
and a volume grid of sources by default, or a BEM and source space when given.
:func:`region_scores` then scores named regions: the simulator's set (head-frame centres in
``ground_truth.json`` -> ``regions``, scored within a radius) or :class:`mne.Label` objects
(e.g. Desikan-Killiany from ``mne.read_labels_from_annot(subject, "aparc")``) on a surface
source space. A region's score is its share of the source power divided by its share of
the power a uniform sensor map puts there through the same operator, so 1 means "no more
than a uniform map" and the array's own spatial bias cancels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import mne
import numpy as np

from ..data.geometry import SensorGeometry
from ._common import _check_locations, geometry_to_info

__all__ = ["SourceMap", "format_region_table", "null_region_scores", "project_to_sources",
           "rank_regions", "region_scores"]

logger = logging.getLogger(__name__)

#: Sphere model used when no BEM is given: origin (m, head frame) and head radius (m).
SPHERE_ORIGIN = (0.0, 0.0, 0.04)
HEAD_RADIUS = 0.09


@dataclass
class SourceMap:
    """Non-negative source power on a source space.

    Attributes
    ----------
    positions : array, shape (n_sources, 3)
        Source positions in metres (head frame, which equals MRI with ``trans=None``).
    power : array, shape (n_sources,)
        Source power, normalised to sum 1.
    vertices : list of array
        Vertex numbers per source-space part (per hemisphere for a surface source space),
        for scoring :class:`mne.Label` regions.
    baseline : array, shape (n_sources,) | None
        Source power of a uniform sensor map through the same operator (sums to 1): the
        reference of :func:`region_scores`, which removes the spatial bias of the array
        and the inverse (regions near many sensors). None: the share of source points.
    """

    positions: np.ndarray
    power: np.ndarray
    vertices: list[np.ndarray]
    baseline: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, np.float64).reshape(-1, 3)
        self.power = np.asarray(self.power, np.float64).reshape(-1)
        if len(self.power) != len(self.positions):
            raise ValueError("SourceMap: 'power' and 'positions' differ in length.")


def _default_sphere():
    return mne.make_sphere_model(r0=SPHERE_ORIGIN, head_radius=HEAD_RADIUS, verbose=False)


_FORWARD_CACHE: dict = {}  # default (sphere, grid) forward models, by sensor layout


def _forward(info: mne.Info, *, bem, src, trans, spacing: float):
    cacheable = bem is None and src is None and trans is None
    if cacheable:
        key = (tuple(info["ch_names"]), float(spacing), info["dev_head_t"]["trans"].tobytes(),
               np.array([ch["loc"] for ch in info["chs"]]).round(7).tobytes(),
               tuple(int(ch["coil_type"]) for ch in info["chs"]))
        if key in _FORWARD_CACHE:
            return _FORWARD_CACHE[key]
    sphere = _default_sphere() if bem is None else bem
    if src is None:
        if bem is None:
            bounds = np.array([*SPHERE_ORIGIN, 0.9 * HEAD_RADIUS])  # inner skull
            src = mne.setup_volume_source_space(pos=spacing * 1e3, sphere=bounds, mindist=5.0,
                                                verbose=False)
        else:
            src = mne.setup_volume_source_space(pos=spacing * 1e3, bem=bem, mindist=5.0,
                                                verbose=False)
    fwd = mne.make_forward_solution(info, trans=trans, src=src, bem=sphere, meg=True, eeg=False,
                                    mindist=0.0, verbose=False)
    fwd = mne.convert_forward_solution(fwd, surf_ori=False, force_fixed=False, verbose=False)
    if cacheable:
        if len(_FORWARD_CACHE) >= 4:
            _FORWARD_CACHE.pop(next(iter(_FORWARD_CACHE)))
        _FORWARD_CACHE[key] = fwd
    return fwd


def project_to_sources(sensor_map, sensors: SensorGeometry | mne.Info, *, mode: str = "power",
                       bem=None, src=None, trans=None, dev_head_t=None, snr: float = 3.0,
                       depth: float = 0.5, spacing: float = 0.01, verbose=None) -> SourceMap:
    """Project a sensor map to source space with a minimum-norm estimate.

    Parameters
    ----------
    sensor_map : array, shape (n_sensors,)
        One value per sensor (NaN for absent sensors, which are left out). Non-negative for
        ``mode="power"``.
    sensors : SensorGeometry | mne.Info
        The sensors of the map, in order (an Info is used as is: its MEG channels must be
        those of the map; a geometry goes through :func:`geometry_to_info`).
    mode : ``"power"`` | ``"field"``
        Treat the map as sensor power (default, for attention and absolute attribution) or
        as a signed field.
    bem : ConductorModel | path-like | None
        Head model; a sphere (origin ``SPHERE_ORIGIN``, radius ``HEAD_RADIUS``) when None.
    src : SourceSpaces | None
        Source space; a volume grid (``spacing`` m) inside the head model when None.
    trans : Transform | path-like | None
        Head <-> MRI transform (identity when None).
    dev_head_t : Transform | array, shape (4, 4) | None
        Device -> head transform for a device-frame geometry (e.g.
        ``megfm.simulate.sensor_array(kind)["dev_head_t"]`` for a simulated array); the
        identity when None. Ignored when ``sensors`` is an Info (its own is used).
    snr : float
        Assumed SNR; the regulariser is ``lambda^2 = 1 / snr^2`` times the mean gain.
    depth : float
        Depth-weighting exponent (0 disables it; 0.5 ranks planted single sources best
        in our tests of the power operator, MNE's field default is 0.8).
    spacing : float
        Grid spacing (m) of the default volume source space.
    verbose : bool | str | int | None
        Control MNE's log level.

    Returns
    -------
    source_map : SourceMap
    """
    if mode not in ("power", "field"):
        raise ValueError(f"Invalid value for 'mode': expected 'power' or 'field'; got {mode!r}.")
    values = np.asarray(sensor_map, dtype=np.float64).reshape(-1)
    if isinstance(sensors, SensorGeometry):
        if sensors.n_sensors != len(values):
            raise ValueError(f"The map has {len(values)} values but the geometry has "
                             f"{sensors.n_sensors} sensors.")
        info = geometry_to_info(sensors, dev_head_t=dev_head_t)
    elif isinstance(sensors, mne.Info):
        info = mne.pick_info(sensors, mne.pick_types(sensors, meg=True, ref_meg=False,
                                                     exclude=[]))
        if len(info["ch_names"]) != len(values):
            raise ValueError(f"The map has {len(values)} values but the Info has "
                             f"{len(info['ch_names'])} MEG channels.")
        locs = np.array([ch["loc"][:3] for ch in info["chs"]])
        if not np.all(np.isfinite(locs)) or np.allclose(locs, 0):
            raise ValueError("The Info has no sensor locations, so no source model is "
                             "possible; use an Info with sensor positions.")
    else:
        raise TypeError(f"'sensors' must be a SensorGeometry or mne.Info; got "
                        f"{type(sensors).__name__}.")
    keep = np.isfinite(values)
    if mode == "power" and np.any(values[keep] < 0):
        raise ValueError("mode='power' needs a non-negative map; pass np.abs(map), or use "
                         "mode='field' for a signed field.")
    if not np.any(values[keep]):
        raise ValueError("The sensor map is all zeros; nothing to project.")
    with info._unlock():
        info["bads"] = []
    info = mne.pick_info(info, np.flatnonzero(keep))
    m = values[keep]
    with mne.use_log_level(verbose if verbose is not None else "error"):
        fwd = _forward(info, bem=bem, src=src, trans=trans, spacing=spacing)
    gain = fwd["sol"]["data"].astype(np.float64).copy()  # (S, 3 * n_src), free orientation
    # whiten: give every sensor type the same overall gain scale
    ch_types = np.array(info.get_channel_types())
    for t in np.unique(ch_types):
        rows = ch_types == t
        scale = np.sqrt(np.mean(gain[rows] ** 2))
        gain[rows] /= scale
        if mode == "field":
            m = m.copy()
            m[rows] /= max(np.sqrt(np.mean(m[rows] ** 2)), 1e-30)
        else:
            m = m.copy()
            m[rows] /= max(np.mean(m[rows]), 1e-30)
    n_src = gain.shape[1] // 3
    g3 = gain.reshape(gain.shape[0], n_src, 3)
    if mode == "power":
        lead = (g3 ** 2).sum(-1)  # (S, n_src) power gain
        col_norm = np.linalg.norm(lead, axis=0)
    else:
        lead = gain
        col_norm = np.repeat(np.linalg.norm(g3, axis=(0, 2)), 3)
    # depth weighting; sources MEG cannot see (e.g. the sphere centre) get no prior weight
    seen = col_norm > 1e-6 * col_norm.max()
    prior = np.where(seen, np.maximum(col_norm, 1e-30) ** (-2.0 * depth), 0.0)
    lrl = (lead * prior) @ lead.T
    lam2 = np.trace(lrl) / lrl.shape[0] / snr ** 2
    operator = prior[:, None] * (lead.T @ np.linalg.inv(lrl + lam2 * np.eye(lrl.shape[0])))

    def _power(data: np.ndarray) -> np.ndarray:
        est = operator @ data
        if mode == "power":
            out = np.clip(est, 0.0, None)
        else:
            out = (est.reshape(n_src, 3) ** 2).sum(-1)
        total = out.sum()
        return out / total if total > 0 else out

    power = _power(m)
    # reference: a uniform map (power mode) or a flat field of the same norm (field mode)
    baseline = _power(np.ones_like(m)) if mode == "power" else None
    positions = np.concatenate([s["rr"][s["vertno"]] for s in fwd["src"]])
    vertices = [np.asarray(s["vertno"]) for s in fwd["src"]]
    return SourceMap(positions=positions, power=power, vertices=vertices, baseline=baseline)


def _load_regions(regions) -> dict:
    if isinstance(regions, (str, PathLike)):
        path = Path(regions)
        if not path.is_file():
            raise FileNotFoundError(f"No ground-truth file at {path}.")
        regions = json.loads(path.read_text())
    if isinstance(regions, Mapping) and "regions" in regions and isinstance(
            regions["regions"], Mapping):
        regions = regions["regions"]
    if not isinstance(regions, Mapping) or not regions:
        raise ValueError("'regions' must be a non-empty dict {name: {'position': [x, y, z]}} "
                         "(ground_truth.json 'regions'), a path to ground_truth.json, or a "
                         "list of mne.Label.")
    return dict(regions)


def region_scores(source_map: SourceMap, regions, *, radius: float = 0.02,
                  reference: str = "uniform") -> list[dict]:
    """Score named regions of a source map; a ranked table.

    Parameters
    ----------
    source_map : SourceMap
        From :func:`project_to_sources`.
    regions : dict | path-like | list of mne.Label
        ``{name: {"position": [x, y, z], "hemisphere": ...}}`` in head-frame metres (the
        ``regions`` of the simulator's ``ground_truth.json``, or the file itself), scored
        over the sources within ``radius``; or labels (e.g. Desikan-Killiany) on the
        surface source space of ``source_map``.
    radius : float
        Radius (m) of a region given by its centre.
    reference : ``"uniform"`` | ``"points"``
        What a score of 1 means: the region's share of a uniform sensor map's projection
        (default; cancels the bias of the array and the operator towards some regions),
        or its share of the source points.

    Returns
    -------
    table : list of dict
        One row per region, best first: ``rank``, ``region``, ``score`` (power share /
        the share of a uniform sensor map's projection, or of the source points when the
        map has no baseline; 1 = no more than uniform), ``power`` (share of source power),
        ``n_sources``, ``hemisphere``.
    """
    if reference == "noise":
        raise ValueError("reference='noise' needs the sensor map itself: use "
                         "rank_regions(sensor_map, sensors, regions, reference='noise').")
    if reference not in ("uniform", "points"):
        raise ValueError(f"Invalid value for 'reference': expected 'uniform' or 'points'; "
                         f"got {reference!r}.")
    if reference == "points" and source_map.baseline is not None:
        source_map = SourceMap(source_map.positions, source_map.power, source_map.vertices)
    rows = []
    n_total = len(source_map.power)
    if isinstance(regions, Sequence) and not isinstance(regions, (str, bytes)) and regions \
            and isinstance(regions[0], mne.Label):
        offsets = np.cumsum([0] + [len(v) for v in source_map.vertices])
        for label in regions:
            part = 0 if label.hemi == "lh" else 1
            if part >= len(source_map.vertices):
                raise ValueError(f"Label {label.name!r} is on hemisphere {label.hemi!r} but the "
                                 "source space has no such part; use a surface source space.")
            inside = np.flatnonzero(np.isin(source_map.vertices[part], label.vertices))
            sel = offsets[part] + inside
            rows.append(_row(label.name, source_map.power[sel], _ref(source_map, sel, n_total),
                             label.hemi))
    else:
        for name, spec in _load_regions(regions).items():
            centre = np.asarray(spec["position"] if isinstance(spec, Mapping) else spec, float)
            dist = np.linalg.norm(source_map.positions - centre, axis=1)
            inside = dist <= radius
            hemi = spec.get("hemisphere", "") if isinstance(spec, Mapping) else ""
            rows.append(_row(str(name), source_map.power[inside],
                             _ref(source_map, inside, n_total), hemi))
    rows.sort(key=lambda r: (-r["score"], r["region"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _ref(source_map: SourceMap, sel, n_total: int) -> float:
    """Share of the region under the reference: the uniform-map projection, or point count."""
    if source_map.baseline is not None:
        return float(np.asarray(source_map.baseline)[sel].sum())
    sel = np.asarray(sel)
    count = int(sel.sum()) if sel.dtype == bool else len(sel)
    return count / n_total


def _row(name: str, power: np.ndarray, reference: float, hemi) -> dict:
    n = int(len(power))
    share = float(power.sum())
    score = share / reference if n and reference > 0 else 0.0
    return {"rank": 0, "region": name, "score": score, "power": share, "n_sources": n,
            "hemisphere": str(hemi or "")}


def rank_regions(sensor_map, sensors: SensorGeometry | mne.Info, regions, *,
                 radius: float = 0.02, reference: str = "uniform", n_null: int = 40,
                 seed: int = 0, **kwargs) -> list[dict]:
    """Project a sensor map to sources and rank regions (see :func:`region_scores`).

    Parameters
    ----------
    sensor_map : array, shape (n_sensors,)
        One value per sensor.
    sensors : SensorGeometry | mne.Info
        The sensors of the map; an error when they have no locations.
    regions : dict | path-like | list of mne.Label
        Regions to score.
    radius : float
        Radius (m) of regions given by centre.
    reference : ``"uniform"`` | ``"points"`` | ``"noise"``
        Reference of the scores (see :func:`region_scores`). ``"noise"``: each region's
        uniform-referenced score divided by its mean over ``n_null`` sensor maps of pure
        noise (the positive part of i.i.d. N(0, 1) per sensor) ranked the same way, so a
        score of 1 means "no more than noise gives this region". Use it when a map is
        noisy: the minimum-norm projection gives some regions (on the simulated arrays the
        lateral auditory and occipital ones) far more of a noise map's power than others,
        and they then top the table whatever the map.
    n_null : int
        Noise maps of the ``"noise"`` reference.
    seed : int
        Seed of the noise maps.
    **kwargs
        Passed to :func:`project_to_sources` (``mode``, ``bem``, ``src``, ``snr``, ...).

    Returns
    -------
    table : list of dict
        Ranked rows (see :func:`region_scores`); with ``reference="noise"`` also
        ``score_uniform`` (the uniform-referenced score) and ``null_mean`` (its mean over
        the noise maps).
    """
    if isinstance(sensors, SensorGeometry):
        _check_locations(sensors)
    if reference != "noise":
        return region_scores(project_to_sources(sensor_map, sensors, **kwargs), regions,
                             radius=radius, reference=reference)
    if int(n_null) < 1:
        raise ValueError(f"Invalid value for 'n_null': expected an integer >= 1; got {n_null}.")
    table = region_scores(project_to_sources(sensor_map, sensors, **kwargs), regions,
                          radius=radius, reference="uniform")
    values = np.asarray(sensor_map, dtype=float).reshape(-1)
    # noise maps miss the same sensors as the map, so both use the same forward operator
    null = null_region_scores(sensors, regions, n_null=n_null, seed=seed, radius=radius,
                              n_sensors=values.size, missing=~np.isfinite(values), **kwargs)
    for row in table:
        mean = null[row["region"]]
        row["score_uniform"], row["null_mean"] = row["score"], mean
        row["score"] = row["score"] / mean if mean > 0 else 0.0
    table.sort(key=lambda r: (-r["score"], r["region"]))
    for i, row in enumerate(table, 1):
        row["rank"] = i
    return table


def null_region_scores(sensors: SensorGeometry | mne.Info, regions, *, n_null: int = 40,
                       seed: int = 0, radius: float = 0.02, n_sensors: int | None = None,
                       missing=None, **kwargs) -> dict[str, float]:
    """Mean uniform-referenced score of each region over sensor maps of pure noise.

    Each noise map holds i.i.d. N(0, 1) values, one per sensor, drawn from
    ``numpy.random.default_rng(seed)`` (their positive part unless ``mode="field"``, as a
    power map is non-negative); each is scored by :func:`region_scores` after
    :func:`project_to_sources` (``**kwargs``). The denominator of
    ``rank_regions(..., reference="noise")``.

    Parameters
    ----------
    missing : array of bool, shape (n_sensors,) | None
        Sensors absent from the map being ranked (NaN there): NaN in every noise map too, so
        the projection drops the same sensors.

    Returns
    -------
    null_mean : dict
        Region name -> mean score.
    """
    if n_sensors is None:
        n_sensors = (sensors.n_sensors if isinstance(sensors, SensorGeometry)
                     else len(mne.pick_types(sensors, meg=True, ref_meg=False, exclude=[])))
    missing = (np.zeros(n_sensors, bool) if missing is None
               else np.asarray(missing, bool).reshape(-1))
    if missing.size != n_sensors:
        raise ValueError(f"'missing' has {missing.size} values for {n_sensors} sensors; give "
                         "one flag per sensor of the map.")
    signed = kwargs.get("mode", "power") == "field"
    rng = np.random.default_rng(seed)
    totals: dict[str, float] = {}
    for _ in range(int(n_null)):
        noise = rng.standard_normal(n_sensors)
        noise = noise if signed else np.clip(noise, 0.0, None)
        noise[missing] = np.nan
        for row in region_scores(project_to_sources(noise, sensors, **kwargs), regions,
                                 radius=radius, reference="uniform"):
            totals[row["region"]] = totals.get(row["region"], 0.0) + row["score"]
    return {name: total / int(n_null) for name, total in totals.items()}


def format_region_table(table: Sequence[dict], *, top: int | None = None) -> str:
    """Render a ranked region table as Markdown."""
    lines = ["| rank | region | hemisphere | score | power share | sources |",
             "|---:|---|---|---:|---:|---:|"]
    for r in list(table)[:top]:
        lines.append(f"| {r['rank']} | {r['region']} | {r['hemisphere']} | {r['score']:.2f} | "
                     f"{r['power']:.3f} | {r['n_sources']} |")
    return "\n".join(lines)
