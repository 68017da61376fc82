"""Baseline features: raw signals (+ fold-wise PCA) and spectral / evoked features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from megfm.data.geometry import SensorGeometry
from megfm.data.windows import Windows
from megfm.evaluate.baselines import (
    REGIONS,
    RawPCA,
    raw_features,
    sensor_regions,
    spectral_features,
)


def _cap_geometry(n: int = 40, *, types=None, bads=None) -> SensorGeometry:
    """Sensors spread over a helmet-like cap (x right, y front, z up), metres."""
    rng = np.random.default_rng(0)
    az = rng.uniform(0, 2 * np.pi, n)
    el = rng.uniform(0.05, 1.4, n)
    pos = 0.1 * np.c_[np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]
    return SensorGeometry(names=[f"MEG{i:03d}" for i in range(n)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=np.zeros(n, int) if types is None else types, bads=bads)


def _windows(n_windows=12, n_sensors=40, sfreq=200.0, n_times=400, *, freq=10.0, seed=0,
             **meta) -> Windows:
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / sfreq
    data = 0.3 * rng.normal(size=(n_windows, n_sensors, n_times))
    data += np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (n_windows, n_sensors, 1)))
    metadata = {"subject": np.repeat(["s1", "s2"], n_windows // 2), **meta}
    return Windows(data=data, sfreq=sfreq, geometries=[_cap_geometry(n_sensors)],
                   metadata=metadata)


def test_sensor_regions_known_directions():
    pos = np.array([[-0.1, 0.0, 0.01], [0.1, 0.0, 0.01], [0.0, 0.1, 0.02], [0.0, 0.0, 0.1],
                    [0.0, -0.06, 0.08], [0.0, -0.1, 0.02], [0.0, 0.0, 0.0]])
    geom = SensorGeometry(names=list("abcdefg"), positions=pos,
                          orientations=np.tile([0, 0, 1.0], (7, 1)), types=np.zeros(7, int))
    regions = sensor_regions(geom)
    assert regions[:6].tolist() == ["left_temporal", "right_temporal", "frontal", "central",
                                    "parietal", "occipital"]
    assert set(regions) <= set(REGIONS)


def test_raw_features_downsample_flatten_and_zero_bads():
    win = _windows()
    win.geometries[0].bads[3] = True
    feats, names = raw_features(win, sfreq=50.0)
    assert feats.shape == (12, 40 * 100) and feats.dtype == np.float32
    assert len(names) == feats.shape[1] and names[0] == "MEG000@0.000s"
    assert names[101] == "MEG001@0.020s"
    assert np.all(feats.reshape(12, 40, 100)[:, 3] == 0)
    # the 10 Hz rhythm survives the anti-aliased downsampling
    spec = np.abs(np.fft.rfft(feats.reshape(12, 40, 100)[:, 0], axis=-1)).mean(0)
    assert np.argmax(spec) == 20  # 10 Hz at 0.5 Hz resolution


def test_raw_features_keeps_rate_when_target_not_lower():
    win = _windows(n_times=100)
    feats, _ = raw_features(win, sfreq=400.0)
    np.testing.assert_allclose(feats, win.data.reshape(12, -1))


def test_raw_features_rejects_bad_input():
    with pytest.raises(TypeError, match="Windows or the path"):
        raw_features(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="'sfreq'"):
        raw_features(_windows(), sfreq=0)


def test_raw_pca_learns_on_training_rows_only():
    rng = np.random.default_rng(0)
    X_train, X_test = rng.normal(size=(30, 200)), rng.normal(size=(10, 200)) + 5
    pca = RawPCA(n_components=50).fit(X_train)
    assert pca.pca_.n_components_ == 30  # clipped to n_samples
    assert pca.transform(X_test).shape == (10, 30)
    np.testing.assert_allclose(pca.mean_, X_train.mean(0))
    both = RawPCA(n_components=5).fit(np.r_[X_train, X_test])
    assert not np.allclose(both.mean_, pca.mean_)
    with pytest.raises(ValueError, match="n_components"):
        RawPCA(n_components=0).fit(X_train)
    pipe = make_pipeline(RawPCA(n_components=3)).fit(X_train)
    assert pipe.transform(X_test).shape == (10, 3)


@parametrize_with_checks([RawPCA(n_components=2)])
def test_raw_pca_sklearn_compatible(estimator, check):
    check(estimator)


def test_spectral_features_alpha_peak_and_band_power():
    win = _windows(freq=10.0)
    feats, names = spectral_features(win)
    assert feats.shape == (12, len(names))
    col = {n: i for i, n in enumerate(names)}
    np.testing.assert_allclose(feats[:, col["peak_alpha_hz"]], 10.0, atol=0.3)
    alpha = [i for n, i in col.items() if n.startswith("relpow_alpha_mag_")]
    theta = [i for n, i in col.items() if n.startswith("relpow_theta_mag_")]
    assert len(alpha) == len(REGIONS)
    assert np.all(feats[:, alpha] > 0.8) and np.all(feats[:, theta] < 0.1)
    rel = [i for n, i in col.items() if n.startswith("relpow_") and n.endswith("_central")]
    np.testing.assert_allclose(feats[:, rel].sum(1), 1.0, atol=1e-6)  # relative powers sum to 1
    theta_win = _windows(freq=6.0)
    tf, _ = spectral_features(theta_win)
    assert np.all(tf[:, theta] > 0.8)
    fast, _ = spectral_features(_windows(freq=11.3), evoked=False)
    np.testing.assert_allclose(fast[:, col["peak_alpha_hz"]], 11.3, atol=0.2)


def test_spectral_features_ignore_bad_sensors_and_drop_empty_groups():
    win = _windows()
    win.geometries[0].bads[:] = True
    win.geometries[0].bads[0] = False
    feats, names = spectral_features(win, evoked=False)
    relpow = [n for n in names if n.startswith("relpow_alpha")]
    assert len(relpow) == 1  # only the region of the one good sensor is left
    assert not np.isnan(feats).any()


def test_evoked_block_amplitudes_follow_planted_habituation():
    sfreq, n_times = 200.0, 100
    n = 2 * 3 * 4  # 2 subjects x 3 blocks x 4 trials
    subject = np.repeat(["s1", "s2"], 12)
    block = np.tile(np.repeat([0, 1, 2], 4), 2)
    rng = np.random.default_rng(1)
    t = -0.1 + np.arange(n_times) / sfreq
    response = np.exp(-((t - 0.1) ** 2) / (2 * 0.02 ** 2))
    gain = np.where(subject == "s1", 1.0 - 0.3 * block, 1.0)  # s1 habituates, s2 does not
    data = 0.05 * rng.normal(size=(n, 10, n_times)) + gain[:, None, None] * response
    state = np.array(["auditory"] * n)
    rest = np.zeros((2, 10, n_times), np.float32)
    win = Windows(data=np.r_[data, rest], sfreq=sfreq, geometries=[_cap_geometry(10)],
                  metadata={"subject": np.r_[subject, ["s1", "s2"]],
                            "state": np.r_[state, ["rest", "rest"]],
                            "block": np.r_[block, [-1, -1]]},
                  info={"tmin": -0.1})
    feats, names = spectral_features(win)
    cols = [names.index(f"evoked_auditory_mag_block{b}") for b in range(3)]
    s1, s2 = feats[0, cols], feats[12, cols]
    np.testing.assert_allclose(s1, [1.0, 0.7, 0.4], atol=0.05)
    np.testing.assert_allclose(s2, [1.0, 1.0, 1.0], atol=0.05)
    assert np.all(feats[np.flatnonzero(subject == "s1"), cols[0]] == s1[0])
    assert np.isnan(feats[-2:, cols]).all()  # rest windows carry no evoked values


def test_spectral_features_accept_store_path(monkeypatch, tmp_path):
    win = _windows()
    import megfm.data

    fake = type("M", (), {"read_store": staticmethod(lambda path: win)})
    monkeypatch.setitem(__import__("sys").modules, "megfm.data.store", fake)
    monkeypatch.setattr(megfm.data, "store", fake, raising=False)
    feats, _ = spectral_features(tmp_path, evoked=False)
    ref, _ = spectral_features(win, evoked=False)
    np.testing.assert_array_equal(feats, ref)


@pytest.mark.realdata
def test_spectral_and_raw_features_on_real_vectorview(real_file):
    import mne

    raw = mne.io.read_raw_fif(real_file("vectorview"), verbose=False).pick("meg")
    geom = SensorGeometry.from_info(raw.info)
    data = raw.get_data() * 1e15  # T -> fT (planar gradiometers T/m -> fT/m; scale irrelevant)
    n_times = int(raw.info["sfreq"] * 0.4)
    windows = Windows(data=np.stack([data[:, :n_times], data[:, n_times:2 * n_times]]),
                      sfreq=raw.info["sfreq"], geometries=[geom],
                      metadata={"subject": ["s1", "s1"]})
    feats, names = spectral_features(windows)
    assert any("_mag_" in n for n in names) and any("_planar_grad_" in n for n in names)
    assert {n.rsplit("_mag_", 1)[1] for n in names if n.startswith("relpow_alpha_mag_")} == set(REGIONS)
    rel = feats[:, [i for i, n in enumerate(names) if n.startswith("relpow_")]]
    assert np.all((rel >= 0) & (rel <= 1))
    assert 7.0 <= feats[0, names.index("peak_alpha_hz")] <= 14.0
    flat, _ = raw_features(windows, sfreq=50.0)
    assert flat.shape[0] == 2 and np.isfinite(flat).all()
