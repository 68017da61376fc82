"""Training layer: the Lightning data module, the pretraining module and :func:`pretrain`.

Only this layer (and :mod:`megfm.evaluate.finetune`) imports Lightning.
"""

from __future__ import annotations

# Imported eagerly so that the name ``pretrain`` is the function, not the submodule.
from .module import PretrainModule
from .pretrain import load_metrics, pretrain

__all__ = ["MEGDataModule", "PretrainModule", "load_metrics", "pretrain"]


def __getattr__(name: str):
    if name == "MEGDataModule":
        from .datamodule import MEGDataModule

        globals()[name] = MEGDataModule
        return MEGDataModule
    raise AttributeError(f"module 'megfm.training' has no attribute {name!r}")
