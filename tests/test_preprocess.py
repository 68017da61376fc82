"""preprocess: picks, bad channels, notch, band-pass, resampling, BAD_amplitude, units."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest
from synthetic_sensors import place_on_circle

from megfm.data.preprocess import PreprocessConfig, is_scaled, preprocess


def _raw(n_mag=6, n_grad=6, sfreq=1000.0, seconds=10.0, seed=0, line=50.0, stim=True,
         ref=True):
    """Seeded synthetic recording: white noise (1 pT, 1 pT/cm... in SI) + line noise."""
    rng = np.random.default_rng(seed)
    names = [f"MAG{i}" for i in range(n_mag)] + [f"GRA{i}" for i in range(n_grad)]
    types = ["mag"] * n_mag + ["grad"] * n_grad
    if ref:
        names, types = names + ["REF0"], types + ["ref_meg"]
    names, types = names + ["EEG0"], types + ["eeg"]
    if stim:
        names, types = names + ["STI 014"], types + ["stim"]
    info = mne.create_info(names, sfreq, types)
    n_meg = n_mag + n_grad
    place_on_circle(info, 2 * np.pi * np.arange(len(info["chs"])) / (n_meg + 1))
    n = int(sfreq * seconds)
    t = np.arange(n) / sfreq
    data = rng.normal(size=(len(names), n))
    data[:n_mag] *= 1e-13  # 100 fT
    data[n_mag:n_meg] *= 1e-11  # 100 fT/cm
    if line:
        data[:n_mag] += 5e-13 * np.sin(2 * np.pi * line * t)
    data[n_meg:] *= 1e-6
    if stim:
        data[-1] = 0
        for k, s in enumerate(range(int(sfreq), n - int(sfreq), int(sfreq // 2))):
            data[-1, s:s + 5] = 1 if k % 2 == 0 else 2
    return mne.io.RawArray(data, info, verbose=False)


def test_defaults_units_and_picks():
    raw = _raw()
    out = preprocess(raw, PreprocessConfig(line_freq=None, l_freq=None, h_freq=None,
                                           sfreq=None, bad_amplitude_z=None))
    assert out.ch_names == [f"MAG{i}" for i in range(6)] + [f"GRA{i}" for i in range(6)]
    assert is_scaled(out) and not is_scaled(raw)
    # identity filters: exactly T -> fT and T/m -> fT/cm
    np.testing.assert_allclose(out.get_data()[:6], raw.get_data()[:6] * 1e15, rtol=1e-10)
    np.testing.assert_allclose(out.get_data()[6:12], raw.get_data()[6:12] * 1e13, rtol=1e-10)
    assert raw.ch_names[-1] == "STI 014"  # input untouched (copy=True)
    assert out.info["temp"]["megfm"]["units"] == {"mag": "fT", "grad": "fT/cm"}


def test_resample_notch_bandpass():
    raw = _raw()
    raw._data[:6] += 2e-12 * np.sin(2 * np.pi * 0.1 * raw.times)  # slow drift, 2 pT
    cfg = PreprocessConfig(line_freq=50.0, l_freq=1.0, h_freq=40.0, sfreq=200.0)
    out = preprocess(raw, cfg)
    no_notch = preprocess(raw, PreprocessConfig(line_freq=None, l_freq=None, h_freq=None))
    assert out.info["sfreq"] == 200.0
    assert out.n_times == 2000
    freqs = np.fft.rfftfreq(1200, 1 / 200.0)

    def power(r, lo, hi):
        # middle 6 s, away from the filter edges
        spec = np.abs(np.fft.rfft(r.get_data()[:6, 400:1600], axis=1)) ** 2
        return spec[:, (freqs >= lo) & (freqs < hi)].mean()

    assert power(out, 49.5, 50.5) < 1e-3 * power(no_notch, 49.5, 50.5)  # line noise notched
    assert power(out, 60, 90) < 0.05 * power(out, 10, 30)  # low-passed
    assert power(out, 0, 0.4) < 1e-2 * power(no_notch, 0, 0.4)  # drift high-passed
    assert power(no_notch, 60, 90) > 20 * power(out, 60, 90)  # unfiltered keeps them


def test_upsampling_low_rate_recording_skips_lowpass_above_nyquist():
    raw = _raw(sfreq=90.0, seconds=5.0, line=None)
    out = preprocess(raw)  # h_freq=80 >= 45 Hz: no low-pass, then 90 -> 200 Hz
    assert out.info["sfreq"] == 200.0 and out.n_times == 1000


def test_flat_and_noisy_channels_flagged_and_kept():
    raw = _raw(line=None)
    raw._data[1] *= 1e-4  # flat magnetometer
    raw._data[8] *= 50  # noisy gradiometer
    out = preprocess(raw)
    assert out.info["bads"] == ["MAG1", "GRA2"]
    assert "MAG1" in out.ch_names and "GRA2" in out.ch_names
    assert out.info["temp"]["megfm"]["flat"] == ["MAG1"]
    assert out.info["temp"]["megfm"]["noisy"] == ["GRA2"]


def test_existing_bads_kept():
    raw = _raw(line=None)
    raw.info["bads"] = ["MAG3"]
    out = preprocess(raw)
    assert out.info["bads"] == ["MAG3"]


def test_bad_amplitude_span_annotated():
    raw = _raw(line=None)
    raw._data[2, 5000:5100] += 5e-12  # 5 pT artefact at 5.0-5.1 s
    out = preprocess(raw, PreprocessConfig(bad_amplitude_pad=0.1))
    bad = [a for a in out.annotations if a["description"] == "BAD_amplitude"]
    assert len(bad) == 1
    assert 4.7 < bad[0]["onset"] < 5.0 and 5.1 < bad[0]["onset"] + bad[0]["duration"] < 5.4
    # clean data: no span
    clean = preprocess(_raw(line=None, seed=3))
    assert not [a for a in clean.annotations if a["description"] == "BAD_amplitude"]


def test_absolute_amplitude_threshold():
    raw = _raw(line=None)
    cfg = PreprocessConfig(bad_amplitude_z=None, bad_amplitude={"mag": 1.0})  # 1 fT: all bad
    out = preprocess(raw, cfg)
    bad = [a for a in out.annotations if a["description"] == "BAD_amplitude"]
    assert len(bad) == 1 and bad[0]["duration"] == pytest.approx(10.0, abs=0.01)


def test_stim_events_become_annotations():
    raw = _raw()
    out = preprocess(raw)
    desc = list(out.annotations.description)
    assert desc.count("1") == 8 and desc.count("2") == 8
    onsets = [a["onset"] for a in out.annotations if a["description"] == "1"]
    np.testing.assert_allclose(onsets, 1.0 + np.arange(8) * 1.0)


def test_not_preloaded_raw_keeps_events(tmp_path):
    path = tmp_path / "rec_raw.fif"
    _raw(seconds=4.0).save(path, verbose=False)
    raw = mne.io.read_raw_fif(path, preload=False, verbose=False)
    out = preprocess(raw)
    assert len(out.ch_names) == 12 and out.n_times == 800
    assert list(out.annotations.description).count("1") == 2
    assert not raw.preload and "EEG0" in raw.ch_names  # input untouched


def test_config_json_roundtrip(tmp_path):
    cfg = PreprocessConfig(line_freq=60.0, h_freq=45.0, bad_amplitude={"mag": 4000.0})
    assert PreprocessConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "prep.json"
    cfg.to_json(path)
    assert json.loads(path.read_text())["line_freq"] == 60.0
    assert PreprocessConfig.from_json(path) == cfg
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, match", [
    ({"l_freq": 40.0, "h_freq": 30.0}, "l_freq=40.0 Hz must be below h_freq"),
    ({"h_freq": 120.0}, "Nyquist frequency 100 Hz"),
    ({"sfreq": -1.0}, "'sfreq': expected a positive number"),
    ({"bad_amplitude": {"eeg": 1.0}}, "Invalid keys in 'bad_amplitude'"),
    ({"bad_amplitude_pad": -1}, "bad_amplitude_pad"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**kwargs)


def test_config_unknown_key_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown PreprocessConfig keys \['lowpass'\]"):
        PreprocessConfig.from_dict({"lowpass": 30})
    with pytest.raises(ValueError, match="not valid JSON"):
        PreprocessConfig.from_json("{oops")
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        PreprocessConfig.from_json(tmp_path / "missing.json")


def test_input_errors():
    with pytest.raises(TypeError, match="'config'"):
        preprocess(_raw(), config="fast")
    with pytest.raises(TypeError, match="'raw'"):
        preprocess(np.zeros((3, 100)))
    out = preprocess(_raw(seconds=4.0))
    with pytest.raises(ValueError, match="already preprocessed"):
        preprocess(out)


def test_real_recordings(real_file):
    from megfm.data.read import read_raw

    for name, n in [("vectorview", 306), ("ctf151", 151), ("kit", 160)]:
        out = preprocess(read_raw(real_file(name)))
        assert len(out.ch_names) == n and out.info["sfreq"] == 200.0
        assert np.isfinite(out.get_data()).all()
    # KIT test file: artificial signal on one channel, all others are exactly zero -> flat
    assert len(out.info["bads"]) == 159
