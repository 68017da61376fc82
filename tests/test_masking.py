"""Tests of megfm.masking: modes, ratios, validity, determinism."""

from __future__ import annotations

import pytest
import torch

from megfm.masking import make_mask


def _valid(b=4, s=20, n_bad=(0, 3, 0, 7)):
    v = torch.ones(b, s, dtype=torch.bool)
    for i, n in enumerate(n_bad):
        if n:
            v[i, -n:] = False
    return v


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_random_ratio_and_validity(ratio):
    valid = _valid()
    m = make_mask(valid, 10, mode="random", ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert m.shape == (4, 20, 10) and m.dtype == torch.bool
    assert not m[~valid].any()  # invalid sensors never hidden
    n_valid_tokens = valid.sum(1) * 10
    torch.testing.assert_close(
        m.sum((1, 2)), torch.round(ratio * n_valid_tokens.float()).long()
    )


def test_sensor_mode_hides_whole_sensors():
    valid = _valid()
    m = make_mask(valid, 6, mode="sensor", ratio=0.5, generator=torch.Generator().manual_seed(1))
    per_sensor = m.sum(-1)
    assert torch.all((per_sensor == 0) | (per_sensor == 6))
    torch.testing.assert_close(
        (per_sensor == 6).sum(1), torch.round(0.5 * valid.sum(1).float()).long()
    )
    assert not m[~valid].any()


def test_time_mode_hides_whole_time_blocks():
    valid = _valid()
    m = make_mask(valid, 12, mode="time", ratio=0.5, time_block=3,
                  generator=torch.Generator().manual_seed(2))
    hidden_t = m.any(1)  # (B, P)
    # a hidden patch is hidden on every valid sensor, never on invalid ones
    for b in range(4):
        assert torch.all(m[b][valid[b]] == hidden_t[b])
        assert not m[b][~valid[b]].any()
        # contiguous blocks of 3 patches
        blocks = hidden_t[b].reshape(4, 3)
        assert torch.all(blocks.all(1) | ~blocks.any(1))
    assert torch.all(hidden_t.sum(1) == 6)


def test_every_window_keeps_visible_and_hidden_patches():
    valid = torch.zeros(3, 5, dtype=torch.bool)
    valid[:, :2] = True
    for mode in ("random", "sensor", "time", "mixed"):
        for ratio in (0.01, 0.99):
            m = make_mask(valid, 2, mode=mode, ratio=ratio,
                          generator=torch.Generator().manual_seed(3))
            hidden = m.sum((1, 2))
            visible = (valid[:, :, None] & ~m).sum((1, 2))
            assert torch.all(hidden >= 1) and torch.all(visible >= 1), (mode, ratio)


def test_deterministic_with_generator_and_varies_with_seed():
    valid = _valid()
    a = make_mask(valid, 8, mode="mixed", generator=torch.Generator().manual_seed(5))
    b = make_mask(valid, 8, mode="mixed", generator=torch.Generator().manual_seed(5))
    c = make_mask(valid, 8, mode="mixed", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mixture_uses_each_mode():
    valid = torch.ones(64, 10, dtype=torch.bool)
    m = make_mask(valid, 8, mode=("sensor", "time"), ratio=0.5,
                  generator=torch.Generator().manual_seed(0))
    whole_sensor = ((m.sum(-1) == 0) | (m.sum(-1) == 8)).all(1)
    whole_time = ((m.sum(1) == 0) | (m.sum(1) == 10)).all(1)
    assert torch.all(whole_sensor | whole_time)
    assert whole_sensor.any() and whole_time.any()


def test_refusals():
    valid = _valid()
    with pytest.raises(ValueError, match="mask ratio"):
        make_mask(valid, 4, ratio=1.0)
    with pytest.raises(ValueError, match="'mode'"):
        make_mask(valid, 4, mode="block")
    empty = valid.clone()
    empty[2] = False
    with pytest.raises(ValueError, match=r"Window\(s\) \[2\].*no valid sensor"):
        make_mask(empty, 4)
    with pytest.raises(ValueError, match="at least 2 time patches"):
        make_mask(valid, 1, mode="time")
    one = torch.zeros(1, 3, dtype=torch.bool)
    one[0, 0] = True
    with pytest.raises(ValueError, match="at least 2 valid sensors"):
        make_mask(one, 4, mode="sensor")


def test_lowest_matches_ranking_by_a_second_argsort():
    from megfm.masking import _lowest

    g = torch.Generator().manual_seed(7)
    noise = torch.rand(5, 300, generator=g)
    noise[:, ::7] = 0.5  # ties: both sides must break them the same way
    n = torch.tensor([0, 1, 150, 299, 300])
    order = torch.argsort(noise, dim=-1)
    rank = torch.argsort(order, dim=-1)  # the rank of each entry under the same order
    assert torch.equal(_lowest(noise, n), rank < n[:, None])
    assert torch.equal(_lowest(noise, n).sum(1), n)


def test_mixed_builds_each_window_with_its_own_mode_only(monkeypatch):
    import megfm.masking as masking

    built = []
    real = masking._build

    def counting(mode, valid, *args):
        built.append((mode, valid.shape[0]))
        return real(mode, valid, *args)

    monkeypatch.setattr(masking, "_build", counting)
    valid = _valid(b=12, s=20, n_bad=(0, 3, 0, 7) * 3)
    m = make_mask(valid, 10, mode="mixed", ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert sum(n for _, n in built) == 12  # every window built once, by one builder
    assert len({mode for mode, _ in built}) == len(built)  # one call per drawn mode
    # and each window is a valid mask of one of the modes
    per_sensor, per_time = m.sum(-1), m.sum(1)
    n_valid = valid.sum(1)
    as_random = m.sum((1, 2)) == torch.round(0.5 * 10 * n_valid.float()).long()
    as_sensor = ((per_sensor == 0) | (per_sensor == 10)).all(1)
    as_time = ((per_time == 0) | (per_time == n_valid[:, None])).all(1)
    assert torch.all(as_random | as_sensor | as_time)
    assert not m[~valid].any()


def test_every_single_mode_has_a_builder_and_an_unknown_one_is_refused():
    from megfm import masking

    assert set(masking.SINGLE_MASK_MODES) == set(masking._BUILDERS)
    valid = torch.ones(2, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match="'hemisphere' has no builder"):
        masking._build("hemisphere", valid, 4, 0.5, torch.Generator().manual_seed(0), 2)
