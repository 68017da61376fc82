"""Reconstruction evaluation: metrics, baselines with known answers, evoked check, figure."""

from __future__ import annotations

import numpy as np
import pytest
import training_helpers as helpers

from megfm.data import SensorGeometry
from megfm.evaluate.reconstruction import (
    _Accumulator,
    _MNEInterpolator,
    _spline_fill,
    evaluate_reconstruction,
    info_from_geometry,
)


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


@pytest.fixture(scope="module")
def windows():
    w = helpers.tiny_windows(n_windows=8, n_sensors=12, n_subjects=4)
    w.metadata["event"][w.metadata["state"] == "auditory"] = 1
    return w


def test_accumulator_known_values():
    acc = _Accumulator()
    true = np.array([1.0, 2.0, 3.0, 4.0])
    acc.add(true[:2], true[:2])
    acc.add(true[2:] * 2, true[2:])  # errors 3 and 4
    res = acc.result()
    assert res["nmse"] == pytest.approx((9 + 16) / 5.0)  # sum of squares about mean 2.5 = 5
    assert res["r"] == pytest.approx(np.corrcoef(true, [1, 2, 6, 8])[0, 1])
    assert res["n_samples"] == 4


def test_spline_recovers_a_cubic_across_a_gap():
    t = np.arange(50, dtype=float)
    x = np.stack([0.001 * (t - 20) ** 3 - 0.1 * t, np.sin(t / 7)])
    hidden = np.zeros_like(x, bool)
    hidden[:, 20:30] = True
    filled = _spline_fill(x, hidden)
    np.testing.assert_allclose(filled[0], x[0], atol=1e-8)  # exact for a cubic
    assert np.abs(filled[1] - x[1]).max() < 0.05
    pchip = _spline_fill(x, hidden, "pchip")
    lo, hi = np.minimum(x[:, 19], x[:, 30]), np.maximum(x[:, 19], x[:, 30])
    assert np.all((pchip[:, 20:30] >= lo[:, None] - 1e-9) & (pchip[:, 20:30] <= hi[:, None] + 1e-9))
    edge = np.zeros_like(x, bool)
    edge[:, :5] = True
    assert np.allclose(_spline_fill(x, edge)[:, :5], x[:, 5:6])  # nearest value at the ends


def test_info_from_geometry_and_mne_interpolation_of_a_smooth_field():
    # sensors on a sphere cap, field = a smooth function of position (a dipolar pattern)
    rng = np.random.default_rng(0)
    n = 40
    theta = rng.uniform(0, 1.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = 0.12 * np.c_[np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
    geom = SensorGeometry(names=[f"M{i}" for i in range(n)], positions=pos,
                          orientations=pos / 0.12, types=np.zeros(n, int))
    info = info_from_geometry(geom, 200.0)
    assert info["ch_names"] == geom.names
    np.testing.assert_allclose(info["chs"][3]["loc"][:3], pos[3], atol=1e-7)
    np.testing.assert_allclose(info["chs"][3]["loc"][9:12], pos[3] / 0.12, atol=1e-6)
    import mne

    # the field of a current dipole below the cap, computed by MNE on this info
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=0.09, verbose=False)
    dip = mne.Dipole(np.array([0.0]), np.array([[0.02, 0.0, 0.06]]), np.array([1e-8]),
                     np.array([[0.0, 1.0, 0.0]]), np.array([1.0]))
    fwd, stc = mne.make_forward_dipole(dip, sphere, info, verbose=False)
    field = (fwd["sol"]["data"] @ np.array([[1e-8]] * fwd["nsource"]).reshape(-1, 1))
    data = np.repeat(field, 4, axis=1) * 1e15  # fT
    hidden = np.zeros(n, bool)
    hidden[[2, 11, 25]] = True
    rebuilt = _MNEInterpolator(200.0)(data, geom, hidden)
    r = np.corrcoef(rebuilt[hidden, 0], data[hidden, 0])[0, 1]
    assert r > 0.9
    np.testing.assert_allclose(rebuilt[~hidden], data[~hidden])


def test_evaluate_reconstruction_structure_and_reproducibility(windows, tmp_path):
    model = helpers.tiny_model(0)
    res = evaluate_reconstruction(model, windows, ratio=0.5, seed=3, figure=tmp_path / "rec.png",
                                  batch_size=4)
    assert set(res["modes"]) == {"random", "sensor", "time"}
    assert set(res["modes"]["sensor"]) == {"model", "zero", "mean", "mne", "per_state"}
    assert set(res["modes"]["time"]) == {"model", "zero", "mean", "spline", "pchip", "per_state"}
    for mode, entry in res["modes"].items():
        counts = {m: v["n_samples"] for m, v in entry.items() if m != "per_state"}
        assert len(set(counts.values())) == 1, mode  # the same hidden samples for every method
        assert set(entry["per_state"]) == {"rest", "auditory"}
        assert entry["zero"]["nmse"] == pytest.approx(1.0, abs=0.1)
    # a smooth spatial pattern: MNE's field interpolation beats predicting zero
    assert res["modes"]["sensor"]["mne"]["nmse"] < res["modes"]["sensor"]["zero"]["nmse"]
    ev = res["evoked"]["auditory"]
    assert ev["model"]["n_windows"] == 4 and -1 <= ev["model"]["r"] <= 1
    assert ev["model"]["peak_latency_error_ms"] >= 0
    assert (tmp_path / "rec.png").read_bytes()[:4] == b"\x89PNG"
    again = evaluate_reconstruction(model, windows, ratio=0.5, seed=3, baselines=False, batch_size=4,
                                    evoked=False, modes=("random",))
    assert again["modes"]["random"]["model"] == res["modes"]["random"]["model"]
    assert again["evoked"] == {}


def test_evaluate_reconstruction_on_store_subjects(tmp_path, windows):
    store = helpers.tiny_store(tmp_path / "store", windows)
    res = evaluate_reconstruction(helpers.tiny_model(0), store, subjects=["01"],
                                  modes=("time",), evoked=False)
    assert res["subjects"] == ["01"] and res["n_windows"] == 2


def test_evaluate_reconstruction_errors(windows):
    model = helpers.tiny_model(0)
    with pytest.raises(ValueError, match="'modes'"):
        evaluate_reconstruction(model, windows, modes=("mixed",))
    with pytest.raises(ValueError, match="'ratio'"):
        evaluate_reconstruction(model, windows, ratio=1.0)
    with pytest.raises(ValueError, match="no windows"):
        evaluate_reconstruction(model, windows, subjects=["zz"])
    with pytest.raises(ValueError, match="Hz"):
        w = windows[:2]
        w.sfreq = 100.0
        evaluate_reconstruction(model, w, modes=("random",))


@pytest.mark.realdata
@pytest.mark.slow
def test_mne_baseline_on_real_vectorview_with_rebuilt_and_own_info(real_file):
    import mne

    raw = mne.io.read_raw_fif(real_file("vectorview"), verbose=False)
    raw = raw.pick("meg").crop(0, 0.5).load_data(verbose=False)
    raw.info["bads"] = []
    geom = SensorGeometry.from_info(raw.info)
    data = raw.get_data() * np.where(geom.types == 1, 1e13, 1e15)[:, None]  # fT, fT/cm
    hidden = np.zeros(geom.n_sensors, bool)
    hidden[np.arange(0, geom.n_sensors, 31)] = True  # magnetometers and gradiometers
    for info in (None, raw.info):
        rebuilt = _MNEInterpolator(raw.info["sfreq"], info)(data, geom, hidden)
        r = [np.corrcoef(rebuilt[i], data[i])[0, 1] for i in np.flatnonzero(hidden)]
        assert np.median(r) > 0.95 and min(r) > 0.85
