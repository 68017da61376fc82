"""Training checkpoints of a run: the newest valid one to resume from, and the last k kept.

``checkpoints/last.ckpt`` is the newest state; each new save first renames the previous
``last.ckpt`` to ``previous-step=N.ckpt``, and only the newest ``keep - 1`` of those are
kept. A resume takes the newest checkpoint that loads (``torch.load(weights_only=True)``,
so never code from the file), and renames any damaged newer one to ``*.corrupt``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

__all__ = ["LAST", "NoValidCheckpointError", "candidates", "problem", "rotate",
           "select_checkpoint"]

logger = logging.getLogger(__name__)

LAST = "last.ckpt"
_PREVIOUS = re.compile(r"^previous-step=(\d+)\.ckpt$")


class NoValidCheckpointError(ValueError):
    """A run folder whose every checkpoint is damaged."""


def _previous(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``previous-step=N.ckpt`` files, newest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("previous-step=*.ckpt")
             if (m := _PREVIOUS.match(p.name))]
    return sorted(found, reverse=True)


def candidates(folder: str | os.PathLike) -> list[Path]:
    """The checkpoints a resume may start from, newest first (``last.ckpt`` first)."""
    folder = Path(folder)
    last = [folder / LAST] if (folder / LAST).is_file() else []
    return last + [p for _, p in _previous(folder)]


def problem(path: str | os.PathLike) -> str | None:
    """Why the training checkpoint at ``path`` cannot be resumed from, or None when it can."""
    import torch

    path = Path(path)
    if path.stat().st_size == 0:
        return "it is empty (0 bytes)"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled code: all unusable
        # torch's own message may suggest weights_only=False, which would run code from
        # the file: only its type is reported
        return f"it is truncated or corrupt ({type(exc).__name__})"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "it is not a Lightning training checkpoint"
    return None


def select_checkpoint(folder: str | os.PathLike, *, rename_corrupt: bool = True) -> Path | None:
    """The newest checkpoint of ``folder`` that loads; None when the folder has none.

    Parameters
    ----------
    folder : path-like
        The ``checkpoints`` folder of a run.
    rename_corrupt : bool
        Rename a damaged checkpoint newer than the one chosen to ``<name>.corrupt`` (kept
        for inspection, never resumed from).

    Raises
    ------
    NoValidCheckpointError
        When there are checkpoints but none loads.
    """
    found = candidates(folder)
    damaged = []
    for path in found:
        why = problem(path)
        if why is None:
            for bad, reason in damaged:
                logger.warning("Checkpoint %s cannot be resumed from (%s); resuming from the "
                               "older %s.", bad, reason, path.name)
                if rename_corrupt:
                    os.replace(bad, bad.with_name(bad.name + ".corrupt"))
            return path
        damaged.append((path, why))
    if damaged:
        listed = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise NoValidCheckpointError(
            f"Cannot resume: no checkpoint in {folder} can be loaded ({listed}). Start the run "
            "again with --overwrite (overwrite=True), or restore a checkpoint from a backup."
        )
    return None


def rotate(folder: str | os.PathLike, *, last_step: int | None, keep: int) -> None:
    """Before a new ``last.ckpt``: keep the current one as ``previous-step=N.ckpt``.

    Parameters
    ----------
    folder : path-like
        The ``checkpoints`` folder.
    last_step : int | None
        Global step of the current ``last.ckpt`` (None: unknown, it is replaced).
    keep : int
        Checkpoints kept in all, ``last.ckpt`` included (older ``previous-*`` are deleted).
    """
    folder = Path(folder)
    last = folder / LAST
    if keep > 1 and last_step is not None and last.is_file():
        os.replace(last, folder / f"previous-step={last_step}.ckpt")
    for _, path in _previous(folder)[max(keep - 1, 0):]:
        path.unlink()
