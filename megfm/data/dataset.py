"""`WindowDataset`: a lazy torch Dataset over a megfm store, and the checks of a batch.

Only ``torch.utils.data`` is used here (no ``torch.nn``). Each item is one window with its
sensor geometry; :func:`megfm.data.batch.collate_windows` pads windows from recordings with
different sensor counts into one :class:`~megfm.data.batch.Batch`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .batch import BATCH_KEYS, Batch, collate_windows, geometry_tensors
from .store import StoreReader, open_store

# collate_windows and BATCH_KEYS live in .batch; re-exported where they were first defined
__all__ = ["BATCH_KEYS", "BadWindowsError", "WindowDataset", "batch_indices", "check_batch",
           "collate_windows", "naming_windows"]


def _as_values(name: str, values) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        values = [values]
    out = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    if not out:
        raise ValueError(f"'{name}' is empty; pass None to keep every value.")
    return out


class WindowDataset(Dataset):
    """Windows of a store (or its LitData export) as a map-style torch Dataset, read lazily.

    Only the metadata and the sensor geometries are loaded when the dataset is made; signals
    are read window by window. Shard files are opened on first access in each process, so
    every DataLoader worker opens its own handles (none is ever pickled).

    Parameters
    ----------
    path : str | Path | StoreReader
        Store folder written by :func:`megfm.write_store`, a LitData export of one
        (``megfm export``; a folder or an object-store URI), or an open reader of either
        (its metadata, already read, is shared instead of read again).
    states, subjects, labels : str | list of str | None
        Keep only windows whose ``state`` / ``subject`` / ``label`` is one of these.
        Every value must occur in the store.
    indices : array of int | None
        Global store indices to start from (in this order); the filters then apply.
    dtype : torch.dtype | None
        Dtype of ``x``; None (default) keeps the store's dtype, so a float16 store sends
        half the bytes to the device (the model upcasts at its input).

    Attributes
    ----------
    reader : StoreReader
    indices : array of int, shape (n_windows,)
        Global store index of each item.
    metadata : dict of str to array, shape (n_windows,)
        Metadata of the selected windows (``recording`` indexes :attr:`geometries`).
    geometries : list of SensorGeometry
        One per shard of the store.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        states: str | Sequence[str] | None = None,
        subjects: str | Sequence[str] | None = None,
        labels: str | Sequence[str] | None = None,
        indices: Iterable[int] | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if dtype is not None and (not isinstance(dtype, torch.dtype)
                                  or not dtype.is_floating_point):
            raise TypeError(f"'dtype' must be a floating torch.dtype or None; got {dtype!r}.")
        # a reader shared by several datasets of one store reads its metadata once
        self.reader = open_store(path)  # a reader passed in is shared as it is
        self.path = self.reader.path if isinstance(path, StoreReader) else path
        self.dtype = getattr(torch, self.reader.dtype) if dtype is None else dtype
        meta = self.reader.metadata
        self.geometries = self.reader.geometries
        self.reader.close()  # handles are opened again lazily, per process
        n = len(self.reader)
        if indices is None:
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"'indices' must be integers; got dtype {idx.dtype}.")
            idx = idx.astype(np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"'indices' must lie in [0, {n}) for the store {path}.")
        keep = np.ones(idx.size, dtype=bool)
        for name, column in (("states", "state"), ("subjects", "subject"), ("labels", "label")):
            wanted = _as_values(name, {"states": states, "subjects": subjects,
                                       "labels": labels}[name])
            if wanted is None:
                continue
            present = set(np.unique(meta[column]).tolist())
            missing = [w for w in wanted if w not in present]
            if missing:
                raise ValueError(
                    f"Invalid value for '{name}': {missing} not in the store {path}; "
                    f"it holds {sorted(present)}."
                )
            keep &= np.isin(meta[column][idx], wanted)
        self.indices = idx[keep]
        self.metadata = {k: v[self.indices] for k, v in meta.items()}
        # Per-shard geometry tensors, shared by all windows of a shard.
        self._geom = [geometry_tensors(g) for g in self.geometries]

    @property
    def sfreq(self) -> float:
        """Sampling frequency in Hz."""
        return self.reader.sfreq

    @property
    def n_times(self) -> int:
        """Samples per window."""
        return self.reader.n_times

    def __len__(self) -> int:
        return int(self.indices.size)

    def _item(self, data: np.ndarray, shard: int, index: int) -> dict[str, torch.Tensor]:
        g = self._geom[shard]
        return {
            "x": torch.from_numpy(data).to(self.dtype),
            "pos": g["pos"],
            "ori": g["ori"],
            "sensor_type": g["sensor_type"],
            "sensor_mask": g["sensor_mask"],
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"Index {i} out of range for a WindowDataset of {n} windows.")
        index = int(self.indices[int(i)])
        data, shard = self.reader.read_window(index)
        return self._item(data, shard, index)

    def __getitems__(self, items: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Read a whole batch, grouping reads by shard (used by the DataLoader)."""
        pos = np.asarray(items, dtype=np.int64)
        n = len(self)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"Index out of range for a WindowDataset of {n} windows.")
        index = self.indices[pos]
        shard, row = self.reader.locate(index)
        out: list[dict[str, torch.Tensor] | None] = [None] * pos.size
        for k in np.unique(shard):
            where = np.flatnonzero(shard == k)
            # in the store's type: _item converts once, if at all (float16 stays float16)
            arrays = self.reader.read_row_arrays(int(k), row[where])
            for j, w in enumerate(where):
                out[w] = self._item(arrays[j], int(k), int(index[w]))
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        states = sorted(set(self.metadata["state"].tolist()))
        return (f"<WindowDataset | {len(self)} windows of {self.n_times} samples @ "
                f"{self.sfreq:g} Hz, states={states}, store={self.path}>")


class BadWindowsError(ValueError, FloatingPointError):
    """Windows a model cannot use (non-finite samples, no valid sensor, a non-finite loss).

    ``indices`` holds their store indices (``batch["index"]``), so that
    :func:`naming_windows` can add their shard files and recordings.
    """

    def __init__(self, message: str, indices: list[int]) -> None:
        super().__init__(message)
        self.indices = list(indices)


def batch_indices(batch: Batch) -> list[int]:
    """Store indices of a batch's windows (their positions when the batch has none)."""
    if batch.index is None:
        return list(range(int(batch.x.shape[0])))
    return batch.index.tolist()


def check_batch(batch: Batch, where: str) -> None:
    """Raise :class:`BadWindowsError`, naming windows by store index, before a model runs.

    Parameters
    ----------
    batch : Batch
        The batch (:class:`~megfm.data.batch.Batch`).
    where : str
        What was running, for the message (e.g. ``"train, global step 12"``).
    """
    from .geometry import SENSOR_TYPES

    valid = batch.sensor_mask.to(torch.bool)
    finite = torch.isfinite(batch.x).all(-1) | ~valid
    codes = batch.sensor_type
    bad_code = (((codes < 0) | (codes >= len(SENSOR_TYPES))) & valid).any(1)
    empty, nonfinite = ~valid.any(1), ~finite.all(1)
    if not bool((empty | nonfinite | bad_code).any()):  # one read back from the device
        return
    index = batch_indices(batch)
    what, rows = (("no valid sensor (every sensor bad)", empty) if bool(empty.any())
                  else ("NaN or Inf samples", nonfinite) if bool(nonfinite.any())
                  else (f"sensor-type codes outside 0-{len(SENSOR_TYPES) - 1}", bad_code))
    bad = [index[i] for i in torch.nonzero(rows).flatten().tolist()]
    raise BadWindowsError(
        f"Window(s) with store index {bad} have {what} ({where}); the store is damaged or "
        "was not made by `megfm prepare`. Re-create it with `megfm prepare`.", bad)


@contextlib.contextmanager
def naming_windows(store):
    """Add the shard file, row and recording of each window to a :class:`BadWindowsError`.

    ``store`` is the store the windows come from (its folder or an open reader); anything
    else (None, in-memory windows) leaves the error as it is.
    """
    try:
        yield
    except BadWindowsError as exc:
        if isinstance(store, StoreReader) and exc.indices:
            name, where = store.path, store.describe(exc.indices)
        elif isinstance(store, (str, os.PathLike)) and exc.indices:
            with open_store(store) as reader:
                name, where = Path(store), reader.describe(exc.indices)
        else:
            raise
        raise BadWindowsError(f"{exc} Store {name}: {where}.", exc.indices) from exc
