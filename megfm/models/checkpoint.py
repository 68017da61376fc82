"""Checkpoints: a folder with ``config.json`` (model config + megfm version) and ``weights.pt``.

``weights.pt`` is a plain state dict loaded with ``torch.load(weights_only=True)``, so loading
a checkpoint never runs code from the file. Files are written to a temporary name and renamed,
so an interrupted save never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .._version import __version__
from .config import ModelConfig
from .model import MaskedSignalModel

__all__ = ["CHECKPOINT_FORMAT", "CONFIG_NAME", "WEIGHTS_NAME", "load_pretrained", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.pt"
#: Format tag and version written into every ``config.json``.
CHECKPOINT_FORMAT = "megfm-checkpoint"
FORMAT_VERSION = 1


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


def save_pretrained(model: MaskedSignalModel, directory: str | Path) -> Path:
    """Write a checkpoint folder.

    Parameters
    ----------
    model : MaskedSignalModel
        The model to save (its ``config`` and ``state_dict``).
    directory : str | Path
        Folder to write; created if needed. Existing checkpoint files are replaced atomically.

    Returns
    -------
    directory : Path
    """
    if not isinstance(model, MaskedSignalModel):
        raise TypeError(f"Expected a MaskedSignalModel; got {type(model).__name__}.")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"Cannot save a checkpoint to {directory}: it is a file, not a folder.")
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "megfm_version": __version__,
        "model": model.config.to_dict(),
    }
    tmp_w = directory / (WEIGHTS_NAME + ".tmp")
    tmp_c = directory / (CONFIG_NAME + ".tmp")
    torch.save(state, tmp_w)
    tmp_c.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_w, directory / WEIGHTS_NAME)
    os.replace(tmp_c, directory / CONFIG_NAME)
    return directory


def read_checkpoint_config(directory: str | Path) -> ModelConfig:
    """Read and check the ``config.json`` of a checkpoint folder (no weights loaded)."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not directory.is_dir() or not cfg_path.is_file():
        raise ValueError(
            f"{directory} is not a megfm checkpoint: expected a folder with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} (written by MaskedSignalModel.save_pretrained)."
        )
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cfg_path} is not valid JSON, so {directory} is not a megfm checkpoint.") from exc
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or "model" not in meta:
        raise ValueError(
            f"{cfg_path} is not a megfm checkpoint config (missing 'format': "
            f"'{CHECKPOINT_FORMAT}' or 'model')."
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"Checkpoint {directory} has format version {version!r}, written by megfm "
            f"{meta.get('megfm_version', '?')}; this megfm ({__version__}) reads format "
            f"<= {FORMAT_VERSION}. Upgrade megfm."
        )
    saved = str(meta.get("megfm_version", ""))
    if _major(saved) != _major(__version__):
        raise ValueError(
            f"Checkpoint {directory} was written by megfm {saved or '?'}, incompatible with the "
            f"installed megfm {__version__} (different major version)."
        )
    try:
        return ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid model config in {cfg_path}: {exc}") from exc


def load_pretrained(
    directory: str | Path,
    *,
    expected_config: ModelConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> MaskedSignalModel:
    """Load a checkpoint folder written by :meth:`MaskedSignalModel.save_pretrained`.

    Parameters
    ----------
    directory : str | Path
        The checkpoint folder.
    expected_config : ModelConfig | None
        When given, the checkpoint's config must equal it; differences are listed in the error.
    map_location : str | torch.device
        Where to load the tensors.

    Returns
    -------
    model : MaskedSignalModel
        In eval mode.
    """
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    if expected_config is not None:
        diff = config.differences(expected_config)
        if diff:
            listed = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"Checkpoint {directory} does not match the expected config ({listed}).")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{directory} is not a complete megfm checkpoint: {WEIGHTS_NAME} is missing.")
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch's message may advise weights_only=False: not shown
        raise ValueError(
            f"Cannot read the weights {weights}: the file is truncated or corrupt "
            f"({type(exc).__name__}). Export the model again (save_pretrained) or restore it."
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{weights} does not hold a state dict (got {type(state).__name__}).")
    model = MaskedSignalModel(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"The weights in {weights} do not fit the config in {directory / CONFIG_NAME}: {exc}"
        ) from exc
    return model.eval()
