"""Argparse ``choices`` read from megfm's own registries, imported only when first needed.

The registries (``PRESETS``, ``POOLINGS``, ``MASK_MODES``) live in modules that import torch;
importing them while the parser is built would make ``megfm --help`` take seconds. argparse
only looks at ``choices`` when it checks a given value or prints that subcommand's help,
provided the option has a ``metavar`` (without one it lists the choices while building).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence

__all__ = ["registry"]


class _Registry(Sequence):
    """The names of ``module.attribute`` (a tuple, or a dict's keys), resolved on first use."""

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute
        self._names: tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        if self._names is None:
            value = getattr(importlib.import_module(self.module), self.attribute)
            self._names = tuple(value)
        return self._names

    def __getitem__(self, index):
        return self.names[index]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, value: object) -> bool:
        return value in self.names

    def __repr__(self) -> str:
        return repr(self.names)


def registry(module: str, attribute: str) -> Sequence[str]:
    """Names of the registry ``module.attribute``, for ``add_argument(choices=...)``.

    Parameters
    ----------
    module : str
        Module that defines the registry, e.g. ``"megfm.models.config"``.
    attribute : str
        Its name there, e.g. ``"PRESETS"`` (the keys of a dict, or the items of a tuple).

    Returns
    -------
    names : Sequence[str]
    """
    return _Registry(module, attribute)
