"""Alignment of a sensor map with an expected set of sensors."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["alignment_score", "find_ground_truth"]


def _as_map(sensor_map, names: Sequence[str] | None) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(sensor_map, Mapping):
        keys = [str(k) for k in sensor_map]
        return np.asarray([float(v) for v in sensor_map.values()], dtype=np.float64), keys
    values = np.asarray(sensor_map, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(
            f"The sensor map must be one value per sensor, shape (n_sensors,); got shape "
            f"{values.shape}. Average over windows/time patches first."
        )
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(values):
            raise ValueError(
                f"'names' has {len(names)} entries but the map has {len(values)} sensors."
            )
    return values, names


def alignment_score(sensor_map, expected, *, names: Sequence[str] | None = None) -> float:
    """Fraction of map mass on the expected sensors, relative to a uniform map.

    ``score = (mass on expected / total mass) / (n_expected / n_sensors)``: 1 for a uniform
    map (or one unrelated to the expected set), ``n_sensors / n_expected`` when all the mass
    is on the expected sensors, 0 when none is. Sensors whose value is NaN (absent from the
    recording) count in neither the mass nor the sensor count.

    Parameters
    ----------
    sensor_map : array, shape (n_sensors,) | dict of str to float
        Non-negative weight per sensor (attention mass, absolute attribution, power). A
        dict maps channel names to weights.
    expected : list of str | array of bool, shape (n_sensors,) | array of int
        The expected sensors: channel names (needs ``names`` unless ``sensor_map`` is a
        dict), a boolean mask, or integer indices.
    names : list of str | None
        Channel names of ``sensor_map`` when it is an array.

    Returns
    -------
    score : float
        The alignment ratio (>= 0).
    """
    values, map_names = _as_map(sensor_map, names)
    finite = np.isfinite(values)
    if np.any(values[finite] < 0):
        raise ValueError(
            "The sensor map has negative values; alignment is defined on a mass. Pass "
            "np.abs(map) (or the squared map) instead."
        )
    expected_arr = np.asarray(expected)
    if expected_arr.dtype == bool:
        if expected_arr.shape != values.shape:
            raise ValueError(
                f"Boolean 'expected' has shape {expected_arr.shape}; expected {values.shape}."
            )
        mask = expected_arr.copy()
    elif expected_arr.size and np.issubdtype(expected_arr.dtype, np.integer):
        mask = np.zeros(len(values), bool)
        mask[expected_arr] = True
    else:
        if map_names is None:
            raise ValueError(
                "'expected' lists channel names, so pass 'names' (the channel name of each "
                "map entry) or give the map as a dict."
            )
        wanted = {str(n) for n in expected_arr.tolist()}
        mask = np.array([n in wanted for n in map_names])
    mask &= finite
    n_valid = int(finite.sum())
    n_expected = int(mask.sum())
    if n_expected == 0:
        raise ValueError(
            "None of the expected sensors is present in the map; check the channel names "
            "(the map and the expected set must come from the same sensor array)."
        )
    total = float(values[finite].sum())
    if total <= 0:
        raise ValueError("The sensor map has no mass (all zeros); nothing to align.")
    return float((values[mask].sum() / total) / (n_expected / n_valid))


def _path_strings(obj, depth: int = 0):
    """Strings in a (nested) manifest that may be file-system paths."""
    if depth > 6:
        return
    if isinstance(obj, str):
        if os.sep in obj or obj.endswith((".fif", ".ds", ".con", ".sqd", ".bin")):
            yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _path_strings(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _path_strings(v, depth + 1)


def find_ground_truth(store, ground_truth=None) -> Path | None:
    """Locate the simulator's ``ground_truth.json`` for a store.

    Parameters
    ----------
    store : path-like
        Store folder.
    ground_truth : path-like | None
        Explicit file, or a folder holding ``ground_truth.json``; an error when it does not
        exist.

    Returns
    -------
    path : Path | None
        The file, or None when no candidate exists. Searched, in order: source paths
        recorded in the store manifest (``store.json``) and up to three folders above
        each; the store folder and its parent; the parent's sub-folders (e.g. a cohort
        folder next to the store).
    """
    name = "ground_truth.json"
    if ground_truth is not None:
        path = Path(ground_truth)
        path = path / name if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"No ground-truth file at {path} (expected the simulator's "
                                    f"{name}).")
        return path
    from ..data.store import is_window_source, open_store
    from ..data.streaming import is_remote

    if is_remote(store):  # nothing to search beside an object-store URI
        return None
    store = Path(store)
    candidates: list[Path] = []
    if is_window_source(store):  # a store, or a LitData export (a copy of its manifest)
        try:
            with open_store(store) as reader:
                sources = list(_path_strings(reader.manifest))
        except (OSError, ValueError):
            sources = []
        for s in dict.fromkeys(sources):
            p = Path(s)
            if not p.is_absolute():
                p = store / p
            candidates += list(p.parents)[:4] if p.suffix else [p, *list(p.parents)[:3]]
    candidates += [store, store.parent]
    if store.parent.is_dir():
        candidates += sorted(d for d in store.parent.iterdir() if d.is_dir() and d != store)
    for folder in dict.fromkeys(candidates):
        if (folder / name).is_file():
            return folder / name
    return None
