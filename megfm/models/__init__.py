"""Models: configuration, the masked-signal transformer and checkpoints (plain ``torch.nn``)."""

from .checkpoint import load_pretrained, save_pretrained
from .config import PRESETS, ModelConfig
from .model import MaskedSignalModel

__all__ = ["PRESETS", "MaskedSignalModel", "ModelConfig", "load_pretrained", "save_pretrained"]
