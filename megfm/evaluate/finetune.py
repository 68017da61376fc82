"""Fine-tuning a pretrained megfm encoder for classification (migraine vs controls, ...).

:func:`finetune` trains a classification head on ``forward_head`` of the encoder, end to end
with layer-wise learning-rate decay, or with a frozen encoder (``freeze_encoder``) or as a
linear probe (``linear_probe``). It splits by subject only. :func:`make_finetune_method`
wraps it for the study runner: a callable ``(train_idx, test_idx) -> test window scores``
over store window indices, so fine-tuning sits in the same folds as frozen-feature
classifiers.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from .._quiet import quiet_lightning
from ..data.batch import Batch
from ..data.windows import Windows
from ..embedding import iter_batches, load_model, store_metadata
from .classification import parse_task  # one definition of a task's classes

__all__ = ["FinetuneModule", "FinetunedClassifier", "finetune", "layer_ids",
           "make_finetune_method", "parse_task"]

logger = logging.getLogger(__name__)

def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each encoder parameter for layer-wise learning-rate decay.

    The model declares them (:meth:`megfm.MaskedSignalModel.layer_id`): 0 below the first
    block, ``1 + i`` in block ``i``, ``n_blocks + 1`` for the final norm and the head;
    decoder parameters are left out (fine-tuning does not use the decoder).

    Returns
    -------
    ids : dict of str to int
        Depth per parameter name.
    n_layers : int
        ``n_blocks + 1``, the depth of the top.
    """
    ids = {name: depth for name, _ in model.named_parameters()
           if (depth := model.layer_id(name)) is not None}
    return ids, max(ids.values())


class FinetuneModule(pl.LightningModule):
    """Encoder + classification head, trained with cross-entropy.

    Parameters
    ----------
    encoder : MaskedSignalModel
        Pretrained model (only ``forward_features`` / ``forward_head`` are used).
    n_classes : int
        Number of classes.
    lr : float
        Learning rate of the head (the top encoder layer gets ``lr * layer_decay``).
    layer_decay : float
        Learning rate of encoder depth ``d`` is ``lr * layer_decay ** (n_layers + 1 - d)``.
    weight_decay : float
        AdamW weight decay.
    freeze_encoder : bool
        Train the head only (a two-layer MLP head).
    linear_probe : bool
        Frozen encoder and a linear head.
    class_weights : list of float | None
        Cross-entropy class weights (inverse class frequencies by default in :func:`finetune`).
    max_steps, warmup_steps : int
        Cosine schedule with linear warm-up.
    """

    def __init__(self, encoder: nn.Module, n_classes: int = 2, *, lr: float = 1e-3,
                 layer_decay: float = 0.75, weight_decay: float = 0.01,
                 freeze_encoder: bool = False, linear_probe: bool = False,
                 class_weights: list[float] | None = None, max_steps: int = 200,
                 warmup_steps: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.frozen = bool(freeze_encoder or linear_probe)
        with torch.no_grad():
            dim = self._probe_dim()
        if linear_probe:
            self.head = nn.Linear(dim, n_classes)
        else:
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(),
                                      nn.Linear(dim, n_classes))
        if self.frozen:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def _probe_dim(self) -> int:
        cfg = getattr(self.encoder, "config", None)
        for name in ("dim", "embed_dim", "d_model", "hidden_dim"):
            if isinstance(getattr(cfg, name, None), int):
                return int(getattr(cfg, name))
        raise ValueError("Cannot tell the feature width of the model (config.dim missing).")

    def forward(self, batch: Batch) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` of a :class:`~megfm.data.batch.Batch`."""
        if self.frozen:
            self.encoder.eval()
            with torch.no_grad():
                pooled = self._pooled(batch)
        else:
            pooled = self._pooled(batch)
        return self.head(pooled)

    def _pooled(self, batch: Batch) -> torch.Tensor:
        feats = self.encoder.forward_features(**batch.inputs())
        return self.encoder.forward_head(feats, pre_logits=True)

    def _shared_step(self, labelled: tuple[Batch, torch.Tensor], stage: str) -> torch.Tensor:
        batch, y = labelled
        logits = self(batch)
        loss = nn.functional.cross_entropy(logits, y, weight=self.class_weights)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"Non-finite fine-tuning loss at global step {self.global_step} (window indices "
                f"{batch.index.tolist()}); lower the learning rate or check the data."
            )
        acc = (logits.argmax(-1) == y).float().mean()
        bs = len(batch)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, on_epoch=True,
                 on_step=stage == "train")
        self.log(f"{stage}/acc", acc, batch_size=bs, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: tuple[Batch, torch.Tensor],  # noqa: D102
                      batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Batch, torch.Tensor],  # noqa: D102
                        batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> dict:
        """AdamW with layer-wise learning-rate decay and a warm-up + cosine schedule."""
        hp = self.hparams
        groups = [{"params": [p for p in self.head.parameters()], "lr": hp.lr}]
        if not self.frozen:
            ids, n_layers = layer_ids(self.encoder)
            by_depth: dict[int, list] = {}
            named = dict(self.encoder.named_parameters())
            for name, depth in ids.items():
                if named[name].requires_grad:
                    by_depth.setdefault(depth, []).append(named[name])
            for depth, params in sorted(by_depth.items()):
                groups.append({"params": params,
                               "lr": hp.lr * hp.layer_decay ** (n_layers + 1 - depth)})
        for g in groups:
            g["initial_lr"] = g["lr"]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        warm, total = max(1, hp.warmup_steps), max(2, hp.max_steps)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _LabelledWindows(torch.utils.data.IterableDataset):
    """``(batch, y)`` pairs of labelled windows, reshuffled each pass with a seeded generator."""

    def __init__(self, data, indices: np.ndarray, y: np.ndarray, batch_size: int,
                 shuffle: bool, seed: int) -> None:
        super().__init__()
        self.data, self.indices, self.y = data, indices, y
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def __iter__(self):
        order = np.arange(len(self.indices))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
            self.epoch += 1
        lookup = dict(zip(self.indices.tolist(), self.y.tolist(), strict=True))
        batches = iter_batches(self.data, batch_size=self.batch_size, indices=self.indices[order])
        next(batches)
        for batch in batches:
            yield batch, torch.as_tensor([lookup[int(i)] for i in batch.index], dtype=torch.int64)


class FinetunedClassifier:
    """A fine-tuned encoder + head; predicts class probabilities of windows and subjects.

    Attributes
    ----------
    classes_ : list of str
        Label of each class (binary tasks: negative first, positive second).
    module : FinetuneModule
        The trained Lightning module.
    task : str
        The task it was trained on.
    """

    def __init__(self, module: FinetuneModule, classes: list[str], task: str, data) -> None:
        self.module = module.eval()
        self.classes_ = list(classes)
        self.task = task
        self._data = data

    def predict_proba(self, windows_or_store=None, *, indices=None, batch_size: int = 64,
                      device: str | None = None) -> np.ndarray:
        """Class probabilities of windows.

        Parameters
        ----------
        windows_or_store : Windows | path-like | None
            Data (default: the store it was trained on).
        indices : array of int | None
            Global window indices (default all).

        Returns
        -------
        proba : array, shape (n_windows, n_classes)
        """
        data = self._data if windows_or_store is None else windows_or_store
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        module = self.module.to(device).eval()
        batches = iter_batches(data, batch_size=batch_size, indices=indices)
        next(batches)
        out = []
        with torch.inference_mode():
            for batch in batches:
                out.append(torch.softmax(module(batch.to(device)).float(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), np.float32)

    def predict_proba_subjects(self, windows_or_store=None, *, indices=None,
                               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities per subject: the mean over the subject's windows.

        Returns
        -------
        subjects : array of str, shape (n_subjects,)
        proba : array, shape (n_subjects, n_classes)
        """
        data = self._data if windows_or_store is None else windows_or_store
        proba = self.predict_proba(data, indices=indices, batch_size=batch_size)
        subjects = _metadata(data)["subject"]
        if indices is not None:
            subjects = subjects[np.asarray(indices)]
        names = np.array(sorted(set(subjects.tolist())), dtype=str)
        return names, np.stack([proba[subjects == s].mean(0) for s in names])


def _metadata(data) -> dict[str, np.ndarray]:
    if isinstance(data, Windows):
        return data.metadata
    if isinstance(data, (str, os.PathLike)):
        return store_metadata(data)
    raise TypeError(f"Expected a megfm.Windows or a store folder; got {type(data).__name__}.")


def _fit(checkpoint: Any, data, train_idx: np.ndarray, val_idx: np.ndarray | None, *,
         task: str, linear_probe: bool, freeze_encoder: bool, layer_decay: float,
         max_steps: int, lr: float, batch_size: int, weight_decay: float, seed: int,
         accelerator: str, precision: str, progress: bool) -> FinetunedClassifier:
    meta = _metadata(data)
    labels = meta["label"].astype(str)
    classes = parse_task(task, labels[train_idx])
    keep = np.isin(labels[train_idx], classes)
    train_idx = train_idx[keep]
    y_of = {c: k for k, c in enumerate(classes)}
    y_train = np.array([y_of[lab] for lab in labels[train_idx]], dtype=np.int64)
    counts = np.bincount(y_train, minlength=len(classes))
    if (counts == 0).any():
        raise ValueError(
            f"The training subjects have no windows of class(es) "
            f"{[c for c, n in zip(classes, counts, strict=True) if n == 0]}; each class needs training data."
        )
    pl.seed_everything(seed, workers=True, verbose=False)
    encoder = load_model(checkpoint)
    # never modify the caller's model; train mode, as a loaded checkpoint comes in eval mode
    # and Lightning keeps the mode it is given (dropout would stay off)
    encoder = copy.deepcopy(encoder).train()
    weights = (counts.sum() / (len(classes) * counts)).tolist()
    module = FinetuneModule(encoder, len(classes), lr=lr, layer_decay=layer_decay,
                            weight_decay=weight_decay, freeze_encoder=freeze_encoder,
                            linear_probe=linear_probe, class_weights=weights,
                            max_steps=max_steps, warmup_steps=max(1, max_steps // 10))
    train = _LabelledWindows(data, train_idx, y_train, batch_size, True, seed)
    loaders = {"train_dataloaders": torch.utils.data.DataLoader(train, batch_size=None)}
    if val_idx is not None and len(val_idx):
        val_idx = val_idx[np.isin(labels[val_idx], classes)]
        y_val = np.array([y_of[lab] for lab in labels[val_idx]], dtype=np.int64)
        val = _LabelledWindows(data, val_idx, y_val, batch_size, False, seed)
        loaders["val_dataloaders"] = torch.utils.data.DataLoader(val, batch_size=None)
    trainer = pl.Trainer(max_steps=max_steps, accelerator=accelerator, devices=1,
                         precision=precision, logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False,
                         num_sanity_val_steps=0, gradient_clip_val=1.0,
                         limit_val_batches=1.0 if "val_dataloaders" in loaders else 0)
    # without validation windows there is deliberately no val loader
    with quiet_lightning(".*no `val_dataloader`.*"):
        trainer.fit(module, **loaders)
    return FinetunedClassifier(module, classes, task, data)


def finetune(
    checkpoint: Any,
    store,
    *,
    task: str = "migraine-vs-HC",
    train_subjects: Sequence[str],
    val_subjects: Sequence[str] | None = None,
    linear_probe: bool = False,
    freeze_encoder: bool = False,
    layer_decay: float = 0.75,
    max_steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 32,
    weight_decay: float = 0.01,
    seed: int = 0,
    accelerator: str = "auto",
    precision: str = "32-true",
    progress: bool = False,
) -> FinetunedClassifier:
    """Fine-tune a pretrained encoder with a classification head, split by subject.

    Parameters
    ----------
    checkpoint : path-like | MaskedSignalModel
        Pretrained model or its folder.
    store : path-like | Windows
        Labelled windows (store folder, streamed; or in-memory Windows).
    task : str
        ``"A-vs-B"`` (e.g. ``"migraine-vs-HC"``, windows of other groups are ignored) or
        ``"multiclass"``.
    train_subjects, val_subjects : sequence of str
        Subjects to train on and to monitor (``val/loss``, ``val/acc``); disjoint.
    linear_probe : bool
        Frozen encoder, linear head.
    freeze_encoder : bool
        Frozen encoder, MLP head.
    layer_decay : float
        Layer-wise learning-rate decay of the encoder (1 = none).
    max_steps : int
        Optimiser steps.
    lr, batch_size, weight_decay : float, int, float
        Optimiser settings (``lr`` is the head's).
    seed : int
        Seed of the head initialisation and the batch order.
    accelerator, precision : str
        Lightning trainer settings.
    progress : bool
        Show a progress bar.

    Returns
    -------
    classifier : FinetunedClassifier
        ``predict_proba`` over windows, ``predict_proba_subjects`` over subjects.
    """
    meta = _metadata(store)
    subjects = meta["subject"].astype(str)
    train_subjects = [str(s) for s in train_subjects]
    val_subjects = [] if val_subjects is None else [str(s) for s in val_subjects]
    overlap = sorted(set(train_subjects) & set(val_subjects))
    if overlap:
        raise ValueError(f"Subjects {overlap} are in both train_subjects and val_subjects.")
    unknown = sorted(set(train_subjects + val_subjects) - set(subjects.tolist()))
    if unknown:
        raise ValueError(f"Subjects {unknown} have no windows in the store.")
    if not train_subjects:
        raise ValueError("train_subjects is empty.")
    train_idx = np.flatnonzero(np.isin(subjects, train_subjects))
    val_idx = np.flatnonzero(np.isin(subjects, val_subjects)) if val_subjects else None
    _check_settings(layer_decay, max_steps)
    return _fit(checkpoint, store, train_idx, val_idx, task=task, linear_probe=linear_probe,
                freeze_encoder=freeze_encoder, layer_decay=layer_decay, max_steps=max_steps,
                lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                accelerator=accelerator, precision=precision, progress=progress)


def _check_settings(layer_decay: float, max_steps: int) -> None:
    if not 0 < layer_decay <= 1:
        raise ValueError(f"Invalid value for 'layer_decay': expected a number in (0, 1]; got {layer_decay!r}.")
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"Invalid value for 'max_steps': expected an integer >= 1; got {max_steps!r}.")


def make_finetune_method(checkpoint: Any, store, **kwargs) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Fine-tuning as a method of the subject-level study runner.

    Parameters
    ----------
    checkpoint : path-like | MaskedSignalModel
        Pretrained model or its folder.
    store : path-like | Windows
        The store whose global window indices the folds use.
    **kwargs
        Passed to :func:`finetune` (``task``, ``linear_probe``, ``max_steps``, ``seed``, ...).

    Returns
    -------
    method : callable
        ``method(train_idx, test_idx) -> scores``: fine-tunes on the windows ``train_idx``
        and returns, for the windows ``test_idx`` (in that order), the probability of the
        positive class (binary tasks, shape (n_test,)) or of every class (multiclass, shape
        (n_test, n_classes)). Raises ``ValueError`` when a subject is in both sets.
    """
    kwargs = dict(kwargs)
    task = kwargs.pop("task", "migraine-vs-HC")
    settings = dict(linear_probe=False, freeze_encoder=False, layer_decay=0.75, max_steps=200,
                    lr=1e-3, batch_size=32, weight_decay=0.01, seed=0, accelerator="auto",
                    precision="32-true", progress=False)
    unknown = sorted(set(kwargs) - set(settings))
    if unknown:
        raise TypeError(f"make_finetune_method got unexpected keyword arguments {unknown}.")
    settings.update(kwargs)
    _check_settings(settings["layer_decay"], settings["max_steps"])

    def method(train_idx, test_idx) -> np.ndarray:
        train_idx = np.asarray(train_idx, dtype=np.int64)
        test_idx = np.asarray(test_idx, dtype=np.int64)
        subjects = _metadata(store)["subject"].astype(str)
        leak = sorted(set(subjects[train_idx].tolist()) & set(subjects[test_idx].tolist()))
        if leak:
            raise ValueError(
                f"Subjects {leak} have windows in both the training and the test fold; folds "
                "must split by subject."
            )
        clf = _fit(checkpoint, store, train_idx, None, task=task, **settings)
        proba = clf.predict_proba(store, indices=test_idx)
        return proba[:, 1] if len(clf.classes_) == 2 else proba

    method.__name__ = "finetune_linear_probe" if settings["linear_probe"] else "finetune"
    return method
