"""`Windows`: epoched MEG windows with their sensor geometry and per-window metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import SensorGeometry

__all__ = ["METADATA_COLUMNS", "Windows"]

#: Per-window metadata columns and their dtypes. ``recording`` indexes ``Windows.geometries``;
#: ``event`` / ``repetition`` / ``block`` are -1 for resting-state windows; ``label`` is the
#: subject's group ("HC", "migraine", ...) or "" when unknown; ``onset`` is in seconds from
#: the start of the recording.
METADATA_COLUMNS: dict[str, type] = {
    "subject": str,
    "session": str,
    "state": str,
    "label": str,
    "onset": np.float64,
    "event": np.int64,
    "repetition": np.int64,
    "block": np.int64,
    "recording": np.int64,
}


def _as_column(name: str, values, n: int) -> np.ndarray:
    dtype = METADATA_COLUMNS.get(name)
    arr = np.asarray(values)
    if dtype is str:
        arr = arr.astype(str)
    elif dtype is not None:
        arr = arr.astype(dtype)
    if arr.shape != (n,):
        raise ValueError(f"Metadata column {name!r} has shape {arr.shape}; expected ({n},).")
    return arr


@dataclass
class Windows:
    """MEG windows ready for tokenisation.

    Parameters
    ----------
    data : array, shape (n_windows, n_sensors, n_times)
        Signals in fT (magnetometers, axial gradiometers, OPM) and fT/cm (planar
        gradiometers), float32. When recordings with different sensor counts are
        concatenated, ``n_sensors`` is the largest count and the extra rows of a window
        are zero; ``geometries[metadata["recording"][i]].n_sensors`` rows are real.
    sfreq : float
        Sampling frequency in Hz.
    geometries : list of SensorGeometry
        One geometry per recording.
    metadata : dict of str to array, shape (n_windows,)
        Columns of :data:`METADATA_COLUMNS` (missing ones are filled with defaults).
    info : dict
        How the windows were made (preprocessing and windowing parameters), kept with them.
    """

    data: np.ndarray
    sfreq: float
    geometries: list[SensorGeometry]
    metadata: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 3:
            raise ValueError(
                f"Windows.data must have shape (n_windows, n_sensors, n_times); got {self.data.shape}."
            )
        self.sfreq = float(self.sfreq)
        n = self.data.shape[0]
        defaults = {"subject": "", "session": "", "state": "", "label": "", "onset": 0.0,
                    "event": -1, "repetition": -1, "block": -1, "recording": 0}
        meta = dict(self.metadata)
        for name, default in defaults.items():
            meta.setdefault(name, np.full(n, default))
        self.metadata = {k: _as_column(k, v, n) for k, v in meta.items()}
        if n and (self.metadata["recording"].max() >= len(self.geometries)
                  or self.metadata["recording"].min() < 0):
            raise ValueError("metadata['recording'] must index into Windows.geometries.")
        for rec, geom in enumerate(self.geometries):
            if geom.n_sensors > self.data.shape[1]:
                raise ValueError(
                    f"Geometry {rec} has {geom.n_sensors} sensors but data has only "
                    f"{self.data.shape[1]} rows."
                )

    @property
    def n_windows(self) -> int:
        """Number of windows."""
        return self.data.shape[0]

    @property
    def n_times(self) -> int:
        """Samples per window."""
        return self.data.shape[2]

    @property
    def geometry(self) -> SensorGeometry:
        """The geometry, when all windows come from one recording layout."""
        if len(self.geometries) != 1:
            raise ValueError(
                f"These windows come from {len(self.geometries)} recordings; "
                "use Windows.geometries[Windows.metadata['recording'][i]]."
            )
        return self.geometries[0]

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, item) -> Windows:
        """Select windows (int, slice, boolean mask or index array); geometries are kept."""
        idx = np.arange(self.n_windows)[item]
        idx = np.atleast_1d(idx)
        return Windows(
            data=self.data[idx],
            sfreq=self.sfreq,
            geometries=self.geometries,
            metadata={k: v[idx] for k, v in self.metadata.items()},
            info=dict(self.info),
        )

    @classmethod
    def concatenate(cls, parts: list[Windows]) -> Windows:
        """Concatenate windows from several recordings and states.

        All parts must share ``sfreq`` and ``n_times``; sensor counts may differ (shorter
        windows are zero-padded, see the class docstring).
        """
        if not parts:
            raise ValueError("Nothing to concatenate: the list of Windows is empty.")
        sfreqs = {p.sfreq for p in parts}
        if len(sfreqs) > 1:
            raise ValueError(
                f"Cannot concatenate windows with different sampling rates {sorted(sfreqs)} Hz; "
                "resample all recordings to one rate (PreprocessConfig.sfreq)."
            )
        n_times = {p.n_times for p in parts}
        if len(n_times) > 1:
            raise ValueError(
                f"Cannot concatenate windows of different lengths {sorted(n_times)} samples; "
                "use one window duration for all recordings."
            )
        n_sensors = max(p.data.shape[1] for p in parts)
        data = np.zeros((sum(p.n_windows for p in parts), n_sensors, parts[0].n_times), np.float32)
        geometries: list[SensorGeometry] = []
        columns: dict[str, list[np.ndarray]] = {}
        start = 0
        for p in parts:
            data[start:start + p.n_windows, :p.data.shape[1]] = p.data
            start += p.n_windows
            for k, v in p.metadata.items():
                if k == "recording":
                    v = v + len(geometries)
                columns.setdefault(k, []).append(v)
            geometries.extend(p.geometries)
        metadata = {k: np.concatenate(v) for k, v in columns.items() if len(v) == len(parts)}
        return cls(data=data, sfreq=parts[0].sfreq, geometries=geometries,
                   metadata=metadata, info=dict(parts[0].info))

    def __repr__(self) -> str:
        states = sorted(set(self.metadata["state"].tolist()))
        return (
            f"<Windows | {self.n_windows} windows x {self.data.shape[1]} sensors x "
            f"{self.n_times} samples @ {self.sfreq:g} Hz, {len(self.geometries)} recording(s), "
            f"states={states}>"
        )
