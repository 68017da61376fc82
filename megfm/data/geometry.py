"""Sensor geometry: what the model knows about each sensor instead of its index.

Every MEG sensor is described by a position (3), an orientation (3) and a type, read from
``info["chs"][i]["loc"]`` and ``coil_type``. The orientation is the direction of the
measured field component:

* magnetometers, axial gradiometers and OPM axes: the coil normal (``loc[9:12]``);
* planar gradiometers: the gradient direction in the coil plane (``loc[3:6]``), so the two
  gradiometers of a Vectorview triplet share a position but have orthogonal orientations
  and remain distinguishable.

Reference sensors (``kind == FIFFV_REF_MEG_CH``) are never part of a geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mne
import numpy as np
from mne.io.constants import FIFF

__all__ = ["SENSOR_TYPES", "SensorGeometry", "sensor_type_codes"]

#: Sensor type names, in the order of their integer codes.
SENSOR_TYPES: tuple[str, ...] = ("mag", "planar_grad", "axial_grad", "opm")

_COIL_NAMES = {
    int(value): key for key, value in FIFF.items() if key.startswith("FIFFV_COIL_")
}
_FRAMES = ("device", "head")


def _coil_kind(coil_type: int) -> str:
    """Classify an MNE coil type as one of :data:`SENSOR_TYPES`."""
    # CTF stores the compensation grade in the high 16 bits of coil_type.
    name = _COIL_NAMES.get(int(coil_type) & 0xFFFF, "")
    if "PLANAR" in name or name == "FIFFV_COIL_NM_122":
        return "planar_grad"
    if any(tag in name for tag in ("OPM", "QUSPIN", "FIELDLINE", "KERNEL")):
        return "opm"
    if "GRAD" in name:
        return "axial_grad"
    return "mag"


def sensor_type_codes(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Map sensor type names to their integer codes (index in :data:`SENSOR_TYPES`)."""
    try:
        return np.array([SENSOR_TYPES.index(n) for n in names], dtype=np.int64)
    except ValueError as exc:
        raise ValueError(
            f"Invalid sensor type in {sorted(set(names))}; expected one of {SENSOR_TYPES}."
        ) from exc


@dataclass
class SensorGeometry:
    """Positions, orientations and types of the MEG sensors of one recording.

    Parameters
    ----------
    names : list of str
        Channel names, in data order.
    positions : array, shape (n_sensors, 3)
        Sensor centres in metres, in ``frame``.
    orientations : array, shape (n_sensors, 3)
        Unit vectors of the measured field component (see module docstring).
    types : array of int, shape (n_sensors,)
        Codes into :data:`SENSOR_TYPES`.
    bads : array of bool, shape (n_sensors,)
        True for channels marked bad; they stay in the geometry but are masked out.
    frame : ``"device"`` | ``"head"``
        Coordinate frame of ``positions`` and ``orientations``.
    """

    names: list[str]
    positions: np.ndarray
    orientations: np.ndarray
    types: np.ndarray
    bads: np.ndarray = field(default=None)  # type: ignore[assignment]
    frame: str = "device"

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        n = len(self.names)
        self.positions = np.asarray(self.positions, dtype=np.float32).reshape(n, 3)
        self.orientations = np.asarray(self.orientations, dtype=np.float32).reshape(n, 3)
        self.types = np.asarray(self.types, dtype=np.int64).reshape(n)
        self.bads = (
            np.zeros(n, bool) if self.bads is None else np.asarray(self.bads, bool).reshape(n)
        )
        if self.frame not in _FRAMES:
            raise ValueError(f"Invalid value for 'frame': expected one of {_FRAMES}; got {self.frame!r}.")
        if np.any((self.types < 0) | (self.types >= len(SENSOR_TYPES))):
            raise ValueError(f"Sensor type codes must lie in [0, {len(SENSOR_TYPES)}).")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_info(cls, info: mne.Info, *, frame: str = "device") -> SensorGeometry:
        """Build the geometry of the MEG sensors of ``info`` (reference sensors excluded).

        Parameters
        ----------
        info : mne.Info
            Measurement info with sensor locations.
        frame : ``"device"`` | ``"head"``
            ``"head"`` applies ``info["dev_head_t"]``, which must exist.

        Returns
        -------
        geometry : SensorGeometry
        """
        if frame not in _FRAMES:
            raise ValueError(f"Invalid value for 'frame': expected one of {_FRAMES}; got {frame!r}.")
        picks = mne.pick_types(info, meg=True, ref_meg=False, exclude=[])
        if len(picks) == 0:
            raise ValueError(
                "The recording has no MEG channels (reference channels do not count); "
                "megfm models MEG sensors only. Check the file, or set the channel types "
                "with raw.set_channel_types()."
            )
        chs = [info["chs"][p] for p in picks]
        locs = np.array([ch["loc"][:12] for ch in chs], dtype=np.float64)
        if not np.all(np.isfinite(locs)) or np.allclose(locs[:, :3], 0.0):
            raise ValueError(
                "The MEG channels have no sensor locations (info['chs'][i]['loc'] is empty); "
                "megfm needs sensor geometry. Read the recording with its native reader or "
                "set locations from a montage/info of the same system."
            )
        kinds = [_coil_kind(ch["coil_type"]) for ch in chs]
        positions = locs[:, :3]
        orientations = np.where(
            np.array([k == "planar_grad" for k in kinds])[:, None], locs[:, 3:6], locs[:, 9:12]
        )
        if frame == "head":
            trans = info.get("dev_head_t")
            if trans is None:
                raise ValueError(
                    "frame='head' needs info['dev_head_t'], which this recording lacks; "
                    "use frame='device'."
                )
            mat = trans["trans"]
            positions = positions @ mat[:3, :3].T + mat[:3, 3]
            orientations = orientations @ mat[:3, :3].T
        norms = np.linalg.norm(orientations, axis=1, keepdims=True)
        orientations = orientations / np.where(norms > 0, norms, 1.0)
        names = [ch["ch_name"] for ch in chs]
        return cls(
            names=names,
            positions=positions,
            orientations=orientations,
            types=sensor_type_codes(kinds),
            bads=np.array([n in info["bads"] for n in names]),
            frame=frame,
        )

    # ------------------------------------------------------------------ views
    @property
    def n_sensors(self) -> int:
        """Number of sensors."""
        return len(self.names)

    @property
    def type_names(self) -> list[str]:
        """Sensor type of each sensor, as names."""
        return [SENSOR_TYPES[t] for t in self.types]

    def pick(self, indices: np.ndarray | list[int]) -> SensorGeometry:
        """Return the geometry of a subset of sensors, in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        return SensorGeometry(
            names=[self.names[i] for i in idx],
            positions=self.positions[idx],
            orientations=self.orientations[idx],
            types=self.types[idx],
            bads=self.bads[idx],
            frame=self.frame,
        )

    def to_dict(self) -> dict:
        """Plain-array form, for HDF5 and JSON (inverse of :meth:`from_dict`)."""
        return {
            "names": list(self.names),
            "positions": self.positions,
            "orientations": self.orientations,
            "types": self.types,
            "bads": self.bads,
            "frame": self.frame,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SensorGeometry:
        """Inverse of :meth:`to_dict` (accepts lists or arrays, bytes or str names)."""
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in d["names"]]
        frame = d.get("frame", "device")
        frame = frame.decode() if isinstance(frame, bytes) else str(frame)
        return cls(
            names=names,
            positions=np.asarray(d["positions"]),
            orientations=np.asarray(d["orientations"]),
            types=np.asarray(d["types"]),
            bads=np.asarray(d["bads"]),
            frame=frame,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SensorGeometry):
            return NotImplemented
        return (
            self.names == other.names
            and self.frame == other.frame
            and np.array_equal(self.positions, other.positions)
            and np.array_equal(self.orientations, other.orientations)
            and np.array_equal(self.types, other.types)
            and np.array_equal(self.bads, other.bads)
        )

    def __repr__(self) -> str:
        counts = {name: int((self.types == i).sum()) for i, name in enumerate(SENSOR_TYPES)}
        counts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        return f"<SensorGeometry | {self.n_sensors} sensors ({counts}), {int(self.bads.sum())} bad, frame={self.frame}>"
