"""`PretrainModule`: the Lightning wrapper that pretrains a :class:`MaskedSignalModel`.

The model itself is a plain ``nn.Module`` (:mod:`megfm.models`); this module only adds the
training loop pieces: optimiser, learning-rate schedule, logging, seeded masks and the
non-finite loss guard. Everything saved in a Lightning checkpoint is a plain Python type or a
tensor, so ``last.ckpt`` loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch

from ..data.batch import Batch
from ..data.dataset import BadWindowsError, batch_indices, check_batch
from .config import default_warmup_steps

__all__ = ["BadWindowsError", "PretrainModule", "config_from_dict", "config_to_dict",
           "cosine_with_warmup"]

logger = logging.getLogger(__name__)

_STAGES = ("train", "val")


def config_to_dict(config: Any) -> dict:
    """Return a model config (a :class:`megfm.ModelConfig` or its dict) as a plain dict."""
    from ..models import ModelConfig

    if isinstance(config, dict):
        return dict(config)
    if isinstance(config, ModelConfig):
        return config.to_dict()
    raise TypeError(
        f"Invalid model config: expected a megfm.ModelConfig or a dict; got {type(config).__name__}."
    )


def config_from_dict(d: dict) -> Any:
    """Rebuild a :class:`megfm.ModelConfig` from :func:`config_to_dict` output."""
    from ..models import ModelConfig

    return ModelConfig.from_dict(dict(d))


def cosine_with_warmup(step: int, *, warmup_steps: int, max_steps: int,
                       min_lr_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_lr_ratio``.

    Parameters
    ----------
    step : int
        Optimiser step (0-based).
    warmup_steps : int
        Steps of linear warm-up from ``1 / warmup_steps`` to 1.
    max_steps : int
        Step at which the cosine reaches ``min_lr_ratio``; constant afterwards.
    min_lr_ratio : float
        Final multiplier.

    Returns
    -------
    factor : float
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PretrainModule(pl.LightningModule):
    """Masked-signal-reconstruction pretraining of a :class:`megfm.MaskedSignalModel`.

    Parameters
    ----------
    model_config : ModelConfig | dict
        Configuration of the model to train (stored as a plain dict in the hyper-parameters).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW weight decay (not applied to biases, norms and 1-d parameters).
    betas : tuple of float
        AdamW betas.
    warmup_steps : int | None
        Linear warm-up steps; ``None`` uses 5 % of ``max_steps`` (at least 1).
    max_steps : int
        Length of the cosine schedule (the trainer's ``max_steps``).
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr``.
    mask_mode : str | None
        Masking mode passed to the model (``"random"``, ``"sensor"``, ``"time"``, ...);
        ``None`` uses the model config's default.
    mask_ratio : float | None
        Fraction of sensor-patches hidden; ``None`` uses the model config's default.
    seed : int
        Seed of the masks and of the random number generators at each step: the masks of
        step ``k`` depend only on ``(seed, k, rank)``, so a resumed run draws the same masks
        as an uninterrupted one.
    compile : bool
        Compile the model whole on its static-shape path with ``torch.compile``
        (:func:`megfm.training._hardware.compile_model`); the weights and checkpoints are
        the same as without it. Not saved in the hyper-parameters: a run choice, not part
        of the model.

    Notes
    -----
    Gradient clipping is configured on the :class:`lightning.pytorch.Trainer`
    (``gradient_clip_val``), as Lightning recommends.
    """

    def __init__(
        self,
        model_config: Any = "tiny",
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int | None = None,
        max_steps: int = 1000,
        min_lr_ratio: float = 0.1,
        mask_mode: str | None = None,
        mask_ratio: float | None = None,
        seed: int = 0,
        compile: bool = False,  # noqa: A002  (torch's name for it)
    ) -> None:
        super().__init__()
        from ..models import MaskedSignalModel, ModelConfig

        if isinstance(model_config, str):
            model_config = ModelConfig.preset(model_config)
        config_dict = config_to_dict(model_config)
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"Invalid value for 'lr': expected a positive number; got {lr!r}.")
        if max_steps < 1:
            raise ValueError(f"Invalid value for 'max_steps': expected >= 1; got {max_steps!r}.")
        if mask_ratio is not None and not 0.0 < mask_ratio < 1.0:
            raise ValueError(
                f"Invalid value for 'mask_ratio': expected a number in (0, 1); got {mask_ratio!r}."
            )
        if warmup_steps is None:
            warmup_steps = default_warmup_steps(max_steps)
        # Plain types only: the checkpoint must load with weights_only=True.
        self.save_hyperparameters({
            "model_config": config_dict, "lr": float(lr), "weight_decay": float(weight_decay),
            "betas": [float(b) for b in betas], "warmup_steps": int(warmup_steps),
            "max_steps": int(max_steps), "min_lr_ratio": float(min_lr_ratio),
            "mask_mode": mask_mode, "mask_ratio": None if mask_ratio is None else float(mask_ratio),
            "seed": int(seed),
        })
        self.model = MaskedSignalModel(config_from_dict(config_dict))
        if compile:
            from ._hardware import compile_model

            compile_model(self.model)

    # ------------------------------------------------------------------ steps
    def _step_seed(self, stage: str, batch_idx: int) -> int:
        """Seed of the masks of one step (train: global step; val: batch index)."""
        step = self.global_step if stage == "train" else batch_idx
        offset = _STAGES.index(stage)
        return (self.hparams.seed * 1_000_003 + step * 7919 + offset * 104_729
                + self.global_rank * 15_485_863) % (2**63 - 1)

    def forward(self, batch: Batch, *, generator: torch.Generator | None = None,
                checked: bool = False) -> dict:
        """Run the model on a :class:`~megfm.data.batch.Batch`.

        ``checked=True``: the batch passed :func:`megfm.data.check_batch` (the training and
        validation steps check every batch first), so the model skips its own value checks.
        """
        n_patches, rest = divmod(batch.x.shape[-1], self.model.config.patch_samples)
        if rest or not n_patches:  # refused by the model with its own message
            return self.model(**batch.inputs(), checked=checked)
        # the mask is drawn here, as the model would draw it, so that a compiled forward
        # holds no generator call (a graph break)
        mask = self.model.random_masking(
            batch.sensor_mask.to(torch.bool), n_patches, mode=self.hparams.mask_mode,
            ratio=self.hparams.mask_ratio, generator=generator)
        return self.model(**batch.inputs(), mask=mask, checked=checked)

    def _stop_if_non_finite(self, loss: torch.Tensor, batch: Batch, batch_idx: int,
                            stage: str) -> None:
        """Raise on every rank together when any rank's loss is not finite.

        One all-reduce of the flag per call (none without a process group): a rank raising
        alone would leave the others waiting in the gradient all-reduce until the timeout.
        """
        from ._distributed import any_rank

        bad = ~torch.isfinite(loss.detach()).all()
        if not any_rank(bad):
            return
        index = batch_indices(batch)
        local = (f"non-finite loss in window indices {index}", index) if bool(bad) else None
        self._raise_on_every_rank(
            local, f"Non-finite loss in {stage} at global step {self.global_step} (batch "
            f"{batch_idx}). Check these windows of the store for NaN/Inf or extreme values, "
            "or lower the learning rate / enable gradient clipping.")

    def _stop_if_bad_windows(self, batch: Batch, stage: str) -> None:
        """Refuse unusable windows (no valid sensor, NaN/Inf) before the model runs, on every
        rank together, naming them by store index."""
        from ._distributed import any_rank

        local = None
        try:
            check_batch(batch, f"{stage}, global step {self.global_step}")
        except BadWindowsError as exc:
            local = (str(exc), exc.indices)
        if any_rank(local is not None, device=batch.x.device):
            self._raise_on_every_rank(local, "")

    def _raise_on_every_rank(self, local: tuple[str, list[int]] | None, headline: str) -> None:
        """Every rank is here at the same step: gather what each one saw and raise the same
        :class:`BadWindowsError` (its indices let ``naming_windows`` add shards and
        recordings)."""
        from ._distributed import gather_objects, world_size

        reports = [r for r in gather_objects((self.global_rank, local)) if r[1] is not None]
        indices = [i for _, (_, idx) in reports for i in idx]
        if world_size() == 1:
            what = reports[0][1][0]
            message = f"{headline} ({what})." if headline else what
        else:
            what = "; ".join(f"rank {rank}: {found}" for rank, (found, _) in reports)
            message = f"{headline} ({what}; every rank stops here)." if headline else \
                f"{what} (every rank stops here)."
        raise BadWindowsError(message, indices)

    def _shared_step(self, batch: Batch, stage: str, batch_idx: int = 0) -> torch.Tensor:
        """Masked reconstruction loss of one batch, logged as ``f"{stage}/loss"``."""
        if not isinstance(batch, Batch):
            raise TypeError(
                f"PretrainModule takes megfm.data.Batch batches; got {type(batch).__name__}. "
                "Build the DataLoader with collate_fn=megfm.data.collate_windows.")
        seed = self._step_seed(stage, batch_idx)
        if stage == "train":
            # Dropout and any other randomness of the step depend on (seed, step, rank) only.
            torch.manual_seed(seed)
        # both checks are agreed on by every rank: one raising alone would hang the others
        self._stop_if_bad_windows(batch, stage)
        generator = torch.Generator(device=batch.x.device)
        generator.manual_seed(seed)
        out = self(batch, generator=generator, checked=True)  # checked just above
        loss = out["loss"]
        self._stop_if_non_finite(loss, batch, batch_idx, stage)
        batch_size = len(batch)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch_size,
                 on_step=stage == "train", on_epoch=True, sync_dist=stage != "train")
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:  # noqa: D102
        loss = self._shared_step(batch, "train", batch_idx)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"],
                 on_step=True, on_epoch=False, batch_size=len(batch))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:  # noqa: D102
        return self._shared_step(batch, "val", batch_idx)

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> dict:
        """AdamW (no decay on 1-d parameters) with linear warm-up + cosine decay per step.

        The fused AdamW kernel is used when the parameters are on the CPU or CUDA (Lightning
        moves the model to its device before this is called), except under a mixed precision
        with gradient clipping (see :func:`megfm.training._hardware.adamw_kwargs`).
        """
        decay, no_decay = [], []
        for _, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim <= 1 else decay).append(param)
        from ._hardware import adamw_kwargs

        hp = self.hparams
        trainer = self._trainer  # None outside a Trainer
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=tuple(hp.betas),
            **adamw_kwargs(decay + no_decay,
                           precision=trainer.precision if trainer else "32-true",
                           gradient_clip_val=trainer.gradient_clip_val if trainer else None),
        )
        warmup, max_steps, floor = hp.warmup_steps, hp.max_steps, hp.min_lr_ratio

        def schedule(step: int) -> float:
            return cosine_with_warmup(step, warmup_steps=warmup, max_steps=max_steps,
                                      min_lr_ratio=floor)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
