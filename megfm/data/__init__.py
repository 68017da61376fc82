"""Data layer: MNE recordings -> preprocessed, state-aware windows -> HDF5 store.

No ``torch.nn`` here; :mod:`megfm.data.dataset` only uses ``torch.utils.data``.
"""

import lazy_loader as _lazy

from .geometry import SENSOR_TYPES, SensorGeometry
from .windows import METADATA_COLUMNS, Windows

# the batch layer needs torch: imported on first use, so `megfm prepare` stays light
__getattr__, _, _lazy_names = _lazy.attach(
    __name__,
    submod_attrs={
        "batch": ["Batch", "collate_windows", "iter_batches", "windows_batch"],
        "_lock": ["StoreLockedError"],
    },
)
__all__ = ["METADATA_COLUMNS", "SENSOR_TYPES", "SensorGeometry", "Windows", *_lazy_names]


def __dir__() -> list[str]:
    return list(__all__)
