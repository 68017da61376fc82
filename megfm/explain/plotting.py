"""Sensor topomaps of explanation maps, per state and per sensor type, to PNG."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.geometry import SENSOR_TYPES, SensorGeometry, fit_sphere
from ._common import _check_locations, geometry_to_info

__all__ = ["plot_sensor_map", "plot_state_topomaps"]

logger = logging.getLogger(__name__)

_TYPE_TITLES = {"mag": "magnetometers", "planar_grad": "planar gradiometers (pairs summed)",
                "axial_grad": "axial gradiometers", "opm": "OPM (axes of a site summed)"}


def _panel_values(values: np.ndarray, geometry: SensorGeometry, code: int):
    """Values and a magnetometer-like geometry for one sensor type (planar pairs summed)."""
    idx = np.flatnonzero((geometry.types == code) & np.isfinite(values))
    if len(idx) == 0:
        return None, None
    pos = geometry.positions[idx].astype(np.float64)
    vals = values[idx]
    if len(idx) > 1:
        # sensors sharing a site (planar gradiometer pairs, OPM axes): sum their mass
        keys = np.round(pos / 1e-4).astype(np.int64)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        summed = np.zeros(len(first))
        np.add.at(summed, inverse, vals)
        idx, vals, pos = idx[first], summed, pos[first]
    radial = pos - pos.mean(axis=0)
    norms = np.linalg.norm(radial, axis=1, keepdims=True)
    geom = SensorGeometry(names=[geometry.names[i] for i in idx], positions=pos,
                          orientations=radial / np.where(norms > 0, norms, 1.0),
                          types=np.zeros(len(idx), np.int64), frame=geometry.frame)
    return vals, geom


def _sphere(positions: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares sphere through the sensors (the helmet), for the topomap projection."""
    centre, radius = fit_sphere(positions)
    # too few, no sphere (fit_sphere gave the mean) or not helmet-sized: below the mean instead
    if len(positions) < 8 or np.allclose(centre, positions.mean(axis=0)) \
            or not 0.03 < radius < 0.3:
        centre = positions.mean(axis=0) - np.array([0.0, 0.0, 0.05])
        radius = float(np.median(np.linalg.norm(positions - centre, axis=1)))
    # MNE draws the head outline at the sphere radius; the helmet sits ~2 cm outside it
    return (float(centre[0]), float(centre[1]), float(centre[2]), 0.085)


def plot_sensor_map(values, geometry: SensorGeometry, *, sensor_type: str | None = None,
                    axes=None, title: str | None = None, cmap: str = "Reds"):
    """Plot one sensor map as a topomap (one sensor type).

    Parameters
    ----------
    values : array, shape (n_sensors,)
        One value per sensor of ``geometry`` (NaN = absent, not drawn).
    geometry : SensorGeometry
        The sensors; must have locations.
    sensor_type : str | None
        One of ``SENSOR_TYPES``; the most numerous type present when None. Sensors that
        share a site (planar gradiometer pairs, the axes of an OPM) are summed.
    axes : matplotlib Axes | None
        Where to draw; a new figure when None.
    title : str | None
        Axes title.
    cmap : str
        Colour map.

    Returns
    -------
    fig : matplotlib Figure
    """
    import matplotlib.pyplot as plt
    import mne

    _check_locations(geometry)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != geometry.n_sensors:
        raise ValueError(f"The map has {len(values)} values but the geometry has "
                         f"{geometry.n_sensors} sensors.")
    present = [t for t in range(len(SENSOR_TYPES))
               if np.any((geometry.types == t) & np.isfinite(values))]
    if not present:
        raise ValueError("The sensor map has no finite value to plot.")
    if sensor_type is None:
        code = max(present, key=lambda t: int((geometry.types == t).sum()))
    else:
        if sensor_type not in SENSOR_TYPES:
            raise ValueError(f"Invalid value for 'sensor_type': expected one of {SENSOR_TYPES}; "
                             f"got {sensor_type!r}.")
        code = SENSOR_TYPES.index(sensor_type)
        if code not in present:
            raise ValueError(f"No {sensor_type!r} sensor in this map; present: "
                             f"{[SENSOR_TYPES[t] for t in present]}.")
    vals, geom = _panel_values(values, geometry, code)
    if axes is None:
        fig, axes = plt.subplots(figsize=(3.2, 3.2))
    else:
        fig = axes.figure
    info = geometry_to_info(geom)
    im, _ = mne.viz.plot_topomap(vals, info, axes=axes, show=False, cmap=cmap,
                                 vlim=(float(np.min(vals)), float(np.max(vals))),
                                 sphere=_sphere(geom.positions.astype(np.float64)),
                                 contours=4, sensors=True)
    fig.colorbar(im, ax=axes, shrink=0.7, label="weight")
    axes.set_title(title or _TYPE_TITLES[SENSOR_TYPES[code]], fontsize=9)
    return fig


def plot_state_topomaps(maps, out_dir: str | os.PathLike, *, kind: str = "spatial",
                        states: Sequence | None = None, prefix: str = "attention",
                        dpi: int = 110) -> list[Path]:
    """Write one topomap PNG per group (state) of an :class:`AttentionMaps`.

    Each PNG has one panel per sensor type present (magnetometers, planar gradiometer
    pairs, axial gradiometers, OPM), so mixed arrays are not drawn on one colour scale.

    Parameters
    ----------
    maps : AttentionMaps
        From :func:`megfm.explain.attention_maps`.
    out_dir : path-like
        Folder for the PNGs (created).
    kind : ``"spatial"`` | ``"rollout"`` | ``"event"``
        Which map to draw (``"event"``: the event-related change, event-locked groups only).
    states : sequence | None
        Groups to draw (all when None); an absent one raises a ValueError.
    prefix : str
        File names are ``{prefix}_{group}.png``.
    dpi : int
        Resolution.

    Returns
    -------
    paths : list of Path
        The PNG files written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = maps.keys if states is None else [maps._key(s) for s in states]
    geometry = maps.geometry
    paths = []
    for key in keys:
        values = maps.get(key, kind=kind)
        codes = [t for t in range(len(SENSOR_TYPES))
                 if np.any((geometry.types == t) & np.isfinite(values))]
        fig, axes = plt.subplots(1, len(codes), figsize=(3.4 * len(codes), 3.4), squeeze=False)
        for ax, code in zip(axes[0], codes, strict=True):
            plot_sensor_map(values, geometry, sensor_type=SENSOR_TYPES[code], axes=ax)
        label = "_".join(key)
        fig.suptitle(f"{kind} attention: {'/'.join(key)} (n={maps.n_windows[key]} windows)",
                     fontsize=10)
        fig.tight_layout()
        path = out / f"{prefix}_{_safe(label)}.png"
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=dpi)
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)
        logger.info("Wrote %s", path)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "all"
