"""Minimal stand-in for ``torchaudio``, used only by the megfm benchmarks.

braindecode 1.8.1 imports a few torchaudio names when the package is imported
(``torchaudio.functional.fftconvolve/filtfilt/lfilter``, ``torchaudio.transforms.Resample``,
``Spectrogram``, ``TimeMasking``, ``FrequencyMasking``), but the torchaudio wheels available
for this project (2.11) do not load against torch 2.13. The transformer models benchmarked
(Labram, CBraMod, BIOT, EEGPT, LUNA, REVE) never call these names, so this package only has
to make the import succeed. Any real use raises :class:`NotImplementedError`.

``benchmarks/bench_peers.py`` puts ``benchmarks/_shims`` first on ``sys.path``; nothing else
in megfm sees this module.
"""

from __future__ import annotations

from . import functional, transforms

__all__ = ["functional", "transforms"]
__version__ = "0.0.0+megfm-bench-shim"
