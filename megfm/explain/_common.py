"""Shared plumbing of :mod:`megfm.explain`: inputs, model calls, geometry -> Info, unions.

Batches come from :func:`megfm.data.batch.iter_batches`, the one batch builder.
"""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike

import mne
import numpy as np

from ..data.geometry import SensorGeometry
from ..data.windows import Windows

__all__ = ["geometry_to_info"]


def geometry_to_info(geometry: SensorGeometry, *, sfreq: float = 1000.0,
                     dev_head_t=None) -> mne.Info:
    """Build an :class:`mne.Info` from a :class:`~megfm.data.SensorGeometry`.

    Same as :meth:`SensorGeometry.to_info` (one coil per sensor type, chosen there), after checking
    that the geometry has sensor locations, so that :func:`mne.viz.plot_topomap` and MNE's
    forward modelling work for any MEG system. Positions stay in the geometry's frame;
    ``info["dev_head_t"]`` is ``dev_head_t`` (the identity by default, i.e. device frame =
    head frame).

    Parameters
    ----------
    geometry : SensorGeometry
        Sensor names, positions (m), orientations and types.
    sfreq : float
        Sampling frequency written into the Info.
    dev_head_t : mne.transforms.Transform | array, shape (4, 4) | None
        Device -> head transform to record (for source modelling of a device-frame
        geometry); identity when None or when the geometry is already in the head frame.

    Returns
    -------
    info : mne.Info
        Info with one MEG channel per sensor, ``info["bads"]`` from ``geometry.bads``.
    """
    if not isinstance(geometry, SensorGeometry):
        raise TypeError(f"'geometry' must be a SensorGeometry; got {type(geometry).__name__}.")
    _check_locations(geometry)
    return geometry.to_info(sfreq, dev_head_t=dev_head_t)


def _check_locations(geometry: SensorGeometry) -> None:
    pos = np.asarray(geometry.positions, dtype=np.float64)
    if pos.size == 0 or not np.all(np.isfinite(pos)) or np.allclose(pos, 0.0):
        raise ValueError(
            "The sensor geometry has no sensor locations (all positions are zero or missing), "
            "so no topomap or source model is possible. Use windows from a recording read with "
            "its native reader, or set locations from an Info of the same system."
        )


def _load_windows(windows_or_store) -> Windows:
    """Accept a :class:`Windows` or the path of a store (read with ``megfm.read_store``)."""
    if isinstance(windows_or_store, Windows):
        return windows_or_store
    if isinstance(windows_or_store, (str, PathLike)):
        from ..data.store import read_store  # deferred: the store layer is optional here

        windows = read_store(windows_or_store)
        if not isinstance(windows, Windows):
            raise TypeError(f"read_store returned {type(windows).__name__}, not Windows.")
        return windows
    raise TypeError(
        "'windows_or_store' must be a megfm Windows object or the path of a store; got "
        f"{type(windows_or_store).__name__}."
    )


def _model_device(model):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


def _feature_kwargs(model, sfreq: float) -> dict:
    """``sfreq=`` for models whose ``forward_features`` checks the sampling rate."""
    import inspect

    try:
        params = inspect.signature(model.forward_features).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return {}
    return {"sfreq": float(sfreq)} if "sfreq" in params else {}


def _split_attention(out) -> tuple[object, dict]:
    """Split the output of ``forward_features(..., return_attention=True)``."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        return out
    if isinstance(out, dict) and "attention" in out:
        return out.get("features", out.get("latents")), out["attention"]
    raise TypeError(
        "The model's forward_features(..., return_attention=True) must return "
        "(features, attention) or a dict with 'attention'; got "
        f"{type(out).__name__}."
    )


def _group_keys(windows: Windows, by: tuple[str, ...]) -> list[tuple]:
    for col in by:
        if col not in windows.metadata:
            raise ValueError(
                f"Invalid value for 'by': {col!r} is not a metadata column; expected any of "
                f"{sorted(windows.metadata)}."
            )
    return [tuple(str(windows.metadata[c][i]) for c in by) for i in range(windows.n_windows)]


def _mean_units(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Rows averaged per group (NaN-aware), groups in ``np.unique`` order; ``values`` as is
    when ``groups`` is None (the windows are the units)."""
    if groups is None:
        return values
    return np.stack([np.nanmean(values[groups == g], axis=0) for g in np.unique(groups)])


def _union_columns(windows: Windows, union: SensorGeometry
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per recording geometry: ``(window rows, its valid sensor rows, their union columns)``,
    to place per-window, per-sensor values on the union geometry (bad sensors left out)."""
    col = {n: i for i, n in enumerate(union.names)}
    rec = np.asarray(windows.metadata["recording"]) if "recording" in windows.metadata else \
        np.zeros(windows.n_windows, int)
    for g_i, geom in enumerate(windows.geometries):
        rows = np.flatnonzero(rec == g_i)
        if len(rows):
            valid = np.flatnonzero(~np.asarray(geom.bads, bool))
            yield rows, valid, np.array([col[geom.names[i]] for i in valid], dtype=np.int64)


def _union_geometry(geometries: list[SensorGeometry]) -> SensorGeometry:
    """Sensors of all geometries, by name, in order of first appearance."""
    seen: dict[str, tuple[int, int]] = {}
    for g_i, geom in enumerate(geometries):
        for s_i, name in enumerate(geom.names):
            seen.setdefault(name, (g_i, s_i))
    names = list(seen)
    rows = [seen[n] for n in names]
    pick = lambda attr: np.array([getattr(geometries[g], attr)[s] for g, s in rows])  # noqa: E731
    return SensorGeometry(
        names=names,
        positions=pick("positions").reshape(-1, 3),
        orientations=pick("orientations").reshape(-1, 3),
        types=pick("types"),
        bads=np.zeros(len(names), bool),
        frame=geometries[0].frame,
    )

