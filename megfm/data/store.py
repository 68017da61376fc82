"""HDF5 store of MEG windows: sharded, append-only, crash-safe.

A store is a folder holding a JSON manifest and one HDF5 shard per recording layout::

    STORE/
      store.json          format, version, sfreq, n_times, dtype, compression, info
                          (preprocessing and window parameters) and the list of shards
      shard-00000.h5      data (n, S, T) chunked per window; geometry/; meta/

One process writes a store at a time: writers hold an exclusive lock on ``store.lock``
(with their pid), and a second writer fails at once naming that pid. Readers take no lock.
Every shard is written to ``shard-NNNNN.h5.tmp`` and renamed once complete; the manifest is
rewritten the same way only after all new shards are in place. A crash at any point thus
leaves the previous store readable and unchanged (at worst an unlisted shard file, which is
ignored and overwritten by the next append).

The global window index is the shard order, then the row order within each shard.
:func:`write_store` writes one shard per recording (``metadata["recording"]``) of the
:class:`~megfm.data.windows.Windows`, in order of first appearance, keeping the row order.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._io import atomic_write_text
from ._lock import LOCK_NAME, store_lock
from .geometry import SensorGeometry
from .windows import METADATA_COLUMNS, Windows

__all__ = ["StoreReader", "is_window_source", "open_store", "read_store", "reading",
           "require_window_source", "write_store"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "store.json"
STORE_FORMAT = "megfm-store"
STORE_VERSION = 1
_DTYPES = ("float32", "float16")
_COMPRESSIONS = (None, "gzip", "lzf")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_TINY = float(np.finfo(np.float16).tiny)
_STR_DTYPE = h5py.string_dtype("utf-8")
#: HDF5 checksum filter of every numeric dataset: HDF5 verifies it on each read, so bytes
#: changed after writing raise an error instead of giving other numbers. Stores written
#: before it (no filter) read as before.
_CHECKSUM = "fletcher32"


# ---------------------------------------------------------------------------- helpers
def _json_default(obj: Any) -> Any:
    """Make NumPy scalars/arrays, paths and dataclass-like objects JSON serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return repr(obj)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.h5"


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, fsync=True)


def _load_manifest(path: Path) -> dict:
    """Read and validate ``store.json`` of the store folder ``path``."""
    if not path.exists():
        raise FileNotFoundError(
            f"No megfm store at {path}: the folder does not exist. Create one with "
            "megfm.write_store(windows, path) or `megfm prepare ... --out STORE`."
        )
    if not path.is_dir():
        raise ValueError(
            f"{path} is a file, not a megfm store (a store is a folder with {MANIFEST_NAME} "
            "and shard-*.h5 files). Pass the store folder."
        )
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.exists():
        raise ValueError(
            f"{path} is not a megfm store: it has no {MANIFEST_NAME}. Pass a folder written by "
            "megfm.write_store or `megfm prepare`."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"The store manifest {manifest_path} is not valid JSON ({exc}); the store is "
            "damaged. Re-create it with megfm.write_store / `megfm prepare`."
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise ValueError(
            f"{manifest_path} is not a megfm store manifest (format != {STORE_FORMAT!r})."
        )
    if int(manifest.get("version", -1)) > STORE_VERSION:
        raise ValueError(
            f"The store {path} has format version {manifest['version']}, newer than this "
            f"megfm supports ({STORE_VERSION}); upgrade megfm."
        )
    return manifest


def _check_write_args(dtype: str, compression: str | None) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"Invalid value for 'dtype': expected one of {_DTYPES}; got {dtype!r}.")
    if compression not in _COMPRESSIONS:
        raise ValueError(
            f"Invalid value for 'compression': expected one of {_COMPRESSIONS}; got {compression!r}."
        )


def _check_values(data: np.ndarray, dtype: str) -> None:
    """Refuse non-finite samples, and values float16 cannot represent."""
    # Per window, to keep memory bounded on large arrays.
    max_abs = 0.0
    for i in range(data.shape[0]):
        w = data[i]
        if not np.all(np.isfinite(w)):
            raise ValueError(
                f"Window {i} contains NaN or Inf samples; the store refuses non-finite data. "
                "Check preprocessing (bad channels, flat segments) or drop these windows."
            )
        max_abs = max(max_abs, float(np.abs(w).max(initial=0.0)))
    if dtype == "float16":
        if max_abs > _FLOAT16_MAX:
            raise ValueError(
                f"Values up to {max_abs:.3g} exceed the float16 range (+-{_FLOAT16_MAX:g}); "
                "they would be stored as Inf. Use dtype='float32', or check the units "
                "(megfm expects fT and fT/cm after preprocess) and reject artefacts."
            )
        if 0.0 < max_abs < _FLOAT16_TINY:
            raise ValueError(
                f"All values are below {max_abs:.3g}, under float16's smallest normal number "
                f"({_FLOAT16_TINY:.3g}); they would lose all precision. The data look like "
                "they are in T or T/m: run megfm.preprocess (converts to fT, fT/cm) or use "
                "dtype='float32'."
            )


def _write_shard(
    final_path: Path,
    data: np.ndarray,
    geometry: SensorGeometry,
    metadata: dict[str, np.ndarray],
    *,
    sfreq: float,
    dtype: str,
    compression: str | None,
) -> None:
    """Write one shard to ``final_path`` through a temporary file."""
    tmp = final_path.with_name(final_path.name + ".tmp")
    n, s, t = data.shape
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = STORE_FORMAT
            f.attrs["version"] = STORE_VERSION
            f.attrs["sfreq"] = float(sfreq)
            f.attrs["n_times"] = int(t)
            f.attrs["n_windows"] = int(n)
            f.attrs["checksum"] = _CHECKSUM or "none"
            dset = f.create_dataset(
                "data",
                shape=(n, s, t),
                dtype=dtype,
                chunks=(1, s, t),
                compression=compression,
                shuffle=compression is not None,
                fletcher32=_CHECKSUM == "fletcher32",
            )
            for i in range(n):
                dset[i] = data[i]
            write_tables(f, geometry, metadata)
        os.replace(tmp, final_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_tables(group: h5py.Group, geometry: SensorGeometry,
                 metadata: dict[str, np.ndarray]) -> None:
    """Write one recording's ``geometry/`` and ``meta/`` groups into an HDF5 group."""
    checked = {"fletcher32": _CHECKSUM == "fletcher32"}
    g = group.create_group("geometry")
    g.attrs["frame"] = geometry.frame
    g.create_dataset("names", data=np.array(geometry.names, dtype=object), dtype=_STR_DTYPE)
    g.create_dataset("positions", data=geometry.positions, **checked)
    g.create_dataset("orientations", data=geometry.orientations, **checked)
    g.create_dataset("types", data=geometry.types, **checked)
    g.create_dataset("bads", data=geometry.bads, **checked)
    m = group.create_group("meta")
    for name, col in metadata.items():
        if name == "recording":  # implied by the shard
            continue
        if col.dtype.kind in "US":
            m.create_dataset(name, data=col.astype(str).astype(object), dtype=_STR_DTYPE)
        else:
            m.create_dataset(name, data=col, **checked)


def read_geometry(group: h5py.Group) -> SensorGeometry:
    """The :class:`SensorGeometry` written by :func:`write_tables` into ``group``."""
    g = group["geometry"]
    return SensorGeometry(
        names=list(g["names"].asstr()[()]),
        positions=g["positions"][()],
        orientations=g["orientations"][()],
        types=g["types"][()],
        bads=g["bads"][()],
        frame=str(g.attrs.get("frame", "device")),
    )


def read_metadata(group: h5py.Group) -> dict[str, np.ndarray]:
    """The metadata columns written by :func:`write_tables` into ``group``."""
    out = {}
    for name, dset in group["meta"].items():
        if h5py.check_string_dtype(dset.dtype) is not None:
            out[name] = np.asarray(dset.asstr()[()], dtype=str)
        else:
            out[name] = dset[()]
    return out


# ---------------------------------------------------------------------------- writing
def write_store(
    windows: Windows,
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    compression: str | None = None,
) -> Path:
    """Append windows to an HDF5 store (created when missing).

    One shard is written per recording of ``windows`` (``metadata["recording"]``), holding
    only that recording's real sensors (no padding), its :class:`SensorGeometry` and its
    metadata. Shards go to a temporary name and are renamed when complete, and the manifest
    is replaced only after that, so an interrupted write leaves the existing store intact.

    Parameters
    ----------
    windows : Windows
        Windows to store. Their ``sfreq`` and ``n_times`` must match an existing store.
    path : str | Path
        Store folder. Created when missing; must be empty or an existing store.
    dtype : ``"float32"`` | ``"float16"``
        On-disk sample type. ``"float32"`` round-trips bit-exactly; ``"float16"`` halves the
        size (relative precision about 1e-3) and refuses values outside its range.
        Appends must use the store's dtype.
    compression : None | ``"gzip"`` | ``"lzf"``
        HDF5 compression filter (with byte shuffling). Chunks are one window each.

    Returns
    -------
    path : Path
        The store folder.

    Raises
    ------
    StoreLockedError
        When another process is writing the store (an ``OSError`` naming its pid).

    Notes
    -----
    One writer at a time: the write holds an exclusive lock on ``STORE/store.lock``, so a
    second process appending to the same store fails at once instead of mixing shards.
    Readers need no lock: they see the manifest of the last complete write.
    """
    if not isinstance(windows, Windows):
        raise TypeError(f"write_store expects a megfm.Windows; got {type(windows).__name__}.")
    _check_write_args(dtype, compression)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"Cannot write a store to {path}: it is a file. Pass a folder path.")
    if windows.n_windows == 0:
        raise ValueError("Nothing to write: the Windows object has no windows.")

    _check_store_folder(path)
    _check_values(windows.data, dtype)
    for k in np.unique(windows.metadata["recording"]):
        geometry = windows.geometries[int(k)]
        if geometry.n_sensors and geometry.bads.all():
            raise ValueError(
                f"Every sensor of recording {k} ({geometry.n_sensors}) is marked bad; its "
                "windows hold no usable signal. Leave the recording out. Nothing was written."
            )
    with store_lock(path):
        _append(windows, path, dtype=dtype, compression=compression)
    return path


# what a store's first write leaves when it is killed before the manifest is in place
_LEFTOVER = re.compile(rf"^(shard-\d{{5}}\.h5|store\.json)(\.tmp)?$|^{re.escape(LOCK_NAME)}$")


def _check_store_folder(path: Path) -> None:
    """Refuse to write into a non-empty folder that is not a store (or a killed first write)."""
    if path.exists() and not (path / MANIFEST_NAME).exists() and any(
            not _LEFTOVER.match(p.name) for p in path.iterdir()):
        raise ValueError(
            f"{path} is a non-empty folder without {MANIFEST_NAME}, so not a megfm store; "
            "refusing to write into it. Pass a new or empty folder."
        )


def _append(windows: Windows, path: Path, *, dtype: str, compression: str | None) -> None:
    """Write the shards of ``windows`` and then the manifest (the caller holds the lock)."""
    manifest: dict | None = None
    if path.exists() and (path / MANIFEST_NAME).exists():
        manifest = _load_manifest(path)
        if not np.isclose(float(manifest["sfreq"]), windows.sfreq):
            raise ValueError(
                f"Cannot append to {path}: the store holds windows at {manifest['sfreq']:g} Hz, "
                f"these are at {windows.sfreq:g} Hz. Resample to one rate "
                "(PreprocessConfig.sfreq) or write to a new store. Nothing was written."
            )
        if int(manifest["n_times"]) != windows.n_times:
            raise ValueError(
                f"Cannot append to {path}: the store holds windows of {manifest['n_times']} "
                f"samples, these have {windows.n_times}. Use the same window duration for all "
                "recordings of a store, or write to a new store. Nothing was written."
            )
        if manifest["dtype"] != dtype:
            raise ValueError(
                f"Cannot append {dtype} windows to {path}, a {manifest['dtype']} store; pass "
                f"dtype={manifest['dtype']!r}. Nothing was written."
            )
    else:
        _check_store_folder(path)  # again, now that we hold the lock
    if manifest is None:
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "sfreq": windows.sfreq,
            "n_times": windows.n_times,
            "dtype": dtype,
            "compression": compression,
            "checksum": _CHECKSUM,
            "info": windows.info,
            "n_windows": 0,
            "shards": [],
        }

    recording = windows.metadata["recording"]
    _, first = np.unique(recording, return_index=True)
    order = recording[np.sort(first)]
    new_entries = []
    start = len(manifest["shards"])
    for k, rec in enumerate(order):
        rows = np.flatnonzero(recording == rec)
        geometry = windows.geometries[int(rec)]
        name = _shard_name(start + k)
        data = windows.data[rows, : geometry.n_sensors]
        meta = {key: col[rows] for key, col in windows.metadata.items()}
        _write_shard(path / name, data, geometry, meta, sfreq=windows.sfreq, dtype=dtype,
                     compression=compression)
        logger.debug("Wrote %s (%d windows x %d sensors)", name, len(rows), geometry.n_sensors)
        new_entries.append({"file": name, "n_windows": int(len(rows)),
                            "n_sensors": int(geometry.n_sensors), "info": windows.info})

    manifest["shards"] = list(manifest["shards"]) + new_entries
    manifest["n_windows"] = int(sum(s["n_windows"] for s in manifest["shards"]))
    _atomic_write_text(path / MANIFEST_NAME,
                       json.dumps(manifest, indent=1, default=_json_default))
    logger.info("Appended %d windows in %d shard(s) to %s", windows.n_windows,
                len(new_entries), path)


# ---------------------------------------------------------------------------- reading
#: Default bound of the open-shard cache, per process. An open shard holds about 0.5 MB of
#: HDF5 state, and in a process streaming batches its small allocations keep freed batch
#: memory from going back to the system: on a store of 80 shards, streaming peaked at
#: +8 MB (32 open) against +106 MB (64 open) over 8 open (bench_data.py, part b). Training
#: reads shards this many at a time (``ShardRunSampler``'s buffer), so each process opens
#: every shard once per epoch.
MAX_OPEN_SHARDS = 32


def _default_max_open(n_shards: int) -> int:
    """Open-file cache size: every shard up to ``MAX_OPEN_SHARDS`` and half the open-file limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft <= 0:
            soft = 1 << 16
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        soft = 512
    return max(1, min(int(n_shards), MAX_OPEN_SHARDS, int(soft) // 2))


def _runs(sorted_unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end positions of the runs of consecutive values of a sorted unique array."""
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    return (np.concatenate([[0], breaks]).astype(np.int64),
            np.concatenate([breaks, [sorted_unique.size]]).astype(np.int64))


class StoreReader:
    """Random access to a store: metadata, geometries and windows by global index.

    Shard files are opened lazily and kept open, the least recently used closed first when
    more than ``max_open`` are open. Handles are never pickled, and a reader used in a forked
    process (a DataLoader worker) opens its own.

    Parameters
    ----------
    path : str | Path
        Store folder.
    max_open : int | None
        Largest number of shard files kept open at once, per process. None: every shard up
        to ``MAX_OPEN_SHARDS`` (32), and at most half of the open-file limit (``ulimit -n``).
        An open shard costs a file descriptor and about 0.5 MB of HDF5 state (its metadata
        cache's hash table; no chunk cache), and opening one costs about as much as reading
        ten windows, so training reads shards a buffer at a time (see
        :class:`~megfm.data.sampler.ShardRunSampler`).

    Attributes
    ----------
    path : Path
    manifest : dict
        Content of ``store.json``.
    sfreq : float
    n_times : int
    dtype : str
    info : dict
        How the windows were made (``Windows.info`` of the first write; see
        :attr:`shard_infos` for every shard).
    offsets : array of int, shape (n_shards + 1,)
        Global index of the first window of each shard (and the total at the end).
    """

    def __init__(self, path: str | os.PathLike, *, max_open: int | None = None) -> None:
        self.path = Path(path)
        self._start(_load_manifest(self.path), max_open)
        for entry in self.manifest["shards"]:
            if not (self.path / entry["file"]).exists():
                raise FileNotFoundError(
                    f"The store manifest {self.path / MANIFEST_NAME} lists {entry['file']}, "
                    "which is missing. Restore the file, or remove its entry from "
                    f"{MANIFEST_NAME} (its windows are then lost), or re-create the store."
                )

    def _start(self, manifest: dict, max_open: int | None) -> None:
        """Set the attributes that a manifest gives (the store's, or an export's copy)."""
        self.manifest = manifest
        self.sfreq = float(manifest["sfreq"])
        self.n_times = int(manifest["n_times"])
        self.dtype = str(manifest["dtype"])
        self.info = dict(manifest.get("info") or {})
        shards = manifest["shards"]
        if max_open is None:
            max_open = _default_max_open(len(shards))
        elif int(max_open) < 1:
            raise ValueError(f"Invalid value for 'max_open': expected >= 1; got {max_open}.")
        self.max_open = int(max_open)
        counts = np.array([int(s["n_windows"]) for s in shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._handles: OrderedDict[int, h5py.File] = OrderedDict()
        self._pid = os.getpid()
        self._geometries: list[SensorGeometry] | None = None
        self._metadata: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ handles
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # never pickle an h5py handle
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _shard_path(self, shard: int) -> Path:
        return self.path / self.manifest["shards"][shard]["file"]

    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():
            # Forked: handles inherited from the parent must not be shared; open our own.
            self._handles = OrderedDict()
            self._pid = os.getpid()
        f = self._handles.get(shard)
        if f is not None:
            self._handles.move_to_end(shard)
            return f
        file = self._shard_path(shard)
        try:
            # No chunk cache: every chunk is one whole window, read once per pass, so a
            # cache would only cost memory (1 MB per open shard by default).
            f = h5py.File(file, "r", rdcc_nbytes=0)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Shard {file} listed in {self.path / MANIFEST_NAME} is missing. Restore it or "
                "re-create the store."
            ) from None
        except OSError as exc:
            raise OSError(
                f"Cannot open shard {file}: it is truncated or corrupt ({exc}). The file was "
                "probably damaged after writing (copy interrupted, disk full). Restore it "
                "from a backup or re-create the store with megfm.write_store / `megfm prepare`."
            ) from exc
        entry = self.manifest["shards"][shard]
        try:
            shape = f["data"].shape
        except (KeyError, OSError) as exc:
            f.close()
            raise OSError(
                f"Shard {file} has no readable 'data' dataset ({exc}); it is corrupt. "
                "Re-create the store."
            ) from exc
        if shape[0] != int(entry["n_windows"]) or shape[2] != self.n_times:
            f.close()
            raise OSError(
                f"Shard {file} holds data of shape {shape}, but the manifest expects "
                f"{entry['n_windows']} windows of {self.n_times} samples; the store is "
                "inconsistent. Re-create it."
            )
        self._handles[shard] = f
        while len(self._handles) > self.max_open:
            _, old = self._handles.popitem(last=False)
            old.close()
        return f

    def close(self) -> None:
        """Close every open shard file."""
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles = OrderedDict()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    def _read(self, shard: int, what: str, fn):
        """Run ``fn(h5file)`` and re-raise h5py errors with the shard's name and a fix."""
        f = self._file(shard)
        try:
            return fn(f)
        except (OSError, KeyError, RuntimeError) as exc:
            text = str(exc).lower()
            # HDF5 reports a failed checksum as a failed filter
            if "fletcher32" in text or ("filter returned failure" in text
                                        and f.attrs.get("checksum") == "fletcher32"):
                why = "its checksum does not match (its bytes changed after it was written)"
            else:
                why = f"it is corrupt ({exc})"
            raise OSError(
                f"Cannot read {what} from shard {self._shard_path(shard)}: {why}. Restore it "
                "from a backup or re-create the store with `megfm prepare`."
            ) from exc

    # ------------------------------------------------------------------ views
    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return len(self.manifest["shards"])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shard_infos(self) -> list[dict]:
        """``Windows.info`` of the write that made each shard (state, window, preprocessing)."""
        return [dict(s.get("info") or {}) for s in self.manifest["shards"]]

    @property
    def n_sensors(self) -> np.ndarray:
        """Sensor count of each shard, shape (n_shards,)."""
        return np.array([int(s["n_sensors"]) for s in self.manifest["shards"]], dtype=np.int64)

    @property
    def geometries(self) -> list[SensorGeometry]:
        """The sensor geometry of each shard (``metadata["recording"]`` indexes it)."""
        if self._geometries is None:
            self._load_shard_tables()
        return self._geometries

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        """Per-window metadata of the whole store, dict of arrays of shape (n_windows,).

        ``recording`` is the shard index (it indexes :attr:`geometries`).
        """
        if self._metadata is None:
            self._load_shard_tables()
        return self._metadata

    def _load_shard_tables(self) -> None:
        """Read every shard's geometry and metadata in one pass.

        Each shard is closed again right after (unless it was already open): a pass over
        thousands of shards must not fill the open-shard cache, whose HDF5 state (about
        0.5 MB per file) would stay in memory.
        """

        geoms = []
        columns: dict[str, list[np.ndarray]] = {}
        for k in range(self.n_shards):
            was_open = k in self._handles and self._pid == os.getpid()
            try:
                geoms.append(self._read(k, "the sensor geometry", read_geometry))
                meta = self._read(k, "the metadata", read_metadata)
            finally:
                if not was_open and k in self._handles:
                    self._handles.pop(k).close()
            n = int(self.manifest["shards"][k]["n_windows"])
            meta["recording"] = np.full(n, k, dtype=np.int64)
            for name, col in meta.items():
                columns.setdefault(name, []).append(col)
        meta_all = {}
        for name, cols in columns.items():
            if len(cols) != self.n_shards:  # a column only some shards have
                continue
            meta_all[name] = np.concatenate(cols) if cols else np.array([])
        for name, kind in METADATA_COLUMNS.items():
            if name not in meta_all:
                meta_all[name] = np.zeros(0, dtype=str if kind is str else kind)
        self._geometries, self._metadata = geoms, meta_all

    def locate(self, indices: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Map global window indices to ``(shard, row)`` arrays."""
        idx = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"Window index out of range for a store of {n} windows.")
        idx = np.where(idx < 0, idx + n, idx)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        return shard, idx - self.offsets[shard]

    def describe(self, indices, *, limit: int = 5) -> str:
        """Name windows by store index, shard file, row and recording, for error messages.

        Parameters
        ----------
        indices : int | array of int
            Global window indices.
        limit : int
            Name at most this many (the rest are counted).

        Returns
        -------
        text : str
            e.g. ``"window 5 (row 1 of shard-00001.h5, recording /data/sub-02_raw.fif)"``.
        """
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        shard, row = self.locate(idx)
        parts = []
        for i, k, r in zip(idx[:limit], shard[:limit], row[:limit], strict=False):
            entry = self.manifest["shards"][int(k)]
            source = (entry.get("info") or {}).get("source")
            if not source:  # written by write_store, not prepare: name the subject
                source = f"of subject {str(self.metadata['subject'][int(i)])!r}"
            parts.append(f"window {int(i)} ({self._locus(int(k), int(r))}, recording {source})")
        if idx.size > limit:
            parts.append(f"and {idx.size - limit} more")
        return "; ".join(parts)

    def _locus(self, shard: int, row: int) -> str:
        return f"row {row} of {self.manifest['shards'][shard]['file']}"

    def read_window(self, index: int) -> tuple[np.ndarray, int]:
        """Read one window as ``(data (S_shard, T) float32, shard)``."""
        shard, row = self.locate(index)
        shard, row = int(shard), int(row)
        what = f"window {int(self.offsets[shard]) + row} (row {row})"
        data = self._read(shard, what, lambda f: f["data"][row])
        return np.asarray(data, dtype=np.float32), shard

    def read_rows(self, shard: int, rows: np.ndarray, *,
                  dtype: np.dtype | type | str | None = np.float32) -> np.ndarray:
        """Read rows of one shard (any order, repeats allowed) as an array (n, S_shard, T).

        The rows are sorted and each run of consecutive rows is read with one slice read
        (``read_direct`` into one buffer), then put back in the order asked: HDF5 point
        selections (a list of rows) cost about 50x more per window.

        Parameters
        ----------
        shard : int
            Shard index.
        rows : array of int
            Rows of the shard, in the order wanted.
        dtype : numpy dtype | None
            Type of the result (default float32); None keeps the store's own type
            (float16 stores then send half the bytes).

        Returns
        -------
        data : array, shape (len(rows), S_shard, T)
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out_dtype = np.dtype(self.dtype if dtype is None else dtype)
        n_sensors = int(self.manifest["shards"][shard]["n_sensors"])
        uniq, inverse = np.unique(rows, return_inverse=True)
        if uniq.size == 0:
            return np.zeros((0, n_sensors, self.n_times), out_dtype)
        n_rows = int(self.manifest["shards"][shard]["n_windows"])
        if uniq[0] < 0 or uniq[-1] >= n_rows:
            raise IndexError(f"Rows out of range for shard {shard} of {n_rows} windows.")
        starts, ends = _runs(uniq)
        dset = self._file(shard)["data"]
        # read in the store's type (no HDF5 conversion), straight into the result when no
        # conversion or reordering is needed
        block = np.empty((uniq.size, *dset.shape[1:]), dtype=dset.dtype)
        try:
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                dset.read_direct(block, source_sel=np.s_[int(uniq[a]):int(uniq[b - 1]) + 1],
                                 dest_sel=np.s_[a:b])
        except OSError as exc:  # find the damaged window, to name it
            error = exc
            for r in uniq:
                self._read(shard, f"window {int(self.offsets[shard] + r)} (row {int(r)})",
                           lambda f, r=r: f["data"][int(r)])

            def _again(f):  # every window reads alone: name the shard with the first error
                raise error

            self._read(shard, f"windows (rows {int(uniq[0])}..{int(uniq[-1])})", _again)
        if uniq.size != rows.size or not np.array_equal(uniq, rows):
            block = block[inverse.reshape(-1)]
        return block.astype(out_dtype, copy=False)

    def read_row_arrays(self, shard: int, rows: np.ndarray) -> list[np.ndarray]:
        """Rows of one shard as a list of ``(S_shard, T)`` arrays in the store's type.

        What a loader needs to build a batch: views of one :meth:`read_rows` block here; a
        LitData export hands over its items without copying them into a block first.
        """
        return list(self.read_rows(shard, rows, dtype=None))

    def read(self, indices: np.ndarray | list[int] | slice | None = None) -> Windows:
        """Read windows by global index into a :class:`Windows` (in the order given).

        Only the geometries of the shards that are read are kept; ``metadata["recording"]``
        is renumbered to index them, and ``data`` is zero-padded to their largest sensor count.
        """
        n = len(self)
        if indices is None:
            idx = np.arange(n, dtype=np.int64)
        elif isinstance(indices, slice):
            idx = np.arange(n, dtype=np.int64)[indices]
        else:
            idx = np.atleast_1d(np.asarray(indices))
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise ValueError(
                        f"A boolean 'indices' mask must have shape ({n},); got {idx.shape}."
                    )
                idx = np.flatnonzero(idx)
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"'indices' must be integers or a boolean mask; got {idx.dtype}.")
            idx = idx.astype(np.int64)
        shard, row = self.locate(idx)
        idx = np.where(idx < 0, idx + n, idx)
        used = np.unique(shard)
        geoms = self.geometries
        n_sensors = int(max((geoms[k].n_sensors for k in used), default=0))
        data = np.zeros((idx.size, n_sensors, self.n_times), dtype=np.float32)
        for k in used:
            pos = np.flatnonzero(shard == k)
            data[pos, : geoms[k].n_sensors] = self.read_rows(int(k), row[pos])
        meta = {name: col[idx] for name, col in self.metadata.items()}
        remap = np.zeros(self.n_shards, dtype=np.int64)
        remap[used] = np.arange(used.size)
        meta["recording"] = remap[shard]
        return Windows(data=data, sfreq=self.sfreq, geometries=[geoms[k] for k in used],
                       metadata=meta, info=dict(self.info))

    def __repr__(self) -> str:
        return (f"<StoreReader | {len(self)} windows in {self.n_shards} shard(s), "
                f"{self.n_times} samples @ {self.sfreq:g} Hz, {self.dtype}, {self.path}>")


def open_store(path: str | os.PathLike, **kwargs) -> StoreReader:
    """Open a store, or a LitData export of one, for reading (usable as a context manager).

    Parameters
    ----------
    path : str | Path
        A store folder (:class:`StoreReader`), or a LitData export of a store, local or an
        object-store URI (:class:`~megfm.data.streaming.LitDataReader`, the same interface).
    **kwargs
        Passed to the reader (``max_open``).
    """
    if isinstance(path, StoreReader):
        return path
    from .streaming import LitDataReader, is_litdata_export

    if is_litdata_export(path):
        return LitDataReader(path, **kwargs)
    return StoreReader(path, **kwargs)


@contextmanager
def reading(source) -> Iterator[Any]:
    """``source`` as an open reader for the duration of a ``with`` block.

    A store or export path is opened here and closed after, so that one open serves every
    read of the block; an open reader is used as it is and left open (its owner closes it);
    anything else (in-memory windows, a path that is no store) passes through unchanged.
    """
    if isinstance(source, StoreReader) or not is_window_source(source):
        yield source
    else:
        with open_store(source) as reader:
            yield reader


def is_window_source(path) -> bool:
    """Whether ``path`` names a store or a LitData export of one (a URI counts as one)."""
    from .streaming import is_litdata_export

    return isinstance(path, (str, os.PathLike)) and (
        is_litdata_export(path) or (Path(path) / MANIFEST_NAME).is_file())


def require_window_source(path) -> None:
    """Raise the one-line error that says how to make a store when ``path`` is none."""
    if not is_window_source(path):
        raise FileNotFoundError(
            f"{path} is neither a megfm store (no {MANIFEST_NAME} inside) nor a LitData export "
            "of one; create a store with `megfm prepare RECORDINGS --out STORE` or "
            "megfm.write_store(), and an export with `megfm export STORE OUT`."
        )


def read_store(path: str | os.PathLike, *, indices=None) -> Windows:
    """Read a store (or some of its windows) back into memory as :class:`Windows`.

    Parameters
    ----------
    path : str | Path
        Store folder written by :func:`write_store`.
    indices : array of int | array of bool | slice | None
        Global window indices to read, in the order wanted; all windows when None.

    Returns
    -------
    windows : Windows
        ``geometries`` are those of the shards read; ``metadata["recording"]`` indexes them.
    """
    with open_store(path) as reader:
        return reader.read(indices)
