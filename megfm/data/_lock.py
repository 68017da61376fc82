"""One writer per store: an exclusive lock on ``STORE/store.lock`` that holds the writer's pid.

The lock is an ``fcntl.flock`` on the lock file: the kernel releases it when the writer's
process ends, even by SIGKILL, so a crash never leaves a store locked. A second writer fails
at once with the pid of the first. Within one process the lock is re-entrant (``prepare``
holds it for the whole run while each ``write_store`` call takes it again).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_NAME", "StoreLockedError", "store_lock"]

LOCK_NAME = "store.lock"

# resolved store path -> (open lock file descriptor, depth) of the locks this process holds
_held: dict[Path, list[int]] = {}


class StoreLockedError(OSError):
    """Another process is writing the store."""


def _lock_fd(fd: int) -> bool:
    """Try to lock ``fd`` exclusively without waiting; True on success."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def store_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive write lock of the store folder ``path`` (created when missing).

    Parameters
    ----------
    path : path-like
        The store folder.

    Yields
    ------
    lock_file : pathlib.Path

    Raises
    ------
    StoreLockedError
        When another process holds the lock: ``"store ... is being written by pid N"``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    lock_file = key / LOCK_NAME
    if key in _held:  # re-entrant within this process
        _held[key][1] += 1
        try:
            yield lock_file
        finally:
            _held[key][1] -= 1
        return
    # no O_TRUNC: opening must not erase the pid of a writer that holds the lock
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    if not _lock_fd(fd):
        try:
            pid = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        raise StoreLockedError(
            f"The store {path} is being written by pid {pid}; wait for that process to finish "
            "(or stop it) and run again. Two writers at once would mix their shards."
        )
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        _held[key] = [fd, 1]
        yield lock_file
    finally:
        _held.pop(key, None)
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the lock
