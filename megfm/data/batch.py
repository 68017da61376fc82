"""`Batch`: the one batch type of megfm, and the one place that builds it.

Every path into a model goes through here: :func:`collate_windows` (items of
:class:`~megfm.data.dataset.WindowDataset`, used by the training DataLoader and by store
streaming), :func:`windows_batch` (rows of an in-memory :class:`~megfm.data.Windows`) and
:func:`iter_batches` (either source, in window order; used by embedding, explain and evaluate).

Two rules hold for every batch built here:

* **Invalid sensors are zero.** Bad channels and padding rows of ``x`` are set to 0 (the
  model never reads them: ``sensor_mask`` drops them before the encoder). Bad channels in a
  store can hold anything (flat lines, saturation, NaN); zeroing them once, here, means every
  other consumer of ``batch.x`` (attribution's gradient x input and its baselines, decision
  patterns, plots, sums) sees the same values the model ignores, and a bad channel looks
  exactly like padding.
* **The signal keeps the dtype it is stored in.** A float16 store gives a float16 ``x`` all
  the way to the device (half the bytes to read, pin and copy); the model upcasts at its
  input (:func:`megfm.tokenize.robust_normalize` computes in float32).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .geometry import SensorGeometry
from .windows import Windows

__all__ = ["BATCH_KEYS", "MODEL_INPUTS", "Batch", "collate_windows", "geometry_tensors",
           "iter_batches", "windows_batch"]

#: Keys of an item / batch, in contract order.
BATCH_KEYS = ("x", "pos", "ori", "sensor_type", "sensor_mask", "index")
#: The fields a :class:`megfm.MaskedSignalModel` takes (``model(**batch.inputs())``).
MODEL_INPUTS = BATCH_KEYS[:5]


@dataclasses.dataclass
class Batch:
    """A batch of windows with their sensor geometry (the batch contract of ``docs/design.md``).

    Parameters
    ----------
    x : Tensor, shape (B, S, T)
        Signals in fT / fT/cm, in the dtype they were stored in; zero on invalid sensors.
    pos : Tensor of float32, shape (B, S, 3)
        Sensor positions in metres (zero on padding).
    ori : Tensor of float32, shape (B, S, 3)
        Sensor orientations (unit vectors; zero on padding).
    sensor_type : Tensor of int64, shape (B, S)
        Codes into :data:`megfm.data.SENSOR_TYPES`.
    sensor_mask : Tensor of bool, shape (B, S)
        True = valid sensor (False on bad channels and padding).
    index : Tensor of int64, shape (B,) | None
        Window index of each row: the store index for store batches, the position in the
        :class:`~megfm.data.Windows` otherwise. Errors name windows by it.

    Notes
    -----
    A model takes the five signal/geometry fields by name: ``model(**batch.inputs())``.
    ``batch["x"]`` is the same as ``batch.x``, for code written against dict batches.
    Lightning moves a batch with :meth:`to`; a DataLoader with ``pin_memory=True`` calls
    :meth:`pin_memory`.
    """

    x: torch.Tensor
    pos: torch.Tensor
    ori: torch.Tensor
    sensor_type: torch.Tensor
    sensor_mask: torch.Tensor
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, key: str) -> torch.Tensor | None:
        if key not in BATCH_KEYS:
            raise KeyError(f"A Batch has the fields {BATCH_KEYS}; got {key!r}.")
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        """Names of the fields that are set, in contract order (``dict(batch)`` works)."""
        return tuple(k for k in BATCH_KEYS if getattr(self, k) is not None)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` of the fields that are set, as a dict's ``items()``."""
        return [(k, getattr(self, k)) for k in self.keys()]

    def inputs(self) -> dict[str, torch.Tensor]:
        """The model's inputs by name: ``model(**batch.inputs())``."""
        return {k: getattr(self, k) for k in MODEL_INPUTS}

    def replace(self, **changes) -> Batch:
        """A copy with some fields replaced (the tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def _map(self, fn) -> Batch:
        return Batch(**{k: None if getattr(self, k) is None else fn(getattr(self, k))
                        for k in BATCH_KEYS})

    def to(self, device: str | torch.device, *, non_blocking: bool = False) -> Batch:
        """Every tensor on ``device``; dtypes are kept (a float16 ``x`` stays float16)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Every tensor in page-locked memory (called by a DataLoader with ``pin_memory``)."""
        return self._map(lambda t: t.pin_memory())

    def numpy(self) -> dict[str, np.ndarray]:
        """The fields as NumPy arrays (on the CPU), for analyses outside torch."""
        return {k: v.detach().cpu().numpy() for k, v in self.items()}


def geometry_tensors(geometry: SensorGeometry, n_rows: int | None = None
                     ) -> dict[str, torch.Tensor]:
    """A geometry as the batch's geometry fields, padded to ``n_rows`` sensors.

    Parameters
    ----------
    geometry : SensorGeometry
    n_rows : int | None
        Rows to pad to (zero geometry, ``sensor_mask`` False); the sensor count when None.

    Returns
    -------
    fields : dict of str to Tensor
        ``pos`` (n_rows, 3) float32, ``ori`` (n_rows, 3) float32, ``sensor_type`` (n_rows,)
        int64, ``sensor_mask`` (n_rows,) bool (False on bad channels and padding).
    """
    n = geometry.n_sensors
    rows = n if n_rows is None else int(n_rows)
    pos, ori = np.zeros((rows, 3), np.float32), np.zeros((rows, 3), np.float32)
    types, valid = np.zeros(rows, np.int64), np.zeros(rows, bool)
    pos[:n], ori[:n] = geometry.positions, geometry.orientations
    types[:n], valid[:n] = geometry.types, ~np.asarray(geometry.bads, bool)
    return {"pos": torch.from_numpy(pos), "ori": torch.from_numpy(ori),
            "sensor_type": torch.from_numpy(types), "sensor_mask": torch.from_numpy(valid)}


def _finish(fields: dict[str, torch.Tensor], index: torch.Tensor) -> Batch:
    """The last step of every builder: zero the invalid sensors (see the module notes)."""
    x, valid = fields["x"], fields["sensor_mask"]
    if not bool(valid.all()):
        x.masked_fill_(~valid[..., None], 0)  # x is always a fresh tensor here
    return Batch(**fields, index=index)


def collate_windows(items: Sequence[dict[str, torch.Tensor]]) -> Batch:
    """Stack per-window items into a :class:`Batch`, padding to the largest sensor count.

    Parameters
    ----------
    items : list of dict
        Items of :class:`~megfm.data.dataset.WindowDataset` (keys ``x`` (S, T), ``pos``
        (S, 3), ``ori`` (S, 3), ``sensor_type`` (S,), ``sensor_mask`` (S,), ``index`` ()).

    Returns
    -------
    batch : Batch
        ``x`` (B, S, T) in the items' dtype, geometry (B, S, ...), ``sensor_mask`` False on
        padding, ``index`` (B,); invalid sensors of ``x`` are zero.
    """
    if len(items) == 0:
        raise ValueError("Cannot collate an empty list of windows.")
    n_times = {int(it["x"].shape[-1]) for it in items}
    if len(n_times) > 1:
        raise ValueError(
            f"Cannot collate windows of different lengths {sorted(n_times)} samples; a batch "
            "needs one window duration."
        )
    sizes = [int(it["x"].shape[0]) for it in items]
    s = max(sizes)
    if min(sizes) == s:  # one layout: plain stacking, no padding
        fields = {key: torch.stack([it[key] for it in items]) for key in MODEL_INPUTS}
    else:
        # Fill preallocated tensors; only the padding rows are zeroed (cheaper than zeros()).
        first = items[0]
        fields = {key: torch.empty((len(items), s, *first[key].shape[1:]), dtype=first[key].dtype)
                  for key in MODEL_INPUTS}
        for i, (it, n) in enumerate(zip(items, sizes, strict=True)):
            for key, out in fields.items():
                out[i, :n] = it[key]
                out[i, n:] = 0
    index = torch.stack([torch.as_tensor(it["index"], dtype=torch.int64) for it in items])
    return _finish(fields, index)


class _GeometryTable:
    """Geometry fields of every recording of a Windows, padded to its row count, stacked."""

    def __init__(self, windows: Windows) -> None:
        rows = windows.data.shape[1]
        per = [geometry_tensors(g, rows) for g in windows.geometries]
        self.fields = {k: torch.stack([p[k] for p in per]) for k in MODEL_INPUTS[1:]}
        self.recording = torch.as_tensor(np.asarray(windows.metadata["recording"], np.int64))

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        rec = self.recording[idx]
        return {k: v[rec] for k, v in self.fields.items()}


def windows_batch(windows: Windows, indices, *, _table: _GeometryTable | None = None) -> Batch:
    """The :class:`Batch` of some windows of an in-memory :class:`~megfm.data.Windows`.

    Parameters
    ----------
    windows : Windows
    indices : array of int
        Positions of the windows in ``windows`` (they become ``batch.index``).

    Returns
    -------
    batch : Batch
        ``S`` is ``windows.data.shape[1]`` (recordings with fewer sensors are padded).
    """
    idx = torch.from_numpy(np.array(indices, dtype=np.int64).reshape(-1))  # owns its memory
    table = _GeometryTable(windows) if _table is None else _table
    x = torch.from_numpy(windows.data[idx.numpy()])  # a fresh copy (fancy indexing)
    return _finish({"x": x, **table.take(idx)}, idx)


def iter_batches(
    source: Windows | str | os.PathLike,
    *,
    batch_size: int = 64,
    indices=None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches over an in-memory Windows or a store, in the order of ``indices``.

    Parameters
    ----------
    source : Windows | path-like | StoreReader
        In-memory windows, or a store (its folder, a LitData export of it, or an open
        reader of either; streamed with :class:`~megfm.data.dataset.WindowDataset`, signals
        in the store's dtype).
    batch_size : int
        Windows per batch (the last batch may be smaller).
    indices : array of int | None
        Window indices to visit (positions in the Windows, or store indices), in this
        order; every window when None.
    num_workers : int
        DataLoader workers when streaming a store.
    pin_memory : bool
        Pin the store batches (faster copies to a GPU).

    Yields
    ------
    batch : Batch
        ``batch.index`` holds the window indices of its rows.
    """
    if int(batch_size) < 1:
        raise ValueError(f"'batch_size' must be a positive integer; got {batch_size!r}.")
    batch_size = int(batch_size)
    if isinstance(source, Windows):
        idx = (np.arange(source.n_windows) if indices is None
               else np.asarray(indices, dtype=np.int64).reshape(-1))
        if idx.size and (idx.min() < -source.n_windows or idx.max() >= source.n_windows):
            raise IndexError(f"'indices' must lie in [0, {source.n_windows}) for these windows.")
        table = _GeometryTable(source)
        for start in range(0, len(idx), batch_size):
            yield windows_batch(source, idx[start:start + batch_size], _table=table)
        return
    from .store import StoreReader, require_window_source

    if isinstance(source, (str, os.PathLike, StoreReader)):
        from .dataset import WindowDataset

        if not isinstance(source, StoreReader):
            require_window_source(source)
        dataset = WindowDataset(source, indices=indices)
        yield from torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
            collate_fn=collate_windows, pin_memory=pin_memory)
        return
    raise TypeError(
        f"Invalid input: expected a megfm.Windows or a store folder; got {type(source).__name__}."
    )
