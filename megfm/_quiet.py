"""Silence the Lightning warnings that say nothing to a megfm user (training and fine-tuning)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

#: Messages (regular expressions) of warnings that are known noise in megfm runs.
_NOISE = (
    # raised inside Lightning itself with torch >= 2.10; nothing a caller can change
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


@contextlib.contextmanager
def quiet_lightning(*extra: str) -> Iterator[None]:
    """Ignore Lightning's known-noise warnings (plus ``extra`` message patterns) inside."""
    with warnings.catch_warnings():
        for message in (*_NOISE, *extra):
            warnings.filterwarnings("ignore", message=message)
        yield
