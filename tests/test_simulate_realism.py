"""Simulator realism: spectra, evoked topographies, and recoverable planted effects."""

from __future__ import annotations

import csv
import json

import mne
import numpy as np
import pytest

from megfm.simulate import simulate_cohort

COHORT = dict(n_subjects=8, groups=["HC", "migraine"], array="kit160", duration=60.0,
              sfreq=200.0, block_size=10, seed=0, verbose=False)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    out = {}
    for scale in (2.0, 0.0):
        path = tmp_path_factory.mktemp(f"scale{scale:g}")
        simulate_cohort(path, effect_scale=scale, **COHORT)
        out[scale] = path
    return out


def _participants(path):
    with open(path / "participants.tsv", encoding="utf-8") as fid:
        return list(csv.DictReader(fid, delimiter="\t"))


def _read(path, sub, state):
    return mne.io.read_raw_fif(path / f"{sub}_task-{state}_raw.fif", verbose=False)


def _head_positions(raw, names):
    picks = mne.pick_channels(raw.ch_names, names, ordered=True)
    pos = np.array([raw.info["chs"][p]["loc"][:3] for p in picks])
    return mne.transforms.apply_trans(raw.info["dev_head_t"], pos)


def _snr_peak(raw, event_id, window):
    """Channel with the largest evoked power in ``window`` relative to its baseline."""
    events = mne.find_events(raw, stim_channel="STI 014", verbose=False)
    epochs = mne.Epochs(raw, events, event_id, -0.45, 0.3, baseline=(None, 0), picks="meg",
                        preload=True, verbose=False)
    evoked = epochs.average()
    t = evoked.times
    win = (t >= window[0]) & (t <= window[1])
    snr = (evoked.data[:, win] ** 2).mean(1) / evoked.data[:, t < 0].var(1)
    best = int(np.argmax(snr))
    latency = t[win][np.argmax(np.abs(evoked.data[best, win]))]
    return evoked.ch_names[best], float(latency), float(snr[best])


def test_rest_psd_has_1_over_f_and_alpha_peak(cohorts):
    path = cohorts[2.0]
    for row in _participants(path)[:4]:
        raw = _read(path, row["participant_id"], "rest").pick("meg")
        psd = raw.compute_psd(fmin=1.0, fmax=45.0, n_fft=800, verbose=False)
        freqs, power = psd.freqs, psd.get_data().mean(0)
        # 1/f: the spectrum outside the rhythms falls with frequency, slope < 0 in log-log
        fit = (freqs >= 15) & (freqs <= 45)
        slope = np.polyfit(np.log(freqs[fit]), np.log(power[fit]), 1)[0]
        assert -3.0 < slope < -0.3
        # the alpha peak is at the subject's alpha frequency and stands above the 1/f trend
        band = (freqs >= 7) & (freqs <= 14)
        peak = freqs[band][np.argmax(power[band])]
        assert abs(peak - float(row["alpha_peak_hz"])) <= 1.0
        trend = np.exp(np.polyval(np.polyfit(np.log(freqs[fit]), np.log(power[fit]), 1),
                                  np.log(peak)))
        assert power[band].max() > 3 * trend


def test_evoked_maxima_in_expected_areas(cohorts):
    path = cohorts[2.0]
    truth = json.loads((path / "ground_truth.json").read_text())
    for row in _participants(path)[:3]:
        sub = row["participant_id"]
        raw = _read(path, sub, "auditory")
        name, latency, snr = _snr_peak(raw, 1, (0.08, 0.12))
        assert snr > 5
        assert name in truth["expected_sensors"]["auditory"]
        x, _, z = _head_positions(raw, [name])[0]
        assert abs(x) > 0.05 and z < 0.11  # over a temporal lobe, not the vertex
        assert 0.08 <= latency <= 0.12  # M100
        raw = _read(path, sub, "somatosensory")
        name, latency, snr = _snr_peak(raw, 2, (0.01, 0.07))
        assert snr > 3
        # left (contralateral to the stimulated right hand) or midline, central, and next to
        # the sensors the ground truth expects (head position and noise move the maximum)
        pos = _head_positions(raw, [name])[0]
        assert pos[0] < 0.01 and abs(pos[1]) < 0.05
        expected = _head_positions(raw, truth["expected_sensors"]["somatosensory"])
        assert np.linalg.norm(expected - pos, axis=1).min() < 0.05
        assert latency <= 0.06  # M20 / M50


def _subject_features(path, truth, sub):
    rest = _read(path, sub, "rest").pick("meg")
    psd = rest.compute_psd(fmin=1.0, fmax=40.0, n_fft=400, verbose=False)
    f, p = psd.freqs, psd.get_data()
    theta = float(np.log(p[:, (f >= 4) & (f <= 8)].mean(1) / p.mean(1)).mean())

    raw = _read(path, sub, "auditory")
    events = mne.find_events(raw, stim_channel="STI 014", verbose=False)
    picks = mne.pick_channels(raw.ch_names, truth["expected_sensors"]["auditory"])
    epochs = mne.Epochs(raw, events, 1, -0.1, 0.3, baseline=(None, 0), picks=picks,
                        preload=True, verbose=False)
    x = epochs.get_data()[:, :, (epochs.times > 0.08) & (epochs.times < 0.12)].mean(2)
    onsets = events[:, 0] / raw.info["sfreq"]
    block = np.concatenate([[0], np.cumsum(np.diff(onsets) > 2.5)])  # gap-based blocks
    topo = x.mean(0)
    amp = np.array([x[block == b].mean(0) @ topo for b in np.unique(block)]) / (topo @ topo)
    habituation = float(np.polyfit(np.arange(len(amp)), amp / amp[0], 1)[0])

    raw = _read(path, sub, "somatosensory")
    events = mne.find_events(raw, stim_channel="STI 014", verbose=False)
    picks = mne.pick_channels(raw.ch_names, truth["expected_sensors"]["somatosensory"])
    ev = {k: mne.Epochs(raw, events, k, -0.1, 0.1, baseline=(None, 0), picks=picks,
                        verbose=False).average() for k in (2, 3)}
    win = (ev[2].times > 0.01) & (ev[2].times < 0.07)
    first, second = ev[2].data[:, win].ravel(), ev[3].data[:, win].ravel()
    gating = float(second @ first / (first @ first))
    return dict(theta=theta, habituation=habituation, gating=gating)


def _group_means(path):
    truth = json.loads((path / "ground_truth.json").read_text())
    feats = {}
    for row in _participants(path):
        feats.setdefault(row["group"], []).append(
            _subject_features(path, truth, row["participant_id"]))
    return {g: {k: np.array([d[k] for d in v]) for k in v[0]} for g, v in feats.items()}


def test_planted_effects_recovered_and_absent_at_scale_zero(cohorts):
    planted = _group_means(cohorts[2.0])
    null = _group_means(cohorts[0.0])
    # controls are the same people whatever the scale (same seed)
    for key in ("theta", "habituation", "gating"):
        np.testing.assert_allclose(planted["HC"][key], null["HC"][key])
    diff = {k: planted["migraine"][k].mean() - planted["HC"][k].mean() for k in planted["HC"]}
    diff0 = {k: null["migraine"][k].mean() - null["HC"][k].mean() for k in null["HC"]}
    # planted direction: more theta, less habituation (flatter slope), weaker gating
    assert diff["theta"] > 0 and diff["habituation"] > 0 and diff["gating"] > 0
    for key in diff:
        # the planted shift dominates: the scale-0 difference is much smaller
        assert abs(diff0[key]) < 0.5 * diff[key], (key, diff0[key], diff[key])
    truth = json.loads((cohorts[0.0] / "ground_truth.json").read_text())
    assert truth["effects"] == []
