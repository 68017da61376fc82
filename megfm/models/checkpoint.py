"""Checkpoint folders: ``config.json`` and ``model.safetensors``.

``config.json`` holds the model config, the megfm version and the sha256 of the weights file;
``model.safetensors`` holds the state dict as raw tensors. safetensors has no pickle, so
loading never runs code from the file, and it is memory-mapped when read. A folder is written
whole into a temporary sibling and renamed into place, so an interrupted save leaves the
previous export (or none), never a mix of two.

This module is the file format only: it knows :class:`ModelConfig` but not the model class;
:meth:`MaskedSignalModel.save_pretrained` and :meth:`MaskedSignalModel.from_pretrained` call it.

Folders of format version 1 (``weights.pt``, a pickled state dict) still load, with
``torch.load(weights_only=True)`` and a deprecation warning in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_dir
from .._version import __version__
from .config import ModelConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "LEGACY_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "read_checkpoint",
    "read_checkpoint_config",
    "resolve_checkpoint",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Weights file of format version 1 (a pickled state dict), still readable.
LEGACY_WEIGHTS_NAME = "weights.pt"
#: Format tag and version written into every ``config.json``.
CHECKPOINT_FORMAT = "megfm-checkpoint"
FORMAT_VERSION = 2
#: Folder of a ``megfm pretrain --out RUN`` run folder that holds its exported model.
RUN_MODEL_DIR = "model"
# files an export may hold: only these are replaced when an export is overwritten
_EXPORT_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, LEGACY_WEIGHTS_NAME})


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(
    directory: str | Path, config: ModelConfig, state_dict: Mapping[str, torch.Tensor]
) -> Path:
    """Write a checkpoint folder (``config.json`` + ``model.safetensors``) in one step.

    Parameters
    ----------
    directory : str | Path
        Folder to write. An existing export there is replaced as a whole; a folder that holds
        other files is refused, so that saving never deletes unrelated work.
    config : ModelConfig
        The model configuration, written to ``config.json``.
    state_dict : Mapping[str, Tensor]
        The weights, written to ``model.safetensors``.

    Returns
    -------
    directory : Path
    """
    given = Path(directory)
    directory = Path(os.path.abspath(given))  # "ckpt/." or "." have no name to swap
    if directory.exists():
        if not directory.is_dir():
            raise ValueError(f"Cannot save a checkpoint to {directory}: it is a file, not a folder.")
        others = sorted(p.name for p in directory.iterdir() if p.name not in _EXPORT_FILES)
        if others:
            raise ValueError(
                f"Cannot save a checkpoint to {directory}: it holds files that are not part of a "
                f"megfm export ({', '.join(others[:3])}); choose a new or empty folder."
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": CHECKPOINT_FORMAT})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "megfm_version": __version__,
            "model": config.to_dict(),
            "weights": {"file": WEIGHTS_NAME, "sha256": _sha256(tmp / WEIGHTS_NAME)},
        }
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
    return given


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder that ``path`` names: itself, or the model of a run folder.

    Every command and function that takes a model reads it through here, so each accepts
    what ``megfm pretrain --out RUN`` wrote (``RUN``) as well as ``RUN/model`` or any folder
    written by :meth:`MaskedSignalModel.save_pretrained`.

    Parameters
    ----------
    path : path-like
        A checkpoint folder or a pretraining run folder.

    Returns
    -------
    directory : Path
        The folder that holds ``config.json`` (checked when it is read).
    """
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / RUN_MODEL_DIR / CONFIG_NAME).is_file():
        return path / RUN_MODEL_DIR
    if (path / "run.json").is_file():
        raise ValueError(
            f"{path} is a pretraining run without an exported model ({path / RUN_MODEL_DIR} "
            f"does not exist: the run stopped early). Finish it with `megfm pretrain STORE "
            f"--out {path} --resume`."
        )
    return path


def _read_meta(directory: Path) -> dict:
    """The checked contents of ``config.json`` (format tag, format and megfm versions)."""
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
    return meta


def read_checkpoint_config(directory: str | Path) -> ModelConfig:
    """Read and check the ``config.json`` of a checkpoint folder (no weights loaded).

    Parameters
    ----------
    directory : str | Path
        The checkpoint folder, or a pretraining run folder (see :func:`resolve_checkpoint`).

    Returns
    -------
    config : ModelConfig
    """
    directory = resolve_checkpoint(directory)
    return _config_of(directory, _read_meta(directory))


def _config_of(directory: Path, meta: dict) -> ModelConfig:
    try:
        return ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid model config in {directory / CONFIG_NAME}: {exc}") from exc


def _read_safetensors(directory: Path, meta: dict, map_location: str) -> dict[str, torch.Tensor]:
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{directory} is not a complete megfm checkpoint: {WEIGHTS_NAME} is missing.")
    recorded = meta.get("weights", {}).get("sha256") if isinstance(meta.get("weights"), dict) else None
    if not isinstance(recorded, str):
        raise ValueError(
            f"{directory / CONFIG_NAME} records no sha256 of {WEIGHTS_NAME}, so the weights "
            "cannot be verified; re-export the model with MaskedSignalModel.save_pretrained."
        )
    if _sha256(weights) != recorded:
        raise ValueError(
            f"weights file {weights} does not match the sha256 recorded in {CONFIG_NAME}: the "
            "file is corrupt or was replaced; re-export or re-download it."
        )
    try:
        return load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"Cannot read the weights {weights}: not a valid safetensors file ({reason}); "
            "re-export or re-download it."
        ) from exc


def _read_legacy(directory: Path, map_location: str) -> dict[str, torch.Tensor]:
    weights = directory / LEGACY_WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(
            f"{directory} is not a complete megfm checkpoint: {LEGACY_WEIGHTS_NAME} is missing."
        )
    # A log warning rather than a DeprecationWarning: Python hides those outside __main__, and
    # the fix is to re-save a file, not to change the calling code.
    logger.warning(
        "%s is an old megfm export (weights.pt, pickle-based); re-save it as model.safetensors "
        "with megfm.load_pretrained(path).save_pretrained(path). weights.pt will stop loading "
        "in a future release.", directory,
    )
    try:
        # weights_only: plain tensors and containers only; any other pickled object is refused
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch's message may advise weights_only=False: never shown
        raise ValueError(
            f"Cannot read the weights {weights}: the file is truncated, corrupt or holds "
            f"objects other than tensors ({type(exc).__name__}). Export the model again "
            "(save_pretrained) or restore it."
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{weights} does not hold a state dict (got {type(state).__name__}).")
    return state


def read_checkpoint(
    directory: str | Path,
    *,
    expected_config: ModelConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a checkpoint folder: its config and its verified state dict.

    Parameters
    ----------
    directory : str | Path
        The checkpoint folder, or a pretraining run folder (see :func:`resolve_checkpoint`).
    expected_config : ModelConfig | None
        When given, the checkpoint's config must equal it; differences are listed in the error.
    map_location : str | torch.device
        Where to load the tensors.

    Returns
    -------
    config : ModelConfig
    state_dict : dict[str, Tensor]
    """
    directory = resolve_checkpoint(directory)
    meta = _read_meta(directory)
    config = _config_of(directory, meta)
    if expected_config is not None:
        diff = config.differences(expected_config)
        if diff:
            listed = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"Checkpoint {directory} does not match the expected config ({listed}).")
    if meta["format_version"] >= 2:
        return config, _read_safetensors(directory, meta, str(map_location))
    return config, _read_legacy(directory, str(map_location))
