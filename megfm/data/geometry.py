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

__all__ = ["SENSOR_TYPES", "SensorGeometry", "fit_sphere", "sensor_type_codes"]

#: Sensor type names, in the order of their integer codes.
SENSOR_TYPES: tuple[str, ...] = ("mag", "planar_grad", "axial_grad", "opm")

_COIL_NAMES = {
    int(value): key for key, value in FIFF.items() if key.startswith("FIFFV_COIL_")
}
_FRAMES = ("device", "head")

# The MNE coil of each sensor type in :meth:`SensorGeometry.to_info` (reasons there).
_INFO_COIL = {
    "mag": FIFF.FIFFV_COIL_POINT_MAGNETOMETER,
    "planar_grad": FIFF.FIFFV_COIL_VV_PLANAR_T1,
    "axial_grad": FIFF.FIFFV_COIL_CTF_GRAD,
    "opm": FIFF.FIFFV_COIL_QUSPIN_ZFOPM_MAG2,
}


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points`` (a helmet of sensors, a helmet surface).

    Parameters
    ----------
    points : array, shape (n, 3)
        Positions (m).

    Returns
    -------
    centre : array, shape (3,)
    radius : float
        With fewer than 4 points, or a fitted centre more than 0.5 m from their mean (points
        close to a plane: no helmet is that flat), the mean of the points and the median
        distance to it. Points exactly in one plane give the least-squares solution of
        smallest norm (a centre on the normal through their circle, not the mean).
    """
    rr = np.asarray(points, dtype=np.float64)
    mean = rr.mean(axis=0)
    if len(rr) >= 4:
        design = np.c_[2 * rr, np.ones(len(rr))]
        sol, *_ = np.linalg.lstsq(design, (rr**2).sum(1), rcond=None)
        centre = sol[:3]
        if np.all(np.isfinite(centre)) and np.linalg.norm(centre - mean) <= 0.5:
            return centre, float(np.sqrt(max(sol[3] + centre @ centre, 0.0)))
    return mean, float(np.median(np.linalg.norm(rr - mean, axis=1)))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _coil_axes(position: np.ndarray, orientation: np.ndarray, kind: str,
               centre: np.ndarray) -> np.ndarray:
    """Rows (ex, ey, ez) of a coil: ez its normal, ex the gradient of a planar gradiometer."""
    if kind == "planar_grad":
        ex = _unit(orientation)
        radial = _unit(position - centre)
        ez = _unit(radial - (radial @ ex) * ex)
        if not np.any(ez):  # gradient along the radius: any normal orthogonal to it
            ez = _unit(np.cross(ex, [0.0, 0.0, 1.0] if abs(ex[2]) < 0.9 else [1.0, 0.0, 0.0]))
    else:
        ez = _unit(orientation)
        helper = np.array([1.0, 0.0, 0.0]) if abs(ez[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        ex = _unit(helper - (helper @ ez) * ez)
    return np.stack([ex, np.cross(ez, ex), ez])


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

    def to_info(self, sfreq: float, *, dev_head_t=None) -> mne.Info:
        """Build an :class:`mne.Info` with one MEG channel per sensor.

        The geometry does not record each coil's make, so every sensor type gets one coil
        that MNE can model, chosen for the physics of the type:

        * ``mag``: a point magnetometer. The coil's size is not recorded (25.8 mm squares on
          Vectorview, other sizes elsewhere); a point assumes none, and at the several cm
          from sources to sensors the field over such a coil is nearly uniform.
        * ``planar_grad``: the Vectorview planar gradiometer (16.8 mm baseline), the only
          planar design in wide use; a gradiometer's output depends on its baseline, so a
          point cannot stand in. The gradient lies along the stored orientation and the coil
          normal points away from the centre of the sphere fitted to the sensors
          (:func:`fit_sphere`): helmets are close to spherical, so that radius is the
          normal of the helmet surface, which the mean of the positions (off-centre for a
          helmet that covers the top of the head more than the sides) is not.
        * ``axial_grad``: the CTF axial gradiometer (5 cm baseline, as KIT's), a ``"mag"``
          channel in T as MNE reads CTF and KIT data. MNE has no coil definition for the
          generic 5 cm axial gradiometer.
        * ``opm``: the QuSpin zero-field OPM (a cell of a few mm, i.e. nearly a point), so
          :meth:`from_info` reads the sensors back as OPM axes.

        Parameters
        ----------
        sfreq : float
            Sampling frequency written into the info (Hz).
        dev_head_t : mne.transforms.Transform | array, shape (4, 4) | None
            Device -> head transform to record, for source modelling of a device-frame
            geometry; the identity when None or when the geometry is in the head frame.

        Returns
        -------
        info : mne.Info
            Channels with this geometry's names, positions and orientations in its frame
            (``SensorGeometry.from_info(info)`` gives the geometry back), ``info["bads"]``
            from :attr:`bads`.
        """
        kinds = self.type_names
        ch_types = ["grad" if k == "planar_grad" else "mag" for k in kinds]
        info = mne.create_info(list(self.names), float(sfreq), ch_types, verbose=False)
        positions = self.positions.astype(np.float64)
        centre, _ = fit_sphere(positions)
        trans = np.eye(4)
        if dev_head_t is not None and self.frame == "device":
            trans = np.asarray(dev_head_t["trans"] if isinstance(dev_head_t, dict) else dev_head_t,
                               dtype=np.float64)
            if trans.shape != (4, 4):
                raise ValueError(f"'dev_head_t' must be a 4x4 transform; got shape {trans.shape}.")
        with info._unlock():
            for ch, kind, pos, ori in zip(info["chs"], kinds, positions,
                                          self.orientations.astype(np.float64), strict=True):
                ch["loc"] = np.concatenate([pos, _coil_axes(pos, ori, kind, centre).ravel()])
                ch["coil_type"] = _INFO_COIL[kind]
                ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
            info["dev_head_t"] = mne.transforms.Transform("meg", "head", trans)
            info["bads"] = [n for n, bad in zip(self.names, self.bads, strict=True) if bad]
        return info

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
