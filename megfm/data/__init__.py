"""Data layer: MNE recordings -> preprocessed, state-aware windows -> HDF5 store.

No ``torch.nn`` here; :mod:`megfm.data.dataset` only uses ``torch.utils.data``.
"""

from .geometry import SENSOR_TYPES, SensorGeometry
from .windows import METADATA_COLUMNS, Windows

__all__ = ["METADATA_COLUMNS", "SENSOR_TYPES", "SensorGeometry", "Windows"]
