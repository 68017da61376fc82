"""`pretrain()`: masked-signal pretraining of a megfm model on a store, through Lightning.

A run lives in one output folder::

    OUT/
      run.json                  every setting of the run (model config, data, optimiser, seed)
      checkpoints/last.ckpt     latest full training state (resume from here)
      checkpoints/previous-step=N.ckpt  the states before it (keep_checkpoints in all)
      checkpoints/best-*.ckpt   lowest validation loss
      logs/version_N/metrics.csv  one CSV per (re)start; :func:`load_metrics` joins them
      model/                    the exported model: config.json + model.safetensors
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from .._quiet import quiet_lightning
from .._version import __version__
from ..data.dataset import naming_windows
from ..data.streaming import is_remote, resolve_source
from . import _checkpoints
from .config import PretrainConfig

__all__ = ["load_metrics", "pretrain", "read_run"]

logger = logging.getLogger(__name__)

_RUN_FILE = "run.json"


@contextlib.contextmanager
def _verbose_level(verbose: bool | str | int | None):
    """Temporarily set the level of the ``megfm`` logger (MNE-style ``verbose``).

    Lightning's own logger (device summary, tips) follows: it prints at INFO only when
    megfm does.
    """
    import lightning.pytorch  # noqa: F401  (it sets its logger's level on import)

    log = logging.getLogger("megfm")
    lightning_log = logging.getLogger("lightning.pytorch")
    old, old_lightning = log.level, lightning_log.level
    if verbose is None:
        level = None
    elif isinstance(verbose, bool):
        level = logging.INFO if verbose else logging.WARNING
    elif isinstance(verbose, str):
        level = getattr(logging, verbose.upper())
    else:
        level = int(verbose)
    if level is not None:
        log.setLevel(level)
    lightning_log.setLevel(logging.INFO if log.isEnabledFor(logging.INFO) else logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(old)
        lightning_log.setLevel(old_lightning)


def _read_manifest(store) -> dict:
    from ..data.store import open_store, require_window_source

    require_window_source(store)
    with open_store(store) as reader:
        return reader.manifest


def _resolve_config(model: Any):
    """The ModelConfig that ``model`` (a preset name, a ModelConfig or its dict) names."""
    from ..models import PRESETS, ModelConfig

    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, str):
        if model not in PRESETS:
            raise ValueError(
                f"Invalid value for 'model': expected one of {tuple(PRESETS)} or a ModelConfig; "
                f"got {model!r}."
            )
        return ModelConfig.preset(model)
    if isinstance(model, dict):
        return ModelConfig.from_dict(model)
    raise TypeError(
        f"Invalid value for 'model': expected a preset name {tuple(PRESETS)} or a ModelConfig; "
        f"got {type(model).__name__}."
    )


def _adapt_config(config, manifest: dict):
    """Copy the store's sampling rate into the model config."""
    sfreq = manifest.get("sfreq")
    if sfreq is not None and float(sfreq) != config.sfreq:
        logger.info("Model config adapted to the store: sfreq %g -> %g Hz", config.sfreq,
                    float(sfreq))
        config = dataclasses.replace(config, sfreq=float(sfreq))
    return config


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def _prepare_out(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Check the output folder; return the checkpoint to resume from (or None).

    Every refusal names a way forward that works: a run that stopped before its first
    checkpoint, or whose checkpoints are all damaged, is restarted with ``--overwrite``.
    """
    ckpt_dir = out / "checkpoints"
    if resume and overwrite:
        raise ValueError("Pass either resume=True (--resume) or overwrite=True (--overwrite), not both.")
    if resume:
        ckpt = _checkpoints.select_checkpoint(ckpt_dir)
        if ckpt is not None:
            return ckpt
        if (out / _RUN_FILE).is_file():
            raise FileNotFoundError(
                f"Cannot resume: the run in {out} stopped before its first checkpoint (none in "
                f"{ckpt_dir}). Start it again with --overwrite (overwrite=True)."
            )
        raise FileNotFoundError(
            f"Cannot resume: {out} holds no pretraining run ({ckpt_dir / _checkpoints.LAST} "
            "does not exist). Start a new run without --resume (resume=False), or point --out "
            "at the folder of the run to continue."
        )
    existing = [p for p in ("checkpoints", "model", "logs", _RUN_FILE) if (out / p).exists()]
    if existing:
        if not overwrite:
            if not _checkpoints.candidates(ckpt_dir):
                raise ValueError(
                    f"{out} holds a pretraining run that stopped before its first checkpoint "
                    f"({', '.join(existing)}). Use --overwrite (overwrite=True) to start it "
                    "again, or another --out folder."
                )
            raise ValueError(
                f"{out} already holds a pretraining run ({', '.join(existing)}). Use --resume "
                "(resume=True) to continue it, --overwrite (overwrite=True) to replace it, or "
                "another --out folder."
            )
        for name in existing:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return None


def pretrain(
    store: str | os.PathLike | None,
    out: str | os.PathLike,
    config: PretrainConfig | None = None,
    *,
    model: Any = "tiny",
    resume: bool = False,
    overwrite: bool = False,
    datamodule=None,
    callbacks: list | None = None,
    progress: bool = True,
    verbose: bool | str | int | None = None,
    **settings: Any,
) -> Path:
    """Pretrain a masked-signal model on a store and export it.

    Parameters
    ----------
    store : path-like | None
        Store folder written by ``megfm prepare`` / :func:`megfm.write_store` (``None`` with
        ``datamodule``).
    out : path-like
        Run folder (created). Holds ``run.json``, ``checkpoints/``, ``logs/`` and ``model/``.
    config : PretrainConfig | None
        Settings of the run: optimiser, masking, data, hardware, checkpoints, seed (``None``:
        the defaults of :class:`megfm.PretrainConfig`).
    model : ``"tiny"`` | ``"small"`` | ``"base"`` | ModelConfig
        Model preset or configuration. The store's sampling rate is copied into it. When
        resuming, the configuration recorded in ``run.json`` is used.
    resume : bool
        Continue the run in ``out`` from its newest checkpoint that loads (``last.ckpt``, else
        the newest ``previous-step=N.ckpt``; damaged ones are renamed ``*.corrupt``):
        optimiser, schedule, step counter and mask seeds continue where they stopped.
    overwrite : bool
        Delete an existing run in ``out`` first. Without ``resume`` or ``overwrite`` an
        existing run is never touched.
    datamodule : lightning.pytorch.LightningDataModule | None
        Use this data module instead of building :class:`megfm.MEGDataModule` from ``store``
        (then the data settings of ``config`` are not used).
    callbacks : list of lightning.pytorch.Callback | None
        Extra callbacks for the trainer.
    progress : bool
        Show a progress bar.
    verbose : bool | str | int | None
        Logging level of megfm during the call.
    **settings
        Fields of :class:`megfm.PretrainConfig` that replace those of ``config``, e.g.
        ``pretrain(store, out, max_steps=200, batch_size=16)``.

    Returns
    -------
    model_dir : Path
        ``out / "model"``, loadable with :func:`megfm.load_pretrained`.

    Notes
    -----
    On CUDA the run also sets ``torch.set_float32_matmul_precision("high")`` (TF32 matmuls
    for whatever stays in fp32); ``precision="auto"`` is ``"bf16-mixed"`` there. AdamW is
    fused except under a mixed precision with gradient clipping (the default clip of 1.0),
    which Lightning refuses with fused optimisers; there CUDA's multi-tensor AdamW runs. ``run.json`` records ``config.resolved()``: the settings with
    every automatic choice made.
    """
    config = PretrainConfig.from_settings(config, **settings)
    with _verbose_level(verbose):
        return _pretrain(store, out, config, model=model, resume=resume, overwrite=overwrite,
                         datamodule=datamodule, callbacks=callbacks, progress=progress)


def _changed_settings(before: dict, now: dict) -> dict[str, tuple]:
    """Settings whose value differs between a recorded run.json and this call (JSON values)."""
    now = json.loads(json.dumps(now))  # tuples -> lists, as run.json holds them
    return {k: (before[k], v) for k, v in now.items() if k in before and before[k] != v}


def _last_checkpoint(path: Path, every: int, keep: int = 1, minutes: float | None = None,
                     clock=None):
    """A callback that owns ``last.ckpt``: written every ``every`` steps and after the final one.

    With ``minutes``, also at the first step at least that long (``clock()`` seconds, default
    :func:`time.monotonic`) after the previous write or the start of training. The ranks'
    clocks differ, so global rank 0 decides and broadcasts (every rank must write together).

    Every write happens right after an optimiser step, so the checkpoint holds the loops'
    state of an ordinary mid-run checkpoint, which Lightning resumes exactly: the next run
    continues the same epoch with the batches not drawn yet. (Lightning's own
    ``ModelCheckpoint(save_last=True)`` also writes ``last.ckpt`` when training ends, and a
    checkpoint written then records the interrupted epoch as finished: a run extended from
    it would skip the rest of that epoch.) Each write goes to a temporary name first and is
    renamed when complete; the previous ``last.ckpt`` becomes ``previous-step=N.ckpt`` and
    ``keep`` checkpoints are kept in all. ``saved`` tells whether the final step was written.
    """
    import time

    import lightning.pytorch as pl

    clock = time.monotonic if clock is None else clock
    if minutes is not None and not minutes > 0:
        raise ValueError(
            f"Invalid value for 'checkpoint_minutes': expected a positive number; got {minutes!r}."
        )

    class _LastCheckpoint(pl.Callback):
        saved = False
        _step = None  # global step at the previous batch end
        _time = None  # clock at the previous write (or the start)
        last_step = None  # global step of the current last.ckpt

        def on_train_start(self, trainer, pl_module):
            self._step = trainer.global_step
            self._time = clock()
            # a resumed run starts at the step of the checkpoint it resumed from
            self.last_step = trainer.global_step

        def _time_is_up(self, trainer) -> bool:
            if minutes is None:
                return False
            due = clock() - self._time >= 60.0 * minutes
            return bool(trainer.strategy.broadcast(due, src=0))

        def save(self, trainer):
            step = trainer.global_step
            last_step = self.last_step if self.last_step != step else None
            _save_atomically(trainer, path, last_step=last_step, keep=keep)
            self.last_step = step

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step == self._step:  # no optimiser step in this batch (gradient accumulation)
                return
            self._step = step
            final = trainer.max_steps > 0 and step >= trainer.max_steps
            if final and self.saved:
                return
            # every rank takes part in the broadcast, even on a step already due
            timed = self._time_is_up(trainer)
            if final or step % every == 0 or timed:
                self.save(trainer)
                self.saved = final
                self._time = clock()

    return _LastCheckpoint()


def _save_atomically(trainer, path: Path, *, last_step: int | None = None, keep: int = 1) -> None:
    """``trainer.save_checkpoint`` to a temporary name, renamed to ``path`` when complete.

    The ``path`` it replaces (at step ``last_step``) is kept as ``previous-step=N.ckpt``
    when ``keep > 1``; see :func:`megfm.training._checkpoints.rotate`.
    """
    tmp = path.with_name(path.name + ".partial")
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        _checkpoints.rotate(path.parent, last_step=last_step, keep=keep)
        os.replace(tmp, path)
    trainer.strategy.barrier("megfm-last-checkpoint")


def _validate_at_end():
    """A callback that validates the final state of every run.

    Lightning validates at the end of each training epoch; a run whose ``max_steps`` ends
    inside an epoch (e.g. shorter than one epoch) would otherwise never validate, and the
    ``best-*`` checkpoint would find no ``val/loss`` (or a stale one) to rank the final state.
    Requesting a stop at the last optimiser step makes Lightning run the validation loop
    right after that step (once: it coincides with the epoch-end validation when both fall
    on the same batch).
    """
    import lightning.pytorch as pl

    class _ValidateAtEnd(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
                trainer.should_stop = True

    return _ValidateAtEnd()


def _pretrain(store, out, config: PretrainConfig, *, model, resume, overwrite, datamodule,
              callbacks, progress) -> Path:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ._hardware import device_type
    from .module import PretrainModule, config_from_dict, config_to_dict

    store = None if store is None or is_remote(store) else Path(store)
    out = Path(out)
    if store is None and datamodule is None:
        raise ValueError("Give a store folder (or a datamodule) to pretrain on.")
    manifest = _read_manifest(store) if datamodule is None else {}
    cfg = config.resolved()
    ckpt_dir = out / "checkpoints"
    callbacks = list(callbacks or [])
    save_last = _last_checkpoint(ckpt_dir / _checkpoints.LAST, cfg.checkpoint_every,
                                 cfg.keep_checkpoints, cfg.checkpoint_minutes)
    callbacks.append(save_last)
    if cfg.val_fraction > 0:
        callbacks.append(_validate_at_end())
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best-{step}",
                                         monitor="val/loss", mode="min", save_top_k=1))
    if device_type(cfg.accelerator) == "cuda":
        import torch

        torch.set_float32_matmul_precision("high")
    loggers = [CSVLogger(save_dir=out, name="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=out, name="tensorboard"))

    trainer = pl.Trainer(
        max_steps=cfg.max_steps,
        devices=list(cfg.devices) if isinstance(cfg.devices, tuple) else cfg.devices,
        num_nodes=cfg.num_nodes, accelerator=cfg.accelerator, strategy=cfg.strategy,
        precision=cfg.precision, accumulate_grad_batches=cfg.accumulate,
        gradient_clip_val=cfg.gradient_clip_val, callbacks=callbacks, logger=loggers,
        log_every_n_steps=cfg.log_every_n_steps, enable_progress_bar=progress,
        enable_model_summary=progress, num_sanity_val_steps=0, default_root_dir=out,
        limit_val_batches=1.0 if cfg.val_fraction > 0 else 0,
    )
    # Only global rank 0 checks (and, with overwrite, clears) the output folder: the other
    # ranks of a DDP run start later (or simultaneously) and must not refuse its files.
    if trainer.is_global_zero:
        ckpt_path = _prepare_out(out, resume=resume, overwrite=overwrite)
    else:  # the same choice as rank 0, which renames damaged checkpoints
        ckpt_path = (_checkpoints.select_checkpoint(ckpt_dir, rename_corrupt=False)
                     if resume else None)

    recorded, changed = None, {}
    if ckpt_path is not None and (out / _RUN_FILE).is_file():
        # only the model is taken from run.json: the settings are the caller's, and any that
        # differ from the recorded ones are named (a resume may extend max_steps on purpose,
        # but a forgotten option, e.g. --balance-states, changes the run silently otherwise)
        recorded = _read_run_json(out)
        model_config = config_from_dict(recorded["model_config"])
        logger.info("Resuming %s with the model configuration recorded in run.json.", out)
        changed = _changed_settings(recorded.get("settings", {}), cfg.to_dict())
        for name, (before, now) in changed.items():
            logger.warning("Resuming %s with %s=%r; the run recorded %r.", out, name, now, before)
    else:
        model_config = _adapt_config(_resolve_config(model), manifest)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if datamodule is None:
        from .datamodule import MEGDataModule

        datamodule = MEGDataModule(
            store, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
            pin_memory=cfg.pin_memory, prefetch_factor=cfg.prefetch_factor,
            states=cfg.states, subjects=cfg.subjects, balance_states=cfg.balance_states,
            val_fraction=cfg.val_fraction, seed=cfg.seed)

    module = PretrainModule(model_config, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                            mask_mode=cfg.mask_mode, mask_ratio=cfg.mask_ratio, seed=cfg.seed,
                            compile=cfg.compile)
    if trainer.is_global_zero and (ckpt_path is None or recorded is not None):
        out.mkdir(parents=True, exist_ok=True)
        run = {
            "megfm_version": __version__, "store": None if store is None else str(resolve_source(store)),
            "model_config": config_to_dict(model_config), "settings": cfg.to_dict(),
            "world_size": trainer.world_size,
        }
        if recorded is not None:  # run.json holds the settings the run continues with
            run["resumes"] = [*recorded.get("resumes", []), {
                "from_checkpoint": Path(ckpt_path).name,
                "changed": {k: {"before": a, "now": b} for k, (a, b) in changed.items()},
            }]
        _write_json(out / _RUN_FILE, run)
    logger.info("Pretraining %s for %d steps -> %s", type(module.model).__name__,
                cfg.max_steps, out)
    # a resumed run continues in its own checkpoint folder, which Lightning calls "not empty"
    resuming = () if ckpt_path is None else (".*Checkpoint directory .* exists and is not empty.*",)
    with quiet_lightning(*resuming), naming_windows(store):
        trainer.fit(module, datamodule=datamodule,
                    ckpt_path=None if ckpt_path is None else str(ckpt_path), weights_only=True)
    if not save_last.saved:  # stopped before max_steps: keep the last state all the same
        save_last.save(trainer)
    model_dir = out / "model"
    if trainer.is_global_zero:
        module.model.save_pretrained(model_dir)
        logger.info("Pretrained model saved to %s", model_dir)
    trainer.strategy.barrier("megfm-pretrain-export")
    return model_dir


def _read_run_json(out: Path) -> dict:
    """The raw contents of ``out/run.json``, checked for its two sections."""
    path = out / _RUN_FILE
    try:
        with open(path, encoding="utf-8") as fid:
            run = json.load(fid)
        if not isinstance(run.get("settings"), dict) or not isinstance(run["model_config"], dict):
            raise TypeError("'settings' and 'model_config' must be objects")
    except FileNotFoundError:
        raise FileNotFoundError(f"{out} holds no pretraining run ({path} does not "
                                "exist).") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError,
            TypeError) as exc:
        raise ValueError(f"{path} is not the run.json of a megfm pretraining run "
                         f"({type(exc).__name__}: {exc}).") from exc
    return run


def read_run(out: str | os.PathLike) -> dict:
    """Read the ``run.json`` of a run folder, with its settings as a :class:`PretrainConfig`.

    Parameters
    ----------
    out : path-like
        Run folder of :func:`pretrain` (also one written by an older megfm: settings it did
        not have take their defaults, ``world_size`` moved out of its settings).

    Returns
    -------
    run : dict
        ``megfm_version``, ``store``, ``model_config`` (dict), ``settings``
        (:class:`PretrainConfig`, with the automatic choices made) and ``world_size``
        (``None`` when not recorded).
    """
    out = Path(out)
    run = _read_run_json(out)
    settings = dict(run["settings"])
    try:
        config = PretrainConfig.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The settings in {out / _RUN_FILE} are not settings of this megfm "
                         f"({__version__}): {exc}") from exc
    return {"megfm_version": run.get("megfm_version"), "store": run.get("store"),
            "model_config": run["model_config"], "settings": config,
            "world_size": run.get("world_size", settings.get("world_size"))}


def load_metrics(out: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the CSV logs of a run, joining the pieces written before and after resumes.

    Parameters
    ----------
    out : path-like
        Run folder of :func:`pretrain`.

    Returns
    -------
    metrics : dict of str to array
        One column per logged quantity plus ``"step"``, sorted by step; missing values are
        NaN. When a run was resumed, rows of an earlier piece at or after the step where the
        next piece starts are dropped (they were redone after the resume).
    """
    log_root = Path(out) / "logs"
    versions = sorted(log_root.glob("version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[1]))
    if not versions:
        raise FileNotFoundError(f"No metrics.csv under {log_root}; has the run logged anything?")
    rows: list[dict] = []
    for path in versions:
        with open(path, newline="", encoding="utf-8") as fid:
            new = [r for r in csv.DictReader(fid)]
        if not new:
            continue
        first = min(int(r["step"]) for r in new)
        rows = [r for r in rows if int(r["step"]) < first] + new
    keys = sorted({k for r in rows for k in r})
    metrics = {}
    for key in keys:
        metrics[key] = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan
                                 for r in rows], dtype=np.float64)
    order = np.argsort(metrics["step"], kind="stable")
    return {k: v[order] for k, v in metrics.items()}
