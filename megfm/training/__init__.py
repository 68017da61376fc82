"""Training layer: the Lightning data module, the pretraining module and :func:`pretrain`.

Only this layer (and :mod:`megfm.evaluate.finetune`) imports Lightning.
"""

from __future__ import annotations

from .datamodule import MEGDataModule
from .module import PretrainModule

# Imported last so that the name ``pretrain`` is the function, not the submodule.
from .pretrain import load_metrics, pretrain

__all__ = ["MEGDataModule", "PretrainModule", "load_metrics", "pretrain"]
