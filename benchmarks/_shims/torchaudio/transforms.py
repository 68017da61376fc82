"""Stand-ins for the ``torchaudio.transforms`` classes braindecode imports (never built)."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FrequencyMasking", "Resample", "Spectrogram", "TimeMasking"]


class _Missing(nn.Module):
    """Importable and subclassable, but refuses to be built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"torchaudio.transforms.{type(self).__name__} is not available: this is the megfm "
            "benchmark stand-in for torchaudio (see docs/peers.md). Install a torchaudio that "
            "matches your torch to use it."
        )


class Resample(_Missing):
    """Stand-in for ``torchaudio.transforms.Resample``."""


class Spectrogram(_Missing):
    """Stand-in for ``torchaudio.transforms.Spectrogram``."""


class TimeMasking(_Missing):
    """Stand-in for ``torchaudio.transforms.TimeMasking``."""


class FrequencyMasking(_Missing):
    """Stand-in for ``torchaudio.transforms.FrequencyMasking``."""
