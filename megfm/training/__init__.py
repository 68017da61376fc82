"""Training layer: Lightning data module (and, from the training helper, the pretraining module)."""

from .datamodule import MEGDataModule

__all__ = ["MEGDataModule"]
