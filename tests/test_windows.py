"""Windows: construction, selection and concatenation across recordings."""

import numpy as np
import pytest

from megfm.data import SensorGeometry, Windows


def _geometry(n_sensors: int, prefix: str = "MEG") -> SensorGeometry:
    rng = np.random.default_rng(n_sensors)
    pos = rng.normal(size=(n_sensors, 3)) * 0.05
    ori = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    return SensorGeometry(names=[f"{prefix}{i:03d}" for i in range(n_sensors)],
                          positions=pos, orientations=ori, types=np.zeros(n_sensors, int))


def _windows(n_windows=4, n_sensors=5, n_times=20, state="rest", subject="sub-01"):
    data = np.arange(n_windows * n_sensors * n_times, dtype=np.float32).reshape(
        n_windows, n_sensors, n_times)
    return Windows(data=data, sfreq=100.0, geometries=[_geometry(n_sensors)],
                   metadata={"subject": [subject] * n_windows, "state": [state] * n_windows,
                             "onset": np.arange(n_windows, dtype=float)})


def test_defaults_fill_every_metadata_column():
    w = _windows()
    assert w.metadata["event"].tolist() == [-1] * 4
    assert w.metadata["recording"].dtype == np.int64
    assert w.metadata["label"].tolist() == [""] * 4
    assert w.geometry.n_sensors == 5


def test_selection_keeps_rows_and_metadata_aligned():
    w = _windows()
    sub = w[np.array([True, False, True, False])]
    assert sub.n_windows == 2
    np.testing.assert_array_equal(sub.data, w.data[[0, 2]])
    assert sub.metadata["onset"].tolist() == [0.0, 2.0]


def test_concatenate_pads_sensors_and_reindexes_recordings():
    a = _windows(n_windows=2, n_sensors=5, state="rest", subject="sub-01")
    b = _windows(n_windows=3, n_sensors=7, state="auditory", subject="sub-02")
    both = Windows.concatenate([a, b])
    assert both.data.shape == (5, 7, 20)
    assert both.metadata["recording"].tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(both.data[:2, :5], a.data)
    assert not both.data[:2, 5:].any()  # padding rows are zero
    np.testing.assert_array_equal(both.data[2:], b.data)
    assert [g.n_sensors for g in both.geometries] == [5, 7]
    with pytest.raises(ValueError, match="2 recordings"):
        _ = both.geometry


def test_concatenate_refuses_mismatched_rates_and_lengths():
    a = _windows()
    b = _windows()
    b.sfreq = 200.0
    with pytest.raises(ValueError, match="different sampling rates"):
        Windows.concatenate([a, b])
    with pytest.raises(ValueError, match="different lengths"):
        Windows.concatenate([a, _windows(n_times=30)])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n_windows, n_sensors, n_times"):
        Windows(data=np.zeros((3, 4)), sfreq=100, geometries=[_geometry(4)], metadata={})
    with pytest.raises(ValueError, match="shape"):
        Windows(data=np.zeros((3, 4, 5)), sfreq=100, geometries=[_geometry(4)],
                metadata={"subject": ["a", "b"]})
    with pytest.raises(ValueError, match="index into"):
        Windows(data=np.zeros((1, 4, 5)), sfreq=100, geometries=[_geometry(4)],
                metadata={"recording": [3]})


def test_geometry_dict_round_trip_and_pick():
    g = _geometry(6)
    g.bads[2] = True
    assert SensorGeometry.from_dict(g.to_dict()) == g
    sub = g.pick([2, 0])
    assert sub.names == ["MEG002", "MEG000"]
    assert sub.bads.tolist() == [True, False]
    with pytest.raises(ValueError, match="frame"):
        SensorGeometry(names=["a"], positions=np.zeros((1, 3)), orientations=np.ones((1, 3)),
                       types=[0], frame="mri")
