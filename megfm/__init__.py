"""megfm: self-supervised foundation models of MEG.

The public API is re-exported here and imported lazily, so ``import megfm`` is fast and
data-only work never loads torch. See ``docs/`` for the guides.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> module that defines it
_LAZY_ATTRS: dict[str, str] = {
    # data layer
    "read_raw": "megfm.data.read",
    "SensorGeometry": "megfm.data.geometry",
    "PreprocessConfig": "megfm.data.preprocess",
    "preprocess": "megfm.data.preprocess",
    "make_windows": "megfm.data.epochs",
    "Windows": "megfm.data.windows",
    "write_store": "megfm.data.store",
    "read_store": "megfm.data.store",
    "WindowDataset": "megfm.data.dataset",
    "collate_windows": "megfm.data.dataset",
    "prepare": "megfm.data.prepare",
    # simulator
    "sensor_array": "megfm.simulate",
    "simulate_cohort": "megfm.simulate",
    # model
    "ModelConfig": "megfm.models",
    "MaskedSignalModel": "megfm.models",
    "load_pretrained": "megfm.models",
    # training
    "MEGDataModule": "megfm.training",
    "pretrain": "megfm.training",
    # downstream
    "embed": "megfm.embedding",
    "Embedder": "megfm.embedding",
    "run_study": "megfm.evaluate",
    "scorecard": "megfm.evaluate",
    "raw_features": "megfm.evaluate",
    "spectral_features": "megfm.evaluate",
    "finetune": "megfm.evaluate",
    "evaluate_reconstruction": "megfm.evaluate",
    "open_store": "megfm.data.store",
    "attention_maps": "megfm.explain",
}
_SUBMODULES = ("data", "simulate", "tokenize", "masking", "models", "training",
               "embedding", "evaluate", "explain", "pipeline", "cli")

__all__ = ["__version__", *_LAZY_ATTRS, *_SUBMODULES]


def __getattr__(name: str):
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"megfm.{name}")
    raise AttributeError(f"module 'megfm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .data.geometry import SensorGeometry  # noqa: F401
    from .data.windows import Windows  # noqa: F401
