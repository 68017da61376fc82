"""alignment_score on constructed maps (megfm.explain.alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from megfm.explain import alignment_score

NAMES = [f"MEG{i:03d}" for i in range(10)]


def test_uniform_map_scores_one():
    assert alignment_score(np.full(10, 0.1), NAMES[:3], names=NAMES) == pytest.approx(1.0)
    assert alignment_score(np.full(10, 7.0), [0, 4], names=None) == pytest.approx(1.0)


def test_all_mass_on_expected_scores_inverse_fraction():
    m = np.zeros(10)
    m[[1, 2]] = [0.3, 0.7]
    assert alignment_score(m, ["MEG001", "MEG002"], names=NAMES) == pytest.approx(10 / 2)
    assert alignment_score(m, np.isin(np.arange(10), [1, 2])) == pytest.approx(5.0)
    # expected set twice as big: half the score
    assert alignment_score(m, NAMES[:4], names=NAMES) == pytest.approx(10 / 4)


def test_no_mass_on_expected_scores_zero():
    m = np.zeros(10)
    m[9] = 1.0
    assert alignment_score(m, NAMES[:5], names=NAMES) == 0.0


def test_known_intermediate_value_and_dict_input():
    m = dict(zip(NAMES, [2.0] + [1.0] * 9, strict=True))  # 2/11 of the mass on 1/10 of the sensors
    assert alignment_score(m, ["MEG000"]) == pytest.approx((2 / 11) / (1 / 10))


def test_nan_sensors_are_left_out():
    m = np.array([1.0, 1.0, np.nan, np.nan])
    assert alignment_score(m, [0], names=None) == pytest.approx(1.0)
    # an expected sensor absent from the map does not count
    assert alignment_score(m, [0, 2]) == pytest.approx(1.0)


def test_errors():
    with pytest.raises(ValueError, match="negative values"):
        alignment_score(np.array([1.0, -1.0]), [0])
    with pytest.raises(ValueError, match="pass 'names'"):
        alignment_score(np.ones(3), ["MEG000"])
    with pytest.raises(ValueError, match="None of the expected sensors"):
        alignment_score(np.ones(10), ["EEG001"], names=NAMES)
    with pytest.raises(ValueError, match="no mass"):
        alignment_score(np.zeros(10), [1])
    with pytest.raises(ValueError, match="shape \\(n_sensors,\\)"):
        alignment_score(np.ones((2, 5)), [1])
    with pytest.raises(ValueError, match="'names' has 3 entries"):
        alignment_score(np.ones(10), [1], names=NAMES[:3])
