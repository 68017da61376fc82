"""Class-contrast sensor maps: the common part of the attribution cancels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explain_attention import helmet_geometry
from torch import nn

from megfm.data.windows import Windows
from megfm.explain import ClassContrast, class_contrast, integrated_gradients

SFREQ = 100.0
N_TIMES = 100
PLANTED, COMMON = 3, 9  # planted group effect (weak signal) / strong signal in everybody


class ThetaPowerHead(nn.Module):
    """Logit 1 = sum_s w_s * theta power of sensor s (FFT bins 4-8 Hz); logit 0 = 0."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("w", torch.as_tensor(weights, dtype=torch.float32))

    def forward(self, x, pos, ori, sensor_type, sensor_mask):
        spec = torch.fft.rfft(x, dim=-1)
        freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / SFREQ)
        keep = (freqs >= 4.0) & (freqs < 8.0)
        power = (spec[..., keep].abs() ** 2).sum(-1) / x.shape[-1] ** 2  # (B, S)
        z = (power * self.w).sum(-1)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _cohort(n_subjects: int = 8, n_per_subject: int = 3, migraine_amp: float = 2.0,
            seed: int = 0) -> Windows:
    """Half the subjects 'migraine' with a 6 Hz amplitude ``migraine_amp`` (1 in HC) at
    PLANTED; every subject has a ten times stronger 6 Hz rhythm at COMMON."""
    rng = np.random.default_rng(seed)
    geom = helmet_geometry(16)
    t = np.arange(N_TIMES) / SFREQ
    data, labels, subjects = [], [], []
    for s in range(n_subjects):
        label = "migraine" if s % 2 else "HC"
        for _ in range(n_per_subject):
            w = rng.standard_normal((geom.n_sensors, N_TIMES)) * 0.1
            w[COMMON] += 10.0 * np.sin(2 * np.pi * 6 * t + rng.uniform(0, 2 * np.pi))
            amp = migraine_amp if label == "migraine" else 1.0
            w[PLANTED] += amp * np.sin(2 * np.pi * 6 * t + rng.uniform(0, 2 * np.pi))
            data.append(w)
            labels.append(label)
            subjects.append(f"{s:03d}")
    return Windows(data=np.array(data, np.float32), sfreq=SFREQ, geometries=[geom],
                   metadata={"label": np.array(labels), "subject": np.array(subjects)})


@pytest.fixture(scope="module")
def attribution():
    windows = _cohort()
    weights = np.zeros(16)
    weights[[PLANTED, COMMON]] = 1.0
    return integrated_gradients(ThetaPowerHead(weights), windows, target=1, n_steps=8)


def test_contrast_peaks_at_planted_sensor_plain_map_does_not(attribution):
    labels = attribution.windows.metadata["label"]
    subjects = attribution.windows.metadata["subject"]
    for groups in (None, subjects):
        c = class_contrast(attribution, labels, target="migraine", band=(4.0, 8.0),
                           groups=groups)
        assert isinstance(c, ClassContrast)
        assert c.values.shape == c.plain.shape == (16,)
        assert c.geometry.names == attribution.windows.geometries[0].names
        assert np.nanargmax(c.plain) == COMMON  # the strong common rhythm dominates
        assert np.nanargmax(c.values) == PLANTED
        assert np.nanargmax(c.positive()) == PLANTED
        assert np.all(c.positive() >= 0)
        # quadratic head, zero baseline: IG = w * power = A^2 / 4; amplitude 2 vs 1 -> 3 / 4
        np.testing.assert_allclose(c.values[PLANTED], 0.75, rtol=0.1)
        assert abs(c.values[COMMON]) < 0.1 * c.values[PLANTED]
        np.testing.assert_allclose(c.values, c.target_mean - c.reference_mean)
        assert c.reference == ["HC"]
    assert (c.n_target, c.n_reference) == (4, 4)  # subjects, with groups
    c_win = class_contrast(attribution, labels, target="migraine", band=(4.0, 8.0))
    assert (c_win.n_target, c_win.n_reference) == (12, 12)  # windows
    # no group difference: the contrast is flat where the plain map is not
    null = _cohort(migraine_amp=1.0)
    weights = np.zeros(16)
    weights[[PLANTED, COMMON]] = 1.0
    attr0 = integrated_gradients(ThetaPowerHead(weights), null, target=1, n_steps=8)
    c0 = class_contrast(attr0, null.metadata["label"], target="migraine", band=(4.0, 8.0),
                        groups=null.metadata["subject"])
    assert np.nanmax(np.abs(c0.values)) < 0.2 * c.values[PLANTED]
    assert np.nanargmax(c0.plain) == COMMON


def test_contrast_on_arrays_known_answer():
    rng = np.random.default_rng(1)
    n = 40
    labels = np.array(["HC", "migraine"] * (n // 2))
    per = rng.normal(0.0, 0.01, (n, 5))
    per[:, 1] += 5.0  # the same in both classes
    per[labels == "migraine", 2] += 0.5
    c = class_contrast(per, labels, target="migraine")
    assert c.geometry is None
    assert np.argmax(c.plain) == 1 and np.argmax(c.values) == 2
    np.testing.assert_allclose(c.values[2], 0.5, atol=0.02)
    # absolute contrast of a negative attribution that grows in the target class
    c_abs = class_contrast(-per, labels, target="migraine", absolute=True)
    assert np.argmax(c_abs.values) == 2
    assert class_contrast(-per, labels, target="migraine").values[2] < 0
    # explicit reference class among three
    labels3 = np.array(["HC", "migraine", "PPTH", "HC"] * (n // 4))
    c3 = class_contrast(per, labels3, target="migraine", reference="PPTH")
    assert c3.reference == ["PPTH"] and c3.n_reference == n // 4


def test_plain_map_does_not_cancel_opposite_signs_within_a_subject():
    # every subject has windows of +3 and -3 at sensor 0: their mean is 0, their |a| is 3
    labels = np.array(["HC"] * 8 + ["migraine"] * 8)
    groups = np.repeat(np.arange(8), 2)
    per = np.zeros((16, 3))
    per[:, 0] = np.tile([3.0, -3.0], 8)
    per[:, 1] = 1.0
    c = class_contrast(per, labels, target="migraine", groups=groups)
    np.testing.assert_allclose(c.plain, [3.0, 1.0, 0.0])
    np.testing.assert_allclose(c.values, 0.0)


def test_reference_labels_are_matched_exactly_not_truncated():
    per = np.arange(12, dtype=float).reshape(6, 2)
    labels = np.array(["MIG", "CTL", "HC", "MIG", "CTL", "HC"])  # dtype <U3
    with pytest.raises(ValueError, match="No window has a reference label"):
        class_contrast(per, labels, target="MIG", reference="CTL_old")
    assert class_contrast(per, labels, target="MIG", reference="CTL").n_reference == 2
    ints = np.array([1, 0, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="No window has a reference label"):
        class_contrast(per, ints, target=1, reference=0.7)


def test_contrast_bad_input(attribution):
    labels = attribution.windows.metadata["label"]
    with pytest.raises(ValueError, match="one entry per window"):
        class_contrast(attribution, labels[:-1], target="migraine")
    with pytest.raises(ValueError, match="No window has the target label 'PTH'"):
        class_contrast(attribution, labels, target="PTH")
    with pytest.raises(ValueError, match="No window has a reference label"):
        class_contrast(attribution, labels, target="migraine", reference="PPTH")
    with pytest.raises(ValueError, match="different labels"):
        class_contrast(attribution, labels, target="migraine",
                       groups=np.zeros(len(labels), int))
    with pytest.raises(ValueError, match="'band' needs an Attribution"):
        class_contrast(np.ones((4, 3)), np.array(["a", "b"] * 2), target="a", band=(4, 8))
    with pytest.raises(ValueError, match=r"shape \(n_windows, n_sensors\)"):
        class_contrast(np.ones(4), np.array(["a", "b"] * 2), target="a")
    mixed = integrated_gradients(ThetaPowerHead(np.ones(16)), attribution.windows,
                                 target=np.arange(len(labels)) % 2, n_steps=2)
    with pytest.raises(ValueError, match="target=1"):
        class_contrast(mixed, labels, target="migraine")


def _subject_table(n_per_class: int, n_sensors: int, *, noisy_sd: float, effect: float,
                   seed: int, n_windows: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window sensor values: sensor 0 has a huge between-subject spread and no group
    effect, sensor 1 a small but consistent migraine effect, the others neither."""
    rng = np.random.default_rng(seed)
    rows, labels, subjects = [], [], []
    for s in range(2 * n_per_class):
        label = "migraine" if s % 2 else "HC"
        level = rng.normal(0.0, 0.1, n_sensors)  # between-subject spread
        level[0] = rng.normal(0.0, noisy_sd)
        level[1] += effect if label == "migraine" else 0.0
        for _ in range(n_windows):
            rows.append(level + rng.normal(0.0, 0.05, n_sensors))
            labels.append(label)
            subjects.append(s)
    return np.array(rows), np.array(labels), np.array(subjects)


def test_t_map_peaks_at_consistent_effect_difference_map_at_noisy_sensor():
    from scipy import stats

    per, labels, subjects = _subject_table(6, 8, noisy_sd=10.0, effect=0.5, seed=3)
    diff = class_contrast(per, labels, target="migraine", groups=subjects)
    t = class_contrast(per, labels, target="migraine", groups=subjects, statistic="t")
    assert diff.statistic == "difference" and diff.dof is None
    assert t.statistic == "t" and t.values.shape == t.dof.shape == (8,)
    # the noisy sensor's chance difference of means beats the true effect of 0.5 ...
    assert np.argmax(diff.positive()) == 0 and diff.values[0] > 1.0
    np.testing.assert_allclose(diff.values[1], 0.5, atol=0.15)
    # ... but relative to its own between-subject spread it is nothing; the effect is large
    assert np.argmax(t.positive()) == 1
    assert t.values[1] > 5.0 and abs(t.values[0]) < 2.0
    assert np.all(t.positive() >= 0)
    # the class means are the same in both statistics; the t values are Welch's
    np.testing.assert_allclose(t.target_mean, diff.target_mean)
    subj_means = np.stack([per[subjects == s].mean(axis=0) for s in np.unique(subjects)])
    subj_labels = np.array([labels[subjects == s][0] for s in np.unique(subjects)])
    ref = stats.ttest_ind(subj_means[subj_labels == "migraine"], subj_means[subj_labels == "HC"],
                          equal_var=False)
    np.testing.assert_allclose(t.values, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(t.dof, ref.df, rtol=1e-10)


def test_t_map_under_no_effect_stays_within_t_distribution():
    # 40 sensors of very different between-subject spreads, 8 subjects per class, no effect:
    # the difference map is dominated by the high-variance sensors, the t map is not.
    n_sensors = 40
    maxima, argmax_diff = [], []
    for seed in range(5):
        per, labels, subjects = _subject_table(8, n_sensors, noisy_sd=0.1, effect=0.0,
                                               seed=seed)
        scale = np.geomspace(0.1, 100.0, n_sensors)  # sensor s spreads scale[s] x more
        per = per * scale
        t = class_contrast(per, labels, target="migraine", groups=subjects, statistic="t")
        diff = class_contrast(per, labels, target="migraine", groups=subjects)
        maxima.append(np.max(np.abs(t.values)))
        argmax_diff.append(int(np.argmax(np.abs(diff.values))))
        # scaling a sensor does not change its t value
        t1 = class_contrast(per / scale, labels, target="migraine", groups=subjects,
                            statistic="t")
        np.testing.assert_allclose(t.values, t1.values, rtol=1e-8)
    # P(|t_14| > 6) ~ 3e-5 per sensor: the maximum of 40 sensors stays far below it
    assert max(maxima) < 6.0
    assert min(maxima) > 0.5  # a real statistic, not a collapsed one
    assert min(argmax_diff) >= n_sensors - 10  # the difference map picks the noisy sensors


def test_t_map_on_attribution_and_absent_sensors(attribution):
    labels = attribution.windows.metadata["label"]
    subjects = attribution.windows.metadata["subject"]
    t = class_contrast(attribution, labels, target="migraine", band=(4.0, 8.0),
                       groups=subjects, statistic="t")
    assert np.nanargmax(t.positive()) == PLANTED
    assert t.values[PLANTED] > 3.0
    # a sensor present in only one subject of a class has no t value
    per = np.random.default_rng(0).normal(size=(8, 3))
    lab = np.array(["HC", "migraine"] * 4)
    grp = np.arange(8)
    per[lab == "HC", 2] = np.nan
    per[0, 2] = 1.0
    t2 = class_contrast(per, lab, target="migraine", groups=grp, statistic="t")
    assert np.isnan(t2.values[2]) and np.isnan(t2.positive()[2])
    assert np.all(np.isfinite(t2.values[:2]))


def test_t_map_bad_input(attribution):
    labels = attribution.windows.metadata["label"]
    with pytest.raises(ValueError, match="statistic='t' needs 'groups'"):
        class_contrast(attribution, labels, target="migraine", statistic="t")
    with pytest.raises(ValueError, match="Unknown statistic 'z'"):
        class_contrast(attribution, labels, target="migraine", statistic="z")
    one_hc = np.array(["HC", "migraine", "migraine", "migraine"])
    with pytest.raises(ValueError, match="at least two subjects per class; got 3 .* and 1"):
        class_contrast(np.ones((4, 3)), one_hc, target="migraine", groups=np.arange(4),
                       statistic="t")
