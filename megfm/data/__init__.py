"""Data layer: MNE recordings -> preprocessed, state-aware windows -> HDF5 store.

No ``torch.nn`` here; :mod:`megfm.data.dataset` only uses ``torch.utils.data``.
"""

from .geometry import SENSOR_TYPES, SensorGeometry
from .windows import METADATA_COLUMNS, Windows

__all__ = ["METADATA_COLUMNS", "SENSOR_TYPES", "Batch", "SensorGeometry", "Windows",
           "collate_windows", "iter_batches", "windows_batch"]


def __getattr__(name: str):
    # the batch layer needs torch: imported on first use, so `megfm prepare` stays light
    if name in ("Batch", "collate_windows", "iter_batches", "windows_batch"):
        from . import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
