"""`ShardRunSampler`: a seeded training order made of short runs of windows from one shard.

Reading a window alone from an HDF5 shard costs one HDF5 call; reading ``k`` consecutive
windows of a shard costs one call too (see :meth:`megfm.data.store.StoreReader.read_rows`).
Opening a shard costs about ten window reads and half a megabyte of HDF5 state while it
stays open, so a reader keeps only so many open (``StoreReader.max_open``). The sampler
therefore shuffles *runs* inside a *shuffle buffer of shards*: each shard's windows are cut
into runs of ``run_length`` consecutive windows (the cut points move with every epoch); the
shards are shuffled and taken ``buffer_shards`` at a time; the runs of those shards are
shuffled together and make the next batches. A batch of ``batch_size`` windows thus takes
``batch_size / run_length`` runs from random places of ``buffer_shards`` recordings, and
each process opens every shard once per epoch. With ``run_length=1`` and ``buffer_shards``
at least the number of shards it is a plain random permutation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from .store import MAX_OPEN_SHARDS

__all__ = ["ShardRunSampler"]


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch), decorrelated across both."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))


def check_run_settings(batch_size: int, run_length: int, buffer_shards: int | None) -> None:
    """Refuse a batch size, run length or buffer that :class:`ShardRunSampler` cannot use."""
    if int(batch_size) < 1:
        raise ValueError(f"Invalid value for 'batch_size': expected >= 1; got {batch_size}.")
    if int(run_length) < 1:
        raise ValueError(f"Invalid value for 'run_length': expected >= 1; got {run_length}.")
    if buffer_shards is not None and int(buffer_shards) < 1:
        raise ValueError(f"Invalid value for 'buffer_shards': expected >= 1 or None; got "
                         f"{buffer_shards}.")

class ShardRunSampler(DistributedSampler):
    """Seeded training order of runs of windows from one shard, sharded over ranks.

    Each epoch draws a fresh order from a generator seeded with ``(seed, epoch)``:

    * every shard's items (sorted by row) are cut into runs of ``run_length`` items, the
      first run of each shard shortened by a random offset, so that the cut points change
      from epoch to epoch;
    * the runs are permuted (every item once per epoch), or, with ``weights``, drawn with
      replacement with probability proportional to their mean weight until the epoch holds
      as many items as the dataset (each item is then drawn in proportion to its weight);
    * the shards are permuted and cut into groups of ``buffer_shards``; the runs keep their
      random order within a group, and the groups follow each other.

    The order is padded to a multiple of ``num_replicas`` by repeating its start (as
    :class:`~torch.utils.data.DistributedSampler` does). Ranks take whole batches in turn
    (batch ``j`` of the global order goes to rank ``j % num_replicas``), so runs stay within
    a rank's batch and the batches all ranks have consumed after ``k`` steps are the first
    ``k * num_replicas`` batches of the global order; the remainder that does not fill a
    batch for every rank is dealt item by item. Every rank gets ``ceil(n / num_replicas)``
    items. Being a ``DistributedSampler``, Lightning neither replaces nor wraps it and calls
    :meth:`set_epoch` at the start of every epoch.

    Parameters
    ----------
    shards : array of int, shape (n,)
        Shard of each dataset item.
    rows : array of int, shape (n,)
        Row of each item in its shard (the order of the items within a run).
    seed : int
        Seed of the order; the order of epoch ``e`` depends only on ``(seed, e)``.
    batch_size : int
        Items per batch of the loader (the unit dealt to ranks).
    run_length : int
        Items per run (one read each).
    buffer_shards : int | None
        Shards whose runs are shuffled together (at most ``StoreReader.max_open``, whose
        default is ``MAX_OPEN_SHARDS``, so that every process opens each shard once per
        epoch); None: all shards.
    weights : array of float | None
        Sampling weight of each item (draws with replacement); None for a permutation.
    num_replicas, rank : int
        Number of ranks and this rank.

    Attributes
    ----------
    start : int
        For the next iteration only: the items of the epoch's global order that an
        interrupted run already consumed (its first ``start`` items, over all of its ranks).
        The rest of the order is dealt over this sampler's ranks as above, so a run can
        resume on another number of ranks and still see every item of the epoch once.
    """

    def __init__(self, shards, rows, *, seed: int, batch_size: int, run_length: int = 8,
                 buffer_shards: int | None = MAX_OPEN_SHARDS, weights=None, num_replicas: int = 1,
                 rank: int = 0) -> None:
        shards = np.asarray(shards, dtype=np.int64).reshape(-1)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if shards.shape != rows.shape:
            raise ValueError(f"'shards' and 'rows' must have one entry per item; got "
                             f"{shards.size} and {rows.size}.")
        if shards.size == 0:
            raise ValueError("Cannot sample from an empty dataset (no items).")
        check_run_settings(batch_size, run_length, buffer_shards)
        super().__init__(range(shards.size), num_replicas=int(num_replicas), rank=int(rank),
                         shuffle=True, seed=int(seed), drop_last=False)
        self.batch_size = int(batch_size)
        self.run_length = int(run_length)
        self.buffer_shards = None if buffer_shards is None else int(buffer_shards)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64).reshape(-1)
            if weights.shape != shards.shape or not np.all(np.isfinite(weights)) or \
                    weights.min() < 0 or weights.sum() <= 0:
                raise ValueError("'weights' must hold one finite, non-negative weight per "
                                 "item, not all zero.")
        self.weights = None if weights is None else torch.as_tensor(weights)
        # items sorted by (shard, row); position within its shard; first item of each shard
        self._sorted = np.lexsort((rows, shards))
        sorted_shards = shards[self._sorted]
        first = np.concatenate([[True], sorted_shards[1:] != sorted_shards[:-1]])
        self._shard_of = np.cumsum(first) - 1  # dense shard number of each sorted item
        starts = np.flatnonzero(first)
        self._within = np.arange(shards.size) - starts[self._shard_of]
        self.start = 0

    # ------------------------------------------------------------------ order
    def _runs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Start (in sorted order) and length of this epoch's runs."""
        length = self.run_length
        n_shards = int(self._shard_of[-1]) + 1
        offset = rng.integers(0, length, size=n_shards) if length > 1 else np.zeros(n_shards,
                                                                                     np.int64)
        new = ((self._within + offset[self._shard_of]) % length == 0) | (self._within == 0)
        starts = np.flatnonzero(new)
        lengths = np.diff(np.concatenate([starts, [self._within.size]]))
        return starts, lengths

    def global_order(self) -> np.ndarray:
        """The epoch's order over all ranks, padded to ``num_replicas * num_samples``."""
        n = self._within.size
        rng = _epoch_rng(self.seed, self.epoch)
        starts, lengths = self._runs(rng)
        if self.weights is None:
            chosen = rng.permutation(starts.size)
        else:
            w = self.weights.numpy()[self._sorted]
            mean = np.add.reduceat(w, starts) / lengths
            p = mean / mean.sum()
            chosen = np.zeros(0, dtype=np.int64)
            while lengths[chosen].sum() < n:  # usually one round
                need = n - int(lengths[chosen].sum())
                draws = max(16, int(2 * need / float(p @ lengths)) + 1)
                chosen = np.concatenate([chosen, rng.choice(starts.size, size=draws, p=p)])
            # the first draws that make n items (before grouping, which would otherwise
            # keep the draws of the first groups only)
            chosen = chosen[:int(np.searchsorted(np.cumsum(lengths[chosen]), n)) + 1]
        n_shards = int(self._shard_of[-1]) + 1
        if self.buffer_shards is not None and self.buffer_shards < n_shards:
            group = rng.permutation(n_shards)[self._shard_of[starts[chosen]]] // self.buffer_shards
            chosen = chosen[np.argsort(group, kind="stable")]  # random order within a group
        # concatenate the chosen runs
        run_len = lengths[chosen]
        first_pos = np.repeat(np.cumsum(run_len) - run_len, run_len)
        pos = np.repeat(starts[chosen], run_len) + np.arange(int(run_len.sum())) - first_pos
        order = self._sorted[pos[:n]]
        pad = self.total_size - n
        if pad > 0:
            order = np.concatenate([order, np.resize(order, pad)])
        return order

    def rank_order(self, start: int = 0) -> torch.Tensor:
        """This rank's items of the current epoch after the first ``start`` of its order."""
        r, b = self.num_replicas, self.batch_size
        # the unconsumed rest of the global order, padded (by repeating its start) for this world
        rest = self.global_order()[:self._within.size][int(start):]
        order = np.concatenate([rest, np.resize(rest, (-rest.size) % r)])
        full = (order.size // (r * b)) * r * b  # whole rounds: a batch per rank
        mine = order[:full].reshape(-1, r, b)[:, self.rank].reshape(-1)
        tail = order[full:][self.rank::r]
        return torch.from_numpy(np.concatenate([mine, tail]))

    def __iter__(self):
        order = self.rank_order(self.start)
        self.start = 0
        return iter(order.tolist())
