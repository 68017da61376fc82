"""Decision patterns: the sensors whose band power moves with a classifier's decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explain_attention import helmet_geometry
from torch import nn

from megfm.data.windows import Windows
from megfm.explain import DecisionPattern, class_contrast, decision_pattern, integrated_gradients

SFREQ = 100.0
N_TIMES = 100
EFFECT, CANCEL = 3, 9  # planted group effect / a sensor sharing only the subject's rhythm


class LogThetaHead(nn.Module):
    """Logit 1 = sum_s w_s * log theta power of sensor s (FFT bins 4-8 Hz); logit 0 = 0."""

    def __init__(self, weights, bias: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("w", torch.as_tensor(np.asarray(weights), dtype=torch.float32))
        self.bias = bias

    def forward(self, x, pos, ori, sensor_type, sensor_mask):
        spec = torch.fft.rfft(x, dim=-1)
        freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / SFREQ)
        keep = (freqs >= 4.0) & (freqs < 8.0)
        power = torch.log((spec[..., keep].abs() ** 2).sum(-1) + 1e-12)
        z = (power * self.w).sum(-1) + self.bias
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _cohort(n_subjects: int = 16, n_per_subject: int = 3, effect: float = 2.0,
            seed: int = 0) -> Windows:
    """Every subject has its own theta level (x0.5 to x2) at EFFECT and CANCEL; migraine
    subjects have ``effect`` times more theta amplitude at EFFECT."""
    rng = np.random.default_rng(seed)
    geom = helmet_geometry(16)
    t = np.arange(N_TIMES) / SFREQ
    data, labels, subjects = [], [], []
    for s in range(n_subjects):
        label = "migraine" if s % 2 else "HC"
        level = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        for _ in range(n_per_subject):
            w = rng.standard_normal((geom.n_sensors, N_TIMES)) * 0.3
            for sensor, amp in ((EFFECT, effect if label == "migraine" else 1.0), (CANCEL, 1.0)):
                w[sensor] += level * amp * np.sin(2 * np.pi * 6 * t + rng.uniform(0, 2 * np.pi))
            data.append(w)
            labels.append(label)
            subjects.append(f"{s:03d}")
    return Windows(data=np.array(data, np.float32), sfreq=SFREQ, geometries=[geom],
                   metadata={"label": np.array(labels), "subject": np.array(subjects)})


def _cancelling_head() -> LogThetaHead:
    # the Bayes-style decoder of this cohort: the effect sensor minus the sensor that
    # carries the subject's own theta level, which it subtracts to cancel it
    w = np.zeros(16)
    w[EFFECT], w[CANCEL] = 1.0, -1.0
    return LogThetaHead(w)


def test_pattern_peaks_at_the_effect_where_the_attribution_does_not():
    windows = _cohort()
    head = _cancelling_head()
    groups = windows.metadata["subject"]
    pattern = decision_pattern(head, windows, band=(4.0, 8.0), groups=groups)
    assert isinstance(pattern, DecisionPattern)
    assert pattern.values.shape == (16,) and pattern.power.shape == (16, 16)
    assert pattern.scores.shape == (16,) and list(pattern.units) == sorted(set(groups))
    assert int(np.nanargmax(pattern.values)) == EFFECT
    assert pattern.values[EFFECT] > 0.5 and pattern.values[CANCEL] < 0.2
    # the decoder weighs CANCEL as strongly as EFFECT, with the opposite sign
    attr = integrated_gradients(head, windows, target=1, n_steps=8)
    plain = class_contrast(attr, windows.metadata["label"], target="migraine",
                           band=(4.0, 8.0), groups=groups).plain
    assert plain[CANCEL] > 0.5 * plain[EFFECT]
    positive = pattern.positive()
    assert np.all(positive >= 0) and positive[EFFECT] == pattern.values[EFFECT]
    assert np.isclose(np.nansum(positive), np.nansum(np.clip(pattern.values, 0, None)))


def test_same_decisions_give_the_same_pattern_whatever_the_scale():
    windows = _cohort(seed=1)
    a = decision_pattern(_cancelling_head(), windows, groups=windows.metadata["subject"])
    w = np.zeros(16)
    w[EFFECT], w[CANCEL] = 3.0, -3.0
    b = decision_pattern(LogThetaHead(w, bias=5.0), windows,
                         groups=windows.metadata["subject"])
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    np.testing.assert_allclose(b.scores, 3.0 * a.scores + 5.0, rtol=1e-5)


def test_covariance_statistic_is_haufe_pattern_and_window_units():
    windows = _cohort(n_subjects=6, seed=2)
    pattern = decision_pattern(_cancelling_head(), windows, statistic="cov", band=(4.0, 8.0))
    assert len(pattern.units) == windows.n_windows  # no groups: windows are the units
    s, p = pattern.scores, pattern.power
    expected = ((p - p.mean(0)) * (s - s.mean())[:, None]).mean(0) / s.var()
    np.testing.assert_allclose(pattern.values, expected, rtol=1e-9)
    # the score is the log-odds: for two classes, logit 1 - logit 0
    assert np.allclose(s, p[:, EFFECT] - p[:, CANCEL], atol=1e-3)


def test_precomputed_scores_give_the_classifiers_pattern():
    windows = _cohort(seed=6)
    groups = windows.metadata["subject"]
    head = _cancelling_head()
    with torch.no_grad():
        logits = head(torch.as_tensor(windows.data), None, None, None, None).numpy()
    from_model = decision_pattern(head, windows, groups=groups)
    from_scores = decision_pattern(logits[:, 1] - logits[:, 0], windows, groups=groups)
    np.testing.assert_allclose(from_scores.values, from_model.values, atol=1e-5)
    for bad in (np.zeros(5), np.full(windows.n_windows, np.nan)):
        with pytest.raises(ValueError, match="Precomputed scores"):
            decision_pattern(bad, windows, groups=groups)


def test_windows_of_two_arrays_are_mapped_to_the_union_of_their_sensors():
    import dataclasses

    windows = _cohort(n_subjects=6, seed=7)
    geom = windows.geometries[0]
    other = dataclasses.replace(geom, names=["X"] + list(geom.names[1:]),
                                bads=np.zeros(geom.n_sensors, bool))
    recording = np.arange(windows.n_windows) % 2  # odd windows from the second array
    mixed = Windows(data=windows.data, sfreq=SFREQ, geometries=[geom, other],
                    metadata={**windows.metadata, "recording": recording})
    pattern = decision_pattern(_cancelling_head(), mixed, band=(4.0, 8.0))
    assert pattern.geometry.names == list(geom.names) + ["X"]
    x_col, first = 16, 0
    spec = np.abs(np.fft.rfft(windows.data[:, 0].astype(np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(N_TIMES, 1.0 / SFREQ)
    log_theta = np.log(spec[:, (freqs >= 4.0) & (freqs < 8.0)].sum(-1))
    odd = recording == 1
    np.testing.assert_allclose(pattern.power[odd, x_col], log_theta[odd], rtol=1e-9)
    np.testing.assert_allclose(pattern.power[~odd, first], log_theta[~odd], rtol=1e-9)
    assert np.isnan(pattern.power[~odd, x_col]).all() and np.isnan(pattern.power[odd, first]).all()
    assert np.isfinite(pattern.values).all()


def test_absent_sensors_are_nan():
    windows = _cohort(n_subjects=6, seed=3)
    windows.geometries[0].bads[5] = True
    pattern = decision_pattern(_cancelling_head(), windows, groups=windows.metadata["subject"])
    assert np.isnan(pattern.values[5]) and np.isnan(pattern.positive()[5])
    assert np.isfinite(np.delete(pattern.values, 5)).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"statistic": "t"}, "'statistic'"),
    ({"groups": np.array(["a"] * 5)}, "one entry per window"),
    ({"groups": np.array(["a", "b"] * 9)}, "at least three units"),
    ({"band": (60.0, 70.0)}, "holds no frequency"),
    ({"target": 2}, "not a class"),
])
def test_errors(kwargs, match):
    windows = _cohort(n_subjects=6, seed=4)
    with pytest.raises(ValueError, match=match):
        decision_pattern(_cancelling_head(), windows, **kwargs)


def test_a_constant_classifier_is_an_error():
    windows = _cohort(n_subjects=6, seed=5)
    with pytest.raises(ValueError, match="same decision score"):
        decision_pattern(LogThetaHead(np.zeros(16)), windows,
                         groups=windows.metadata["subject"])
