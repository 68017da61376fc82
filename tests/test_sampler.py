"""ShardRunSampler: seeded runs of windows of one shard, a shuffle buffer of shards, ranks."""

from __future__ import annotations

import numpy as np
import pytest

from megfm.data.sampler import ShardRunSampler

# 12 shards of 5..27 items (the last rows of each shard), in a shuffled item order
SIZES = [5 + 2 * k for k in range(12)]
SHARDS = np.repeat(np.arange(12), SIZES)
ROWS = np.concatenate([np.arange(n) for n in SIZES])
PERM = np.random.default_rng(0).permutation(SHARDS.size)
SHARDS, ROWS = SHARDS[PERM], ROWS[PERM]
N = SHARDS.size


def _sampler(epoch: int = 0, **kwargs) -> ShardRunSampler:
    kwargs = {"seed": 3, "batch_size": 8, "run_length": 4, **kwargs}
    sampler = ShardRunSampler(SHARDS, ROWS, **kwargs)
    sampler.set_epoch(epoch)
    return sampler


def _runs(order: list[int]) -> list[int]:
    """Lengths of the maximal stretches of consecutive rows of one shard in an order."""
    lengths = [1]
    for a, b in zip(order[:-1], order[1:], strict=True):
        if SHARDS[b] == SHARDS[a] and ROWS[b] == ROWS[a] + 1:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def test_every_item_once_per_epoch_seeded_by_seed_and_epoch():
    orders = [list(_sampler(e)) for e in range(3)]
    for order in orders:
        assert sorted(order) == list(range(N))
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert list(_sampler(1)) == orders[1]  # a fresh sampler repeats an epoch exactly
    assert list(_sampler(1, seed=4)) != orders[1]
    assert len(_sampler()) == N


@pytest.mark.parametrize("run_length", [1, 4, 8])
def test_runs_are_consecutive_rows_of_one_shard(run_length):
    order = list(_sampler(2, run_length=run_length, buffer_shards=None))
    runs = _runs(order)
    # runs of run_length consecutive rows (shorter at the shard ends; two runs of one shard
    # may follow each other by chance, so allow a few longer stretches)
    if run_length > 1:  # most items lie in long runs
        runs_arr = np.asarray(runs)
        assert runs_arr[runs_arr >= run_length // 2].sum() > 0.75 * N
    assert len(runs) <= N // run_length + len(SIZES) + 1
    # the runs themselves are shuffled: shards alternate along the order
    changes = np.count_nonzero(np.diff(SHARDS[order]))
    assert changes > 0.5 * (N / run_length)
    # the cut points move from epoch to epoch
    if run_length > 1:
        starts = {tuple(order[i:i + run_length]) for i in range(0, 40, run_length)}
        other = list(_sampler(3, run_length=run_length, buffer_shards=None))
        assert starts != {tuple(other[i:i + run_length]) for i in range(0, 40, run_length)}


def test_shuffle_buffer_takes_shards_a_group_at_a_time():
    order = np.asarray(list(_sampler(1, buffer_shards=3)))
    shards = SHARDS[order]
    first = {int(k): int(np.flatnonzero(shards == k)[0]) for k in np.unique(shards)}
    last = {int(k): int(np.flatnonzero(shards == k)[-1]) for k in np.unique(shards)}
    by_first = sorted(first, key=first.get)
    groups = [by_first[i:i + 3] for i in range(0, 12, 3)]
    for a, b in zip(groups[:-1], groups[1:], strict=True):
        assert max(last[k] for k in a) < min(first[k] for k in b)  # groups never interleave
    # within a group the runs of its shards are mixed
    assert np.count_nonzero(np.diff(shards[: first[groups[1][0]]])) >= 4
    # a different epoch groups other shards together
    other = SHARDS[np.asarray(list(_sampler(2, buffer_shards=3)))]
    assert set(np.unique(other[:5])) != set(groups[0]) or \
        list(other) != list(shards)


def test_weights_draw_items_in_proportion():
    # shards 0-5 weigh 3x as much per item as shards 6-11
    weights = np.where(SHARDS < 6, 3.0, 1.0)
    heavy, total = 0, 0
    for epoch in range(40):
        order = list(_sampler(epoch, weights=weights))
        assert len(order) == N
        heavy += int(np.sum(SHARDS[order] < 6))
        total += len(order)
    share = 3.0 * np.sum(SHARDS < 6) / (3.0 * np.sum(SHARDS < 6) + np.sum(SHARDS >= 6))
    assert abs(heavy / total - share) < 0.05
    # with a small shuffle buffer too, every group of shards is drawn from in an epoch
    grouped = list(_sampler(0, weights=np.ones(N), buffer_shards=2))
    assert len(grouped) == N and len(set(SHARDS[grouped].tolist())) >= 10
    zero = np.where(SHARDS == 0, 0.0, 1.0)
    assert 0 not in set(SHARDS[list(_sampler(0, weights=zero))].tolist())


@pytest.mark.parametrize("weighted", [False, True])
def test_ranks_take_batches_in_turn_and_resume_their_share(weighted):
    weights = np.linspace(1, 2, N) if weighted else None
    ranks = [_sampler(3, weights=weights, num_replicas=2, rank=r) for r in (0, 1)]
    orders = [list(s) for s in ranks]
    assert [len(o) for o in orders] == [len(s) for s in ranks] == [-(-N // 2)] * 2
    whole = ranks[0].global_order().tolist()
    assert len(whole) == 2 * len(orders[0])
    # batch j of the global order goes to rank j % 2 (whole rounds), the tail item by item
    full = (len(whole) // 16) * 16
    assert orders[0][:8] == whole[:8] and orders[1][:8] == whole[8:16]
    assert orders[0][8:16] == whole[16:24]
    assert orders[0][full // 2:] == whole[full::2] and orders[1][full // 2:] == whole[full + 1::2]
    if not weighted:  # disjoint apart from the padding (the start repeated)
        assert sorted(orders[0] + orders[1]) == sorted(whole)
        assert set(orders[0] + orders[1]) == set(range(N))
    single = _sampler(3, weights=weights)
    assert single.global_order().tolist()[:N] == whole[:N]  # one global order for any world
    # a start skips the first items of the global order, whoever consumed them, and deals
    # the rest over this world's ranks; for one iteration only
    ranks[1].start = 16
    assert list(ranks[1]) == orders[1][8:]
    assert list(ranks[1]) == orders[1]
    single.start = 3
    assert list(single) == whole[3:N]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'run_length'"):
        ShardRunSampler(SHARDS, ROWS, seed=0, batch_size=4, run_length=0)
    with pytest.raises(ValueError, match="'buffer_shards'"):
        ShardRunSampler(SHARDS, ROWS, seed=0, batch_size=4, buffer_shards=0)
    with pytest.raises(ValueError, match="'batch_size'"):
        ShardRunSampler(SHARDS, ROWS, seed=0, batch_size=0)
    with pytest.raises(ValueError, match="one entry per item"):
        ShardRunSampler(SHARDS, ROWS[:-1], seed=0, batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        ShardRunSampler([], [], seed=0, batch_size=4)
    with pytest.raises(ValueError, match="'weights'"):
        ShardRunSampler(SHARDS, ROWS, seed=0, batch_size=4, weights=np.zeros(N))
