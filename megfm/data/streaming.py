"""A store exported to LitData's streaming format, read through the same API as a store.

LitData (Lightning's streaming dataset library) keeps the windows in optimized chunks that
stream from a local folder or an object store (``s3://``, ``gs://``, ...), downloading chunks
on demand into a local cache. An export is a folder::

    EXPORT/
      index.json          LitData's chunk index
      chunk-*.bin         the windows, in store order, in the store's dtype
      megfm.h5            the store's manifest (attribute), and per recording its
                          geometry/ and meta/ (the layout of a store shard, without data)

:class:`LitDataReader` reads an export with the interface of
:class:`~megfm.data.store.StoreReader` (same global window order, recordings as shards), so
training (with the same sampler, order and resume state), embedding, explaining and
evaluating take either format. :func:`megfm.data.store.open_store` picks the reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .._io import atomic_dir
from .._version import __version__
from ._lock import store_lock
from .store import STORE_VERSION, StoreReader, _json_default, write_tables

__all__ = ["EXPORT_FORMAT", "LitDataReader", "export_litdata", "is_litdata_export",
           "is_remote", "resolve_source"]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "megfm-litdata"
EXPORT_VERSION = 1
TABLES_NAME = "megfm.h5"
#: URI schemes LitData streams from (anything else is a local path)
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "azure://", "az://", "r2://", "hf://")
#: the variables to set for each object store, named when its credentials are missing
_CREDENTIALS = {
    "s3://": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "r2://": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY with the R2 endpoint",
    "gs://": "GOOGLE_APPLICATION_CREDENTIALS",
    "gcs://": "GOOGLE_APPLICATION_CREDENTIALS",
    "azure://": "AZURE_STORAGE_CONNECTION_STRING",
    "az://": "AZURE_STORAGE_CONNECTION_STRING",
    "hf://": "HF_TOKEN",
}


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an object-store URI (LitData streams it)."""
    return str(path).startswith(REMOTE_SCHEMES)


def resolve_source(path: str | os.PathLike) -> str | Path:
    """A store or export as a record names it: a URI as it is, a local path made absolute."""
    return str(path) if is_remote(path) else Path(path).resolve()


def is_litdata_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a megfm LitData export (a remote URI is assumed to be one)."""
    return is_remote(path) or (Path(path) / TABLES_NAME).is_file()


# ---------------------------------------------------------------------------- export
def _store_digest(manifest: dict) -> str:
    """Fingerprint of a store's content (its manifest lists every shard and window count)."""
    return hashlib.sha1(json.dumps(manifest, sort_keys=True, default=_json_default)
                        .encode()).hexdigest()[:16]


def _write_chunks(reader: StoreReader, folder: Path, chunk_bytes: str) -> None:
    """Write every window of a store, in store order, as LitData chunks (in this process)."""
    from litdata.streaming import Cache

    cache = Cache(str(folder), chunk_bytes=chunk_bytes)
    bar = tqdm(total=len(reader), desc="export", unit="win", disable=None)
    for shard in range(reader.n_shards):
        start = int(reader.offsets[shard])
        n = int(reader.offsets[shard + 1]) - start
        for first in range(0, n, 64):  # slice reads, a block of windows at a time
            rows = np.arange(first, min(first + 64, n))
            block = reader.read_rows(shard, rows, dtype=None)
            for j, row in enumerate(rows.tolist()):
                # raw bytes (shape and type are the manifest's): read back with one copy,
                # where LitData's numpy items cost three
                cache[start + row] = {"x": np.ascontiguousarray(block[j]).tobytes(),
                                      "index": start + row}
            bar.update(rows.size)
    bar.close()
    cache.done()
    cache.merge()


def export_litdata(
    store: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chunk_bytes: str = "64MB",
    overwrite: bool = False,
) -> Path:
    """Write a store's windows, geometry and metadata as a LitData streaming dataset.

    Parameters
    ----------
    store : str | Path
        Store folder (:func:`megfm.write_store`, ``megfm prepare``).
    out : str | Path
        Export folder (local; copy it to an object store to stream it from there).
    chunk_bytes : str
        LitData chunk size (e.g. ``"64MB"``): the unit a streaming reader downloads.
    overwrite : bool
        Replace an existing export of another store (an export of this same store is kept
        as it is: re-running is a no-op).

    Returns
    -------
    out : Path
        The export folder. It appears complete or not at all: the export is written to a
        temporary folder and renamed when complete.
    """
    if is_remote(out):
        raise ValueError(
            f"megfm export writes to a local folder, not to {out}; export to a folder, then "
            "copy it to the object store (e.g. `aws s3 sync EXPORT s3://bucket/prefix`).")
    reader = StoreReader(store)
    out = Path(out)
    digest = _store_digest(reader.manifest)
    if is_litdata_export(out):
        try:
            with h5py.File(out / TABLES_NAME, "r") as f:
                same = f.attrs.get("store_digest") == digest
        except OSError:  # a damaged export: replaced only when asked
            same = False
        if same:
            logger.info("%s already holds an export of %s; nothing to do.", out, store)
            return out
        if not overwrite:
            raise FileExistsError(
                f"{out} holds a LitData export of another store; pass overwrite=True "
                "(--overwrite) to replace it, or choose another folder.")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} is a non-empty folder that is not a megfm LitData export; refusing to "
            "write into it. Pass a new or empty folder.")
    # one exporter at a time per destination (the lock sits beside it, not in it)
    with store_lock(out.with_name(f".{out.name}.lock")), atomic_dir(out) as tmp:
        _write_chunks(reader, tmp, chunk_bytes)
        manifest = dict(reader.manifest, format=EXPORT_FORMAT, version=STORE_VERSION)
        with h5py.File(tmp / TABLES_NAME, "w") as f:
            f.attrs["format"] = EXPORT_FORMAT
            f.attrs["format_version"] = EXPORT_VERSION
            f.attrs["megfm_version"] = __version__
            f.attrs["store_digest"] = digest
            f.attrs["manifest"] = json.dumps(manifest, default=_json_default)
            for k in range(reader.n_shards):
                write_tables(f.create_group(f"shards/{k:05d}"), reader.geometries[k],
                             {name: col[reader.offsets[k]:reader.offsets[k + 1]]
                              for name, col in reader.metadata.items()})
    reader.close()
    logger.info("Exported %d windows of %s to %s", int(reader.offsets[-1]), store, out)
    return out


# ---------------------------------------------------------------------------- reading
def _cache_dir(uri: str) -> Path:
    root = Path(os.environ.get("MEGFM_CACHE", Path.home() / ".cache" / "megfm"))
    return root / "litdata" / hashlib.sha1(uri.encode()).hexdigest()[:16]


def _fetch_tables(uri: str) -> Path:
    """Download an export's ``megfm.h5`` into the local cache (once per URI: an export
    replaced at the same URI needs its cache folder deleted, as LitData's chunk cache does)."""
    from litdata.streaming.downloader import get_downloader

    local = _cache_dir(uri) / TABLES_NAME
    if local.is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    scheme = next(s for s in REMOTE_SCHEMES if uri.startswith(s))
    try:
        get_downloader(uri, str(local.parent), []).download_file(
            f"{uri.rstrip('/')}/{TABLES_NAME}", str(local))
    except Exception as exc:
        text = f"{type(exc).__name__} {exc}".lower()
        if "credential" in text or "token" in text or "unauthori" in text or "403" in text:
            raise PermissionError(
                f"Cannot read {uri}: no credentials for {scheme} ({type(exc).__name__}). "
                f"Set {_CREDENTIALS[scheme]}.") from None
        raise OSError(f"Cannot read {uri}/{TABLES_NAME} ({type(exc).__name__}: {exc}); "
                      "check the URI and that the export is complete.") from None
    return local


def _check_chunks(folder: Path) -> int:
    """Name the first missing or truncated chunk of a local export (LitData would wait for it).

    Returns the number of windows the chunks hold.
    """
    fix = "re-create the export with `megfm export STORE OUT --overwrite`"
    try:
        chunks = json.loads((folder / "index.json").read_text(encoding="utf-8"))["chunks"]
    except (OSError, ValueError, KeyError) as exc:
        raise OSError(f"{folder} is not a complete LitData export: its index.json is missing "
                      f"or damaged ({type(exc).__name__}); {fix}.") from None
    first = 0
    for chunk in chunks:
        path, size = folder / chunk["filename"], int(chunk["chunk_bytes"])
        last = first + int(chunk["chunk_size"]) - 1
        found = path.stat().st_size if path.is_file() else None
        if found != size:
            what = "is missing" if found is None else f"is truncated ({found} of {size} bytes)"
            raise OSError(f"Chunk {path.name} of the LitData export {folder} (windows "
                          f"{first}-{last}) {what}; restore it from the copy you exported, or "
                          f"{fix}.")
        first = last + 1
    return first


class LitDataReader(StoreReader):
    """Random access to a LitData export (:func:`export_litdata`), as a :class:`StoreReader`.

    The store's recordings are the shards (same global window order, geometry and
    metadata), so everything that reads a store reads an export the same way. Windows come
    from LitData's ``StreamingDataset``, which reads local chunks in place and downloads
    remote ones into its cache on first access; each process opens its own.

    Parameters
    ----------
    path : str | Path
        Export folder, or its object-store URI (``s3://bucket/prefix``).
    """

    def __init__(self, path: str | os.PathLike, *, max_open: int | None = None) -> None:
        self.uri = str(path)
        remote = is_remote(self.uri)
        self.path = Path(self.uri) if not remote else Path(self.uri.split("://", 1)[1])
        tables = _fetch_tables(self.uri) if remote else Path(self.uri) / TABLES_NAME
        n_chunked = None if remote else _check_chunks(Path(self.uri))
        try:
            with h5py.File(tables, "r") as f:
                attrs = {k: f.attrs[k] for k in f.attrs}
        except OSError as exc:
            raise OSError(f"Cannot read {tables}: it is truncated or corrupt ({exc}). "
                          "Re-create the export with `megfm export --overwrite`.") from None
        version = int(attrs.get("format_version", -1))
        if attrs.get("format") != EXPORT_FORMAT or version > EXPORT_VERSION:
            raise ValueError(
                f"{self.uri} was written by megfm {attrs.get('megfm_version', '?')} in export "
                f"format {attrs.get('format')!r} version {version}; this megfm "
                f"({__version__}) reads {EXPORT_FORMAT!r} up to version {EXPORT_VERSION}. "
                "Upgrade megfm, or re-export the store with this version.")
        self._tables_path = tables
        self._tables: h5py.File | None = None
        self._dataset = None
        self._start(json.loads(attrs["manifest"]), max_open)
        if n_chunked is not None and n_chunked != len(self):
            raise OSError(
                f"The LitData export {self.uri} holds {n_chunked} windows but its {TABLES_NAME} "
                f"lists {len(self)}; the export is incomplete. Re-create it with "
                "`megfm export STORE OUT --overwrite`.")

    # ------------------------------------------------------------------ handles
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_tables"] = None  # never pickle an h5py handle or a streaming dataset
        state["_dataset"] = None
        return state

    def _shard_path(self, shard: int) -> Path:
        return self._tables_path

    def _own_handles(self) -> None:
        """Forget handles inherited from another process (a forked DataLoader worker)."""
        if self._pid != os.getpid():
            self._tables, self._dataset, self._pid = None, None, os.getpid()

    def _file(self, shard: int):
        self._own_handles()
        if self._tables is None:
            self._tables = h5py.File(self._tables_path, "r")
        return self._tables[f"shards/{shard:05d}"]

    def _stream(self):
        """LitData's dataset over the chunks (made on first use, in each process)."""
        self._own_handles()
        if self._dataset is None:
            from litdata import StreamingDataset

            cache = {"cache_dir": str(_cache_dir(self.uri))} if is_remote(self.uri) else {}
            # read by global index (LitData's own split over ranks applies to iteration only)
            self._dataset = StreamingDataset(self.uri, **cache)
        return self._dataset

    def close(self) -> None:
        """Close the tables file (the streaming dataset is dropped)."""
        if self._tables is not None and self._pid == os.getpid():
            self._tables.close()
        self._tables, self._dataset = None, None

    def _locus(self, shard: int, row: int) -> str:
        return f"item {int(self.offsets[shard]) + row} of the LitData export {self.uri}"

    # ------------------------------------------------------------------ windows
    def _item(self, index: int, shard: int) -> np.ndarray:
        try:
            item = self._stream()[int(index)]
        except OSError as exc:  # a missing or truncated chunk
            if not is_remote(self.uri):
                _check_chunks(Path(self.uri))  # names the chunk when it is gone or cut
            raise OSError(
                f"Cannot read window {index} from the LitData export {self.uri} "
                f"({type(exc).__name__}); restore the export's chunk files or re-create it "
                "with `megfm export STORE OUT --overwrite`.") from None
        if int(item["index"]) != index:
            raise OSError(f"The LitData export {self.uri} holds window {int(item['index'])} "
                          f"where window {index} belongs; re-create it.")
        shape = (int(self.manifest["shards"][shard]["n_sensors"]), self.n_times)
        return np.frombuffer(bytearray(item["x"]), dtype=self.dtype).reshape(shape)

    def read_row_arrays(self, shard: int, rows: np.ndarray) -> list[np.ndarray]:
        """Rows of one recording (any order, repeats allowed), one array per window."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n_rows = int(self.manifest["shards"][shard]["n_windows"])
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise IndexError(f"Rows out of range for recording {shard} of {n_rows} windows.")
        start = int(self.offsets[shard])
        return [self._item(start + row, shard) for row in rows.tolist()]

    def read_rows(self, shard: int, rows: np.ndarray, *,
                  dtype: np.dtype | type | str | None = np.float32) -> np.ndarray:
        """Read rows of one recording (any order, repeats allowed), as in a store."""
        arrays = self.read_row_arrays(shard, rows)
        n_sensors = int(self.manifest["shards"][shard]["n_sensors"])
        out_dtype = np.dtype(self.dtype if dtype is None else dtype)
        if not arrays:
            return np.zeros((0, n_sensors, self.n_times), out_dtype)
        return np.stack(arrays).astype(out_dtype, copy=False)

    def read_window(self, index: int) -> tuple[np.ndarray, int]:
        """Read one window as ``(data (S_shard, T) float32, shard)``."""
        shard, _ = self.locate(index)
        index = int(index) % len(self)
        return self._item(index, int(shard)).astype(np.float32, copy=False), int(shard)

    def __repr__(self) -> str:
        return (f"<LitDataReader | {len(self)} windows in {self.n_shards} recording(s), "
                f"{self.n_times} samples @ {self.sfreq:g} Hz, {self.dtype}, {self.uri}>")
