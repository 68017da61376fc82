"""Decisions that every rank of a distributed run must take together.

A rank that raises alone leaves the others waiting in the next collective (the gradient
all-reduce) until the process group times out. The helpers here turn a per-rank condition
into one answer that every rank sees, so that all ranks stop at the same step with the same
message. Outside a process group (one process) they are plain local operations.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["any_rank", "gather_objects", "world_size"]


def _initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of processes of the default process group (1 outside one)."""
    return torch.distributed.get_world_size() if _initialised() else 1


def any_rank(flag: bool | torch.Tensor, device: torch.device | str | None = None) -> bool:
    """Whether ``flag`` is true on at least one rank; every rank gets the same answer.

    Parameters
    ----------
    flag : bool | Tensor
        This rank's condition (a tensor is true when any of its elements is).
    device : torch.device | str | None
        Device of the all-reduce tensor: the device the process group's backend expects
        (CUDA for NCCL, CPU for gloo). ``None``: the device of ``flag`` when it is a tensor,
        else the CPU.

    Returns
    -------
    any : bool
        The logical or of ``flag`` over all ranks. Every rank must call this at the same point
        (it is a collective operation when a process group is initialised).
    """
    if isinstance(flag, torch.Tensor):
        device = flag.device if device is None else device
        value = flag.detach().bool().any().to(device=device, dtype=torch.int32).reshape(1)
    else:
        value = torch.tensor([int(bool(flag))], dtype=torch.int32, device=device)
    if world_size() > 1:
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` outside a process group).

    A collective operation: every rank must call it at the same point. Meant for small
    picklable diagnostics (e.g. the window indices of a failing batch).
    """
    n = world_size()
    if n == 1:
        return [obj]
    gathered: list[Any] = [None] * n
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
