"""Packing of the selected sensor-patches of a batch, grouped by time patch.

The encoder sees only the visible sensor-patches and the decoder predicts only the hidden
ones (MAE). Their number varies from one time patch to the next, so they are kept *packed*:
one row per selected sensor-patch, in ``(window, time patch, sensor)`` order. The per-token
work (embedding, MLPs, read-outs) runs on the packed rows; only attention needs them grouped
by time patch, in a grid ``(B * P, width, ...)`` padded to the largest group.

:func:`pack_all` is the static-shape variant: it keeps every sensor-patch, in the same
order, with the selection as a mask, so its shapes depend on ``(B, S, P)`` alone and it
reads nothing back from the device (what ``torch.compile`` and CUDA graphs need), at the
cost of the per-token work on the unselected sensor-patches too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Packing", "pack", "pack_all", "to_grid"]


def to_grid(values: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, n_rows: int,
            width: int) -> torch.Tensor:
    """Packed ``values (N, ...)`` placed at ``(rows, slots)`` of a zero grid ``(n_rows, width, ...)``."""
    grid = values.new_zeros(n_rows, width, *values.shape[1:])
    grid[rows, slots] = values
    return grid


def _pack_rows(rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, int]:
    """Slot of each packed element within its row, and the grid width (at least 1).

    ``rows`` (N,) int64 must be sorted (as ``nonzero`` returns them).
    """
    counts = torch.bincount(rows, minlength=n_rows)
    slots = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    width = max(int(counts.max()), 1) if rows.numel() else 1
    return slots, width


@dataclass(frozen=True)
class Packing:
    """Where each selected sensor-patch of a ``(B, S, P)`` selection sits.

    Attributes
    ----------
    window, patch, sensor : Tensor of int64, shape (N,)
        Indices of the selected sensor-patches, sorted by (window, patch, sensor).
    rows : Tensor of int64, shape (N,)
        Their time patch in the grid, ``window * P + patch``.
    slots : Tensor of int64, shape (N,)
        Their position within that row.
    shape : tuple of int
        ``(B, S, P)`` of the selection.
    width : int
        The most selected sensors of one time patch (at least 1); ``S`` for
        :func:`pack_all`.
    selected : Tensor of bool, shape (N,) | None
        For :func:`pack_all`, which of the ``N = B * P * S`` sensor-patches are selected;
        None when only the selected ones are packed.
    """

    window: torch.Tensor
    patch: torch.Tensor
    sensor: torch.Tensor
    rows: torch.Tensor
    slots: torch.Tensor
    shape: tuple[int, int, int]
    width: int
    selected: torch.Tensor | None = None

    @property
    def n_rows(self) -> int:
        """Rows of the grid: ``B * P`` (one per time patch of each window)."""
        return self.shape[0] * self.shape[2]

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Packed ``values (N, ...)`` as a zero-padded grid ``(B * P, width, ...)``."""
        if self.selected is not None:  # every sensor-patch, already in grid order
            return values.reshape(self.n_rows, self.width, *values.shape[1:])
        return to_grid(values, self.rows, self.slots, self.n_rows, self.width)

    def key_mask(self) -> torch.Tensor:
        """``(B * P, width)`` bool: True where a grid slot holds a selected sensor-patch."""
        if self.selected is not None:
            return self.selected.reshape(self.n_rows, self.width)
        return self.grid(torch.ones_like(self.rows, dtype=torch.bool))

    def per_sensor(self, values: torch.Tensor) -> torch.Tensor:
        """Rows of a per-sensor tensor ``(B, S, ...)`` for each packed sensor-patch."""
        return values[self.window, self.sensor]


def pack(selected: torch.Tensor) -> Packing:
    """Pack the True entries of ``selected (B, S, P)``, grouped by time patch.

    Parameters
    ----------
    selected : Tensor of bool, shape (B, S, P)

    Returns
    -------
    packing : Packing
    """
    b, s, p = selected.shape
    window, patch, sensor = selected.transpose(1, 2).nonzero(as_tuple=True)  # sorted (b, p, s)
    rows = window * p + patch
    slots, width = _pack_rows(rows, b * p)
    return Packing(window, patch, sensor, rows, slots, (b, s, p), width)


def pack_all(selected: torch.Tensor) -> Packing:
    """Every sensor-patch of ``selected (B, S, P)``, with the selection as a mask.

    The static-shape counterpart of :func:`pack`: ``N = B * P * S`` rows in ``(window, time
    patch, sensor)`` order and a grid of width ``S``, whatever the selection.

    Parameters
    ----------
    selected : Tensor of bool, shape (B, S, P)

    Returns
    -------
    packing : Packing
        With ``selected`` set (the selection of each row).
    """
    b, s, p = selected.shape
    device = selected.device
    window = torch.arange(b, device=device).repeat_interleave(p * s)
    patch = torch.arange(p, device=device).repeat_interleave(s).repeat(b)
    sensor = torch.arange(s, device=device).repeat(b * p)
    rows = window * p + patch
    return Packing(window, patch, sensor, rows, sensor, (b, s, p), s,
                   selected=selected.transpose(1, 2).reshape(-1))
