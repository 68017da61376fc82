"""Crash-safe writes: every file megfm writes appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        The final file.
    keep_suffix : bool
        Put ``.tmp`` before the extension (``fig.tmp.png``) for writers that infer the
        format from it (matplotlib, ``np.savez``); otherwise append it (``store.json.tmp``).

    Notes
    -----
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    name = f"{path.stem}.tmp{path.suffix}" if keep_suffix else f"{path.name}.tmp"
    tmp = path.with_name(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename.

    ``fsync=True`` also flushes it to disk before the rename (for manifests that other files
    depend on).
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; swap it in for ``path`` on success.

    Parameters
    ----------
    path : path-like
        The final folder. An existing one is moved aside, the new one renamed in, and only
        then the old one deleted, so at every moment ``path`` is either the complete old folder,
        the complete new one, or (between two renames) absent; never a mix of both.

    Notes
    -----
    On an exception the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    old = path.with_name(f".{path.name}.old-{tag}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():  # put the old folder back rather than lose both
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
