"""Crash-safe writes: every file megfm writes appears complete or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text"]


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
