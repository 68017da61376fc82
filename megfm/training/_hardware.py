"""Defaults that follow the hardware: precision, matmul precision, fused optimiser, pinning.

Small functions of the accelerator name so that the CPU tests cover the GPU choices too.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["adamw_kwargs", "device_type", "resolve_precision"]


def device_type(accelerator: str) -> str:
    """The torch device type that Lightning's ``accelerator`` names on this machine.

    Parameters
    ----------
    accelerator : str
        ``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"mps"``, ... (Lightning's names).

    Returns
    -------
    device_type : str
        ``"cuda"``, ``"mps"`` or ``"cpu"`` for those names (``"auto"`` and ``"gpu"``: CUDA
        when available, then MPS, then the CPU for ``"auto"``); any other name as given.
    """
    name = str(accelerator).lower()
    if name in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu" if name == "auto" else "cuda"  # "gpu" without one: Lightning refuses it
    return name


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning precision of a run: ``"auto"`` is ``"bf16-mixed"`` on CUDA, else ``"32-true"``.

    Parameters
    ----------
    precision : str
        ``"auto"`` or any Lightning precision (returned unchanged).
    accelerator : str
        Lightning accelerator name (see :func:`device_type`).

    Returns
    -------
    precision : str
        ``"bf16-mixed"`` for ``"auto"`` on a CUDA device that supports bf16, ``"32-true"``
        for ``"auto"`` anywhere else (CPU, MPS, older GPUs), else ``precision``.
    """
    if precision != "auto":
        return precision
    if device_type(accelerator) == "cuda" and torch.cuda.is_available() \
            and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def adamw_kwargs(params: Iterable[torch.Tensor]) -> dict:
    """Extra :class:`torch.optim.AdamW` arguments for these parameters.

    ``{"fused": True}`` when every parameter is a floating-point CUDA tensor (one kernel for
    the whole update instead of several per parameter), else ``{}``.
    """
    params = list(params)
    if params and all(p.is_cuda and p.is_floating_point() for p in params):
        return {"fused": True}
    return {}
