"""MNE objects in: mne.Epochs and mne.io.Raw -> Windows, and through every entry point."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch

import megfm
from megfm.data.from_mne import as_windows, windows_from_mne
from megfm.data.prepare import prepare
from megfm.data.preprocess import PreprocessConfig

SFREQ = 200.0
PATCH = 40  # the tiny preset's patch_samples


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A simulated auditory recording (Vectorview, 200 Hz, tones = code 1 on STI 014)."""
    root = tmp_path_factory.mktemp("cohort")
    result = megfm.simulate_cohort(root, 1, states=["auditory"], duration=20.0, sfreq=SFREQ,
                                   block_size=8, seed=1)
    return result["recordings"][0]["path"]


@pytest.fixture(scope="module")
def raw(recording):
    return mne.io.read_raw_fif(recording, preload=True, verbose=False)


@pytest.fixture(scope="module")
def epochs(raw):
    events = mne.find_events(raw, verbose=False)
    events[1::2, 2] = 7  # two conditions
    return mne.Epochs(raw, events, event_id={"tone": 1, "deviant": 7}, tmin=-0.2, tmax=0.5,
                      baseline=(None, 0), preload=True, verbose=False)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = megfm.MaskedSignalModel(megfm.ModelConfig.preset("tiny")).eval()
    assert net.config.patch_samples == PATCH and net.config.sfreq == SFREQ
    return net


def test_epochs_become_windows_one_per_epoch(epochs, raw):
    w = windows_from_mne(epochs, sfreq=SFREQ, patch_samples=PATCH)
    # MNE's tmax is inclusive: 141 samples, cut to the largest multiple of the patch
    assert len(epochs.times) == 141 and w.n_times == 120
    assert w.n_windows == len(epochs) and w.sfreq == SFREQ
    meg = mne.pick_types(epochs.info, meg=True, ref_meg=False, exclude=[])
    assert w.geometry.names == [epochs.ch_names[i] for i in meg]
    # data in fT and fT/cm, the epochs as made (their baseline kept)
    types = epochs.get_channel_types(picks=meg)
    scale = np.where(np.array(types) == "mag", 1e15, 1e13)[:, None]
    expected = epochs.get_data(picks=meg)[:, :, :120] * scale
    np.testing.assert_allclose(w.data, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    meta = w.metadata
    codes = epochs.events[:, 2]
    np.testing.assert_array_equal(meta["event"], codes)
    assert meta["state"].tolist() == ["tone" if c == 1 else "deviant" for c in codes]
    np.testing.assert_array_equal(meta["repetition"][codes == 7], np.arange((codes == 7).sum()))
    np.testing.assert_allclose(meta["onset"], epochs.events[:, 0] / SFREQ - 0.2)
    assert w.info["source"] == "mne.Epochs" and w.info["event_id"] == {"tone": 1, "deviant": 7}
    # epochs not loaded yet: their rejection applies on the way, the caller's stay lazy
    lazy = mne.Epochs(raw, epochs.events, event_id=epochs.event_id, tmin=-0.2, tmax=0.5,
                      baseline=(None, 0), reject={"mag": 1.0}, preload=False, verbose=False)
    np.testing.assert_array_equal(windows_from_mne(lazy, patch_samples=PATCH).data, w.data)
    assert not lazy.preload
    strict = mne.Epochs(raw, epochs.events, tmin=-0.2, tmax=0.5, reject={"mag": 1e-15},
                        preload=False, verbose=False)
    with pytest.raises(ValueError, match=r"^No epochs left \(all were dropped"), \
            pytest.warns(RuntimeWarning, match="All epochs were dropped"):
        windows_from_mne(strict)
    # an explicit state and a shorter window
    short = windows_from_mne(epochs, state="auditory", window_seconds=0.4, patch_samples=PATCH)
    assert short.n_times == 80 and set(short.metadata["state"]) == {"auditory"}


def test_embed_epochs_straight_to_features(model, epochs):
    X, meta = megfm.embed(model, epochs, progress=False)
    assert X.shape == (len(epochs), model.config.dim) and np.isfinite(X).all()
    assert set(meta["state"]) == {"tone", "deviant"}
    windows = windows_from_mne(epochs, sfreq=SFREQ, patch_samples=PATCH)
    direct, _ = megfm.embed(model, windows, progress=False)
    np.testing.assert_array_equal(X, direct)
    # Embedder: fit on epochs, transform epochs -> the same features
    emb = megfm.Embedder(model).fit(epochs)
    np.testing.assert_allclose(emb.transform(epochs), X, rtol=1e-5, atol=1e-6)


def test_embed_raw_equals_embed_of_the_prepared_store(model, raw, recording, tmp_path):
    """A Raw goes through megfm's own preprocessing: the features of a store of it."""
    X, meta = megfm.embed(model, raw, progress=False)
    prepare(recording, tmp_path / "store", state="rest", window_seconds=2.0, progress=False)
    Xs, meta_s = megfm.embed(model, tmp_path / "store", progress=False)
    np.testing.assert_array_equal(X, Xs)
    np.testing.assert_array_equal(meta["onset"], meta_s["onset"])
    assert set(meta["state"]) == {"rest"}
    # event-locked windows of a Raw
    w = windows_from_mne(raw, sfreq=SFREQ, patch_samples=PATCH, window_seconds=0.6,
                         event_id={"tone": 1}, tmin=-0.2)
    assert set(w.metadata["event"]) == {1} and set(w.metadata["state"]) == {"task"}


def test_attention_maps_and_attribution_take_epochs(model, epochs):
    from megfm.explain import EncoderClassifier, LinearHead, attention_maps, gradient_x_input

    maps = attention_maps(model, epochs, rollout=False)
    assert set(maps.n_windows) == {("tone",), ("deviant",)}
    assert sum(maps.n_windows.values()) == len(epochs)
    rng = np.random.default_rng(0)
    head = LinearHead(rng.normal(size=(2, model.config.dim)).astype(np.float32), [0.0, 0.0])
    attr = gradient_x_input(EncoderClassifier(model, head), epochs[:3], target=1)
    assert attr.values.shape == (3, len(maps.geometry.names), 120)
    assert np.abs(attr.values).sum() > 0


def test_other_inputs_pass_through(model, epochs):
    windows = windows_from_mne(epochs, sfreq=SFREQ, patch_samples=PATCH)
    assert as_windows(windows, model) is windows
    assert as_windows("some/store", model) == "some/store"


def test_wrong_rate_is_refused_with_the_fix(model, epochs, raw):
    fast = epochs.copy().resample(400.0, verbose=False)
    with pytest.raises(ValueError, match=r"^The data are sampled at 400 Hz but the model expects "
                                         r"200 Hz; resample them first: epochs.resample\(200\)"):
        megfm.embed(model, fast, progress=False)
    fast_raw = raw.copy().crop(0, 4).resample(400.0, verbose=False)
    with pytest.raises(ValueError, match=r"raw.resample\(200\)"):
        windows_from_mne(fast_raw, sfreq=SFREQ, patch_samples=PATCH, preprocess=False)
    with pytest.raises(ValueError, match=r"at 100 Hz but the model expects 200 Hz"):
        windows_from_mne(raw, sfreq=SFREQ, patch_samples=PATCH,
                         preprocess=PreprocessConfig(sfreq=100.0, h_freq=40.0))
    # without a preprocessing step of its own, the Raw at 400 Hz is resampled by megfm's
    w = windows_from_mne(fast_raw, sfreq=SFREQ, patch_samples=PATCH)
    assert w.sfreq == SFREQ and w.n_times == 400
    # a model at 100 Hz: below the default 80 Hz low-pass's reach, resampling low-passes
    slow = windows_from_mne(fast_raw, sfreq=100.0, patch_samples=20)
    assert slow.sfreq == 100.0 and slow.info["preprocess"]["h_freq"] is None


def test_bad_input_errors(model, epochs):
    eeg = mne.EpochsArray(np.zeros((2, 3, 100)), mne.create_info(3, SFREQ, "eeg"), verbose=False)
    with pytest.raises(ValueError, match=r"^The epochs have no MEG channels"):
        megfm.embed(model, eeg, progress=False)
    with pytest.raises(ValueError, match=r"do not split into the model's patches of 40"):
        windows_from_mne(epochs, sfreq=SFREQ, patch_samples=PATCH, n_samples=100)
    with pytest.raises(ValueError, match=r"do not fit epochs of 141 samples"):
        windows_from_mne(epochs, n_samples=200)
    with pytest.raises(TypeError, match=r"'preprocess' applies to a continuous recording only"):
        windows_from_mne(epochs, preprocess=PreprocessConfig())
    with pytest.raises(TypeError, match=r"expected mne.Epochs or mne.io.Raw; got ndarray"):
        windows_from_mne(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match=r"Cannot read the sampling rate and patch length of a "
                                        r"Linear"):
        as_windows(epochs, torch.nn.Linear(2, 2))


def test_real_recordings(real_file, model):
    """Real Vectorview and CTF epochs (resampled to the model's rate) go to features."""
    vv = mne.io.read_raw_fif(real_file("vectorview"), preload=True, verbose=False)
    epochs = mne.make_fixed_length_epochs(vv, duration=0.4, preload=True, verbose=False)
    with pytest.raises(ValueError, match=r"sampled at 300.307 Hz .* epochs.resample\(200\)"):
        megfm.embed(model, epochs, progress=False)
    X, _ = megfm.embed(model, epochs.resample(SFREQ, verbose=False), progress=False)
    assert X.shape == (len(epochs), model.config.dim) and np.isfinite(X).all()
    w = windows_from_mne(vv, sfreq=SFREQ, patch_samples=PATCH, window_seconds=0.4)
    assert w.geometry.n_sensors == 306 and w.n_times == 80 and len(w) >= 2
    ctf = mne.io.read_raw_fif(real_file("ctf275"), preload=True, verbose=False)
    ctf_epochs = mne.make_fixed_length_epochs(ctf, duration=0.5, preload=True, verbose=False)
    w = windows_from_mne(ctf_epochs.resample(SFREQ, verbose=False), patch_samples=PATCH)
    assert w.geometry.n_sensors == len(mne.pick_types(ctf.info, meg=True, ref_meg=False))
    assert np.isfinite(megfm.embed(model, w, progress=False)[0]).all()
