"""Models: configuration, the masked-signal transformer and checkpoints (plain ``torch.nn``)."""

from .config import PRESETS, ModelConfig
from .model import MaskedSignalModel, load_pretrained, save_pretrained

__all__ = ["PRESETS", "MaskedSignalModel", "ModelConfig", "load_pretrained", "save_pretrained"]
