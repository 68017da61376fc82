"""`MEGDataModule`: a LightningDataModule over a megfm store, split by subject."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.batch import collate_windows
from ..data.dataset import WindowDataset
from ..data.sampler import ShardRunSampler, check_run_settings
from ..data.store import MAX_OPEN_SHARDS, open_store

__all__ = ["MEGDataModule", "split_subjects"]

logger = logging.getLogger(__name__)


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid value for '{name}': expected a fraction in [0, 1); got {value}.")
    return value


def split_subjects(
    subjects: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[list[str], list[str], list[str]]:
    """Split subjects (never windows) into train / validation / test sets with a seed.

    Subjects are spread proportionally over the labels (stratified) when ``labels`` is
    given: within each label the subjects are shuffled and given evenly spaced ranks, so
    every split draws from every label in proportion.

    Parameters
    ----------
    subjects : list of str
        One entry per subject, or per window (duplicates are merged).
    labels : list of str | None
        Label of each entry of ``subjects`` (the subject's group); None for no stratification.
    val_fraction, test_fraction : float
        Fractions of subjects for validation and test (rounded; at least one subject each
        when the fraction is positive, and at least one subject always left for training).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train, val, test : list of str
        Sorted, disjoint subject lists.
    """
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 to leave training subjects; got "
            f"{val_fraction} + {test_fraction}."
        )
    subjects = np.asarray(subjects, dtype=str)
    if labels is None:
        labels = np.full(subjects.shape, "", dtype=str)
    labels = np.asarray(labels, dtype=str)
    if labels.shape != subjects.shape:
        raise ValueError("'labels' must have one entry per entry of 'subjects'.")
    uniq, first = np.unique(subjects, return_index=True)
    subj_label = labels[first]
    n = uniq.size
    n_val = int(round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = int(round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = max(n_val, 1) if val_fraction > 0 else 0
    n_test = max(n_test, 1) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(
            f"Cannot split {n} subject(s) into train/val/test with val_fraction={val_fraction} "
            f"and test_fraction={test_fraction}: every split needs whole subjects. Add "
            "subjects or lower the fractions."
        )
    rng = np.random.default_rng(seed)
    key = np.empty(n, dtype=np.float64)
    for lab in np.unique(subj_label):
        members = np.flatnonzero(subj_label == lab)
        ranks = rng.permutation(members.size)
        # Evenly spaced positions in [0, 1) per label, jittered: proportional interleaving.
        key[members] = (ranks + rng.uniform(size=members.size)) / members.size
    order = uniq[np.argsort(key, kind="stable")]
    test = sorted(order[:n_test].tolist())
    val = sorted(order[n_test:n_test + n_val].tolist())
    train = sorted(order[n_test + n_val:].tolist())
    return train, val, test


def _fingerprint(dataset) -> str:
    """A short hash of which windows (store index, subject, recording, onset) a dataset holds.

    Two training sets with as many windows but another store or another subject split get
    different fingerprints, so a mid-epoch position is never replayed on other data.
    """
    digest = hashlib.sha1(np.asarray(getattr(dataset, "indices", np.arange(len(dataset))),
                                     dtype=np.int64).tobytes())
    meta = getattr(dataset, "metadata", {})
    for key in ("subject", "recording", "onset"):
        if key in meta:
            digest.update("\x1f".join(map(str, np.asarray(meta[key]).tolist())).encode())
    return digest.hexdigest()[:16]


class _ResumableLoader(DataLoader):
    """Training DataLoader over a :class:`ShardRunSampler` that can resume mid-epoch.

    It counts the windows that all ranks together consumed in the current epoch (this rank's
    batches times the ranks and the batch size: ranks take whole batches of one global order
    in turn); :meth:`state_dict` returns that count with the epoch, and
    :meth:`load_state_dict` makes the next iteration deal the rest of that epoch's order
    over this run's ranks, which may be more or fewer than the saved run's. Lightning saves
    the ``state_dict`` of a training loader that has one in every checkpoint and loads it
    before the resumed run draws its first batch. Lightning fetches batches one at a time
    from a loader with a length (no read-ahead), so the count covers exactly the batches
    that reached the training step. Lightning also restores its own count of the epoch's
    batches and ends the epoch when that count reaches the loader's length, so while a
    resumed epoch is pending the length is that count plus this rank's remaining batches.
    """

    def __init__(self, dataset, *, sampler: ShardRunSampler, **kwargs) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._windows = _fingerprint(dataset)
        self._resume: tuple[int, int] | None = None  # (epoch, consumed) set by load_state_dict
        self._warned: dict | None = None  # the last state warned about
        self._epoch = sampler.epoch  # epoch of the counts below
        self._start = 0  # windows of the epoch consumed before this iteration
        self._prior = 0  # batches of the epoch Lightning counted before this iteration
        self._batches = 0  # batches this rank handed out in this iteration

    def __iter__(self):
        start = 0
        if self._resume is not None:
            epoch, consumed = self._resume
            self._resume = None
            if epoch == self.sampler.epoch:
                start = consumed
            elif consumed:  # Lightning resumed another epoch than the saved position's
                logger.warning(
                    "The checkpoint's loop is in epoch %d but its training loader stopped "
                    "after %d windows of epoch %d: epoch %d starts from its first batch.",
                    self.sampler.epoch, consumed, epoch, self.sampler.epoch)
        # the start belongs to this iteration (this epoch) only
        self.sampler.start = start
        if not start:
            self._prior = 0
        self._epoch, self._start, self._batches = self.sampler.epoch, start, 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def __len__(self) -> int:
        if self._resume is None or self._resume[0] != self.sampler.epoch or not self._resume[1]:
            return super().__len__()
        # every rank gets an equal share of the rest (padded to a multiple of the ranks)
        rest = -(-(len(self.sampler.dataset) - self._resume[1]) // self.sampler.num_replicas)
        return self._prior + (rest // self.batch_size if self.drop_last
                              else -(-rest // self.batch_size))

    def _consumed(self) -> int:
        """Windows of the epoch's order consumed by all ranks together."""
        per_round = self.sampler.num_replicas * self.batch_size
        return min(self._start + self._batches * per_round, len(self.sampler.dataset))

    def _identity(self) -> dict:
        return {"n_windows": len(self.sampler.dataset), "batch_size": self.batch_size,
                "drop_last": self.drop_last, "seed": self.sampler.seed,
                "balanced": self.sampler.weights is not None,
                "run_length": self.sampler.run_length,
                "buffer_shards": self.sampler.buffer_shards, "windows": self._windows}

    def state_dict(self) -> dict:
        """The epoch and its windows already consumed (plus what the order depends on)."""
        return {"epoch": self._epoch, "consumed": self._consumed(),
                "batches": self._prior + self._batches,
                "num_replicas": self.sampler.num_replicas, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the saved epoch after its consumed windows, on any number of ranks."""
        epoch = int(state["epoch"])
        if "consumed" in state:
            consumed = int(state["consumed"])
        else:  # earlier checkpoints counted this rank's batches
            consumed = int(state["batches"]) * int(state["num_replicas"]) * int(state["batch_size"])
        saved = {key: state.get(key) for key in self._identity()}
        if saved != self._identity():
            if state != self._warned:  # Lightning and the data module both hand it over
                logger.warning(
                    "The training data of the checkpoint (%s) differ from this run's (%s): "
                    "epoch %d restarts from its first batch instead of continuing where it "
                    "stopped.", saved, self._identity(), epoch)
                self._warned = dict(state)
            consumed = 0
        rest = len(self.sampler.dataset) - consumed
        if rest <= 0 or (self.drop_last and rest < self.sampler.num_replicas * self.batch_size):
            epoch, consumed = epoch + 1, 0  # the saved epoch was complete: start the next one
        self.sampler.set_epoch(epoch)
        self._resume = (epoch, consumed)
        self._prior = int(state.get("batches", 0)) if consumed else 0
        self._epoch, self._start, self._batches = epoch, consumed, 0


class MEGDataModule(pl.LightningDataModule):
    """Train / validation / test loaders over a store, split by subject with a seed.

    No subject is ever in two splits. Splits are stratified by label (the subject's group),
    so each split holds every group in proportion when there are enough subjects.

    Parameters
    ----------
    store : str | Path
        Store folder (see :func:`megfm.write_store`).
    batch_size : int
        Windows per batch.
    val_fraction, test_fraction : float
        Fractions of subjects held out for validation and test.
    seed : int
        Seed of the subject split, the shuffling and the state-balancing sampler. The
        training order of epoch ``e`` depends only on ``(seed, e)``.
    num_workers : int
        DataLoader workers (each opens its own shard handles; kept alive between epochs).
    states, labels, subjects : str | list of str | None
        Keep only these states / labels / subjects (see :class:`WindowDataset`).
    balance_states : bool
        Draw training windows with replacement, with weights that make every state equally
        likely (one epoch = as many windows as the training set).
    drop_last : bool
        Drop the last incomplete training batch.
    pin_memory : bool
        Pin batches in page-locked memory (faster host-to-GPU copies).
    prefetch_factor : int
        Batches each worker loads in advance (unused without workers).
    dtype : torch.dtype | None
        Dtype of ``x`` in batches; None keeps the store's (a float16 store stays float16 up
        to the model, which upcasts).
    run_length : int
        Training batches are made of runs of this many consecutive windows of one recording
        (shard), drawn at random (see :class:`~megfm.data.sampler.ShardRunSampler`): a run
        costs one read.
    buffer_shards : int | None
        The runs of this many shards at a time are shuffled together (a shuffle buffer of
        recordings), so that a worker keeps them open instead of reopening files (see
        ``max_open`` of :class:`~megfm.data.store.StoreReader`). None: all shards. With
        ``run_length=1, buffer_shards=None`` every window is drawn independently.

    Attributes
    ----------
    train_subjects_, val_subjects_, test_subjects_ : list of str
        Subjects of each split (after :meth:`setup`).
    train_dataset_, val_dataset_, test_dataset_ : WindowDataset
        The datasets of each split (after :meth:`setup`).
    metadata_ : dict of str to array
        Metadata of all selected windows.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        states: str | Sequence[str] | None = None,
        labels: str | Sequence[str] | None = None,
        subjects: str | Sequence[str] | None = None,
        balance_states: bool = False,
        drop_last: bool = False,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        dtype: torch.dtype | None = None,
        run_length: int = 8,
        buffer_shards: int | None = MAX_OPEN_SHARDS,
    ) -> None:
        super().__init__()
        check_run_settings(batch_size, run_length, buffer_shards)
        if int(num_workers) < 0:
            raise ValueError(f"Invalid value for 'num_workers': expected >= 0; got {num_workers}.")
        _check_fraction("val_fraction", val_fraction)
        _check_fraction("test_fraction", test_fraction)
        self.store = store
        self.batch_size = int(batch_size)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.states = states
        self.labels = labels
        self.subjects = subjects
        self.balance_states = bool(balance_states)
        self.drop_last = bool(drop_last)
        self.pin_memory = bool(pin_memory)
        # torch refuses a prefetch_factor without workers
        self.prefetch_factor = int(prefetch_factor) if self.num_workers else None
        self.dtype = dtype
        self.run_length = int(run_length)
        self.buffer_shards = None if buffer_shards is None else int(buffer_shards)
        self._is_setup = False
        self._train_loader: _ResumableLoader | None = None
        self._train_state: dict | None = None  # loader state to resume from

    # ------------------------------------------------------------------ splits
    def setup(self, stage: str | None = None) -> None:
        """Read the store's metadata and split its subjects (idempotent)."""
        if self._is_setup:
            return
        # one reader: the store's metadata is read once and shared by the four datasets
        reader = open_store(self.store)
        full = WindowDataset(reader, states=self.states, labels=self.labels,
                             subjects=self.subjects, dtype=self.dtype)
        if len(full) == 0:
            raise ValueError(f"The store {self.store} holds no windows for this selection.")
        meta = full.metadata
        train, val, test = split_subjects(meta["subject"], meta["label"],
                                          val_fraction=self.val_fraction,
                                          test_fraction=self.test_fraction, seed=self.seed)
        self.train_subjects_, self.val_subjects_, self.test_subjects_ = train, val, test
        self.metadata_ = meta

        def _subset(names: list[str]) -> WindowDataset:
            keep = full.indices[np.isin(meta["subject"], names)]
            return WindowDataset(reader, indices=keep, dtype=self.dtype)

        self.full_dataset_ = full
        self.train_dataset_ = _subset(train)
        self.val_dataset_ = _subset(val)
        self.test_dataset_ = _subset(test)
        self._is_setup = True
        logger.info("Split %d subjects by subject: %d train / %d val / %d test "
                    "(%d / %d / %d windows)", len(train) + len(val) + len(test), len(train),
                    len(val), len(test), len(self.train_dataset_), len(self.val_dataset_),
                    len(self.test_dataset_))

    def _require_setup(self) -> None:
        if not self._is_setup:
            self.setup()

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: WindowDataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_windows,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor,
            **kwargs,
        )

    def state_weights(self) -> np.ndarray:
        """Sampling weight of each training window: 1 / (windows of its state)."""
        self._require_setup()
        states = self.train_dataset_.metadata["state"]
        _, inverse, counts = np.unique(states, return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse.reshape(-1)]

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or state-balanced) training batches, seeded and resumable.

        The order of epoch ``e`` depends only on ``(seed, e)`` (Lightning sets the epoch
        through ``loader.sampler.set_epoch``; iterated by hand, every pass repeats epoch 0
        until you call it). Under a distributed trainer each rank takes a disjoint share of
        every epoch. The loader has ``state_dict`` / ``load_state_dict`` (so has the data
        module), which Lightning keeps in checkpoints, so a run resumed from a checkpoint
        saved in the middle of an epoch continues that epoch with the batches it had not
        drawn yet.
        """
        self._require_setup()
        trainer = getattr(self, "trainer", None)
        num_replicas, rank = (1, 0) if trainer is None else (trainer.world_size,
                                                             trainer.global_rank)
        weights = self.state_weights() if self.balance_states else None
        dataset = self.train_dataset_
        shards, rows = dataset.reader.locate(dataset.indices)
        sampler = ShardRunSampler(shards, rows, seed=self.seed, batch_size=self.batch_size,
                                  run_length=self.run_length,
                                  buffer_shards=self.buffer_shards, weights=weights,
                                  num_replicas=num_replicas, rank=rank)
        loader = _ResumableLoader(self.train_dataset_, sampler=sampler,
                                  batch_size=self.batch_size, num_workers=self.num_workers,
                                  collate_fn=collate_windows,
                                  persistent_workers=self.num_workers > 0,
                                  pin_memory=self.pin_memory, drop_last=self.drop_last,
                                  prefetch_factor=self.prefetch_factor)
        if self._train_state is not None:
            loader.load_state_dict(self._train_state)
            self._train_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict:
        """Position of the latest training loader (Lightning keeps it in checkpoints).

        Lightning also saves the loader's own state, but only while the fit loop holds the
        loader; this copy is also in a checkpoint written after ``trainer.fit`` returned.
        """
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Make the next :meth:`train_dataloader` continue where the saved one stopped."""
        self._train_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in store order (an empty list when there are no val subjects)."""
        self._require_setup()
        return self._loader(self.val_dataset_) if len(self.val_dataset_) else []

    def test_dataloader(self) -> DataLoader | list:
        """Test batches in store order (an empty list when there are no test subjects)."""
        self._require_setup()
        return self._loader(self.test_dataset_) if len(self.test_dataset_) else []

    def predict_dataloader(self) -> DataLoader:
        """Every selected window (all splits), in store order."""
        self._require_setup()
        return self._loader(self.full_dataset_)

    def __repr__(self) -> str:
        if not self._is_setup:
            return f"<MEGDataModule | {self.store} (not set up)>"
        return (f"<MEGDataModule | {len(self.train_subjects_)}/{len(self.val_subjects_)}/"
                f"{len(self.test_subjects_)} subjects, {len(self.train_dataset_)}/"
                f"{len(self.val_dataset_)}/{len(self.test_dataset_)} windows>")
