"""Stand-ins for the ``torchaudio.functional`` names braindecode imports (never called)."""

from __future__ import annotations

from typing import Any

__all__ = ["fftconvolve", "filtfilt", "lfilter"]


def _missing(name: str):
    def stub(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"torchaudio.functional.{name} is not available: this is the megfm benchmark "
            "stand-in for torchaudio (see docs/peers.md). Install a torchaudio that matches "
            "your torch to use it."
        )

    stub.__name__ = name
    return stub


fftconvolve = _missing("fftconvolve")
filtfilt = _missing("filtfilt")
lfilter = _missing("lfilter")
