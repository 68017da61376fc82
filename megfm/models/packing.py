"""Packing of the selected sensor-patches of a batch, grouped by time patch.

The encoder sees only the visible sensor-patches and the decoder predicts only the hidden
ones (MAE). Their number varies from one time patch to the next, so they are kept *packed*:
one row per selected sensor-patch, in ``(window, time patch, sensor)`` order. The per-token
work (embedding, MLPs, read-outs) runs on the packed rows; only attention needs them grouped
by time patch, in a grid ``(B * P, width, ...)`` padded to the largest group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Packing", "pack", "to_grid"]


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
        The most selected sensors of one time patch (at least 1).
    """

    window: torch.Tensor
    patch: torch.Tensor
    sensor: torch.Tensor
    rows: torch.Tensor
    slots: torch.Tensor
    shape: tuple[int, int, int]
    width: int

    @property
    def n_rows(self) -> int:
        """Rows of the grid: ``B * P`` (one per time patch of each window)."""
        return self.shape[0] * self.shape[2]

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Packed ``values (N, ...)`` as a zero-padded grid ``(B * P, width, ...)``."""
        return to_grid(values, self.rows, self.slots, self.n_rows, self.width)

    def key_mask(self) -> torch.Tensor:
        """``(B * P, width)`` bool: True where a grid slot holds a sensor-patch."""
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
