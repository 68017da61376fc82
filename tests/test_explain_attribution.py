"""Gradient attribution: linear heads, gradient x input, integrated gradients, Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from test_explain_attention import TinyModel, helmet_geometry, make_windows

from megfm.explain import (
    Attribution,
    EncoderClassifier,
    LinearHead,
    attribute,
    grad_cam,
    gradient_x_input,
    integrated_gradients,
)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(1)
    head = LinearHead(torch.randn(2, 8).numpy(), [0.1, -0.1])
    return EncoderClassifier(TinyModel(), head)


@pytest.fixture(scope="module")
def windows():
    return make_windows(helmet_geometry(16), {"auditory": 4, "rest": 11}, n_per_state=2)


def _logits(classifier, windows, x):
    from megfm.data import windows_batch

    t = windows_batch(windows, np.arange(windows.n_windows))
    with torch.no_grad():
        return classifier(torch.as_tensor(x), t.pos, t.ori, t.sensor_type, t.sensor_mask).numpy()


def test_linear_head_from_sklearn_matches_decision_function():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 5)) * [1, 2, 3, 4, 5] + 3
    y = (emb[:, 0] + rng.standard_normal(40) > 3).astype(int)
    for est in (LogisticRegression().fit(emb, y),
                make_pipeline(StandardScaler(), LogisticRegression()).fit(emb, y)):
        head = LinearHead.from_sklearn(est)
        logits = head(torch.as_tensor(emb, dtype=torch.float32)).detach().numpy()
        np.testing.assert_allclose(logits[:, 1] - logits[:, 0], est.decision_function(emb),
                                   rtol=1e-4, atol=1e-4)
        assert head.classes == [0, 1]
    y3 = rng.integers(0, 3, 40)
    est3 = LogisticRegression().fit(emb, y3)
    logits = LinearHead.from_sklearn(est3)(torch.as_tensor(emb, dtype=torch.float32))
    np.testing.assert_allclose(logits.detach().numpy(), est3.decision_function(emb), atol=1e-4)


def test_non_differentiable_classifier_is_refused(windows):
    logreg = LogisticRegression()
    with pytest.raises(TypeError, match=r"LinearHead.from_sklearn\(logreg\)"):
        integrated_gradients(logreg, windows)
    with pytest.raises(TypeError, match="linear-head path"):
        EncoderClassifier(TinyModel(), logreg)
    with pytest.raises(TypeError, match="no 'coef_'"):
        LinearHead.from_sklearn(object())


def test_gradient_x_input_peaks_at_the_signal_sensor(classifier, windows):
    attr = gradient_x_input(classifier, windows, target=1)
    assert isinstance(attr, Attribution)
    assert attr.values.shape == windows.data.shape
    np.testing.assert_array_equal(attr.target, 1)
    per_sensor = attr.to_sensors()
    assert per_sensor.shape == (windows.n_windows, 16)
    np.testing.assert_array_equal(per_sensor[:2].argmax(axis=1), 4)
    np.testing.assert_array_equal(per_sensor[2:].argmax(axis=1), 11)
    assert attr.to_time().shape == (windows.n_windows, windows.n_times)
    weights, geometry = attr.sensor_map(windows.metadata["state"] == "auditory")
    assert weights.sum() == pytest.approx(1.0)
    assert geometry.names[int(np.argmax(weights))] == geometry.names[4]


def test_integrated_gradients_completeness(classifier, windows):
    windows = windows[[0, 3]]
    attr = integrated_gradients(classifier, windows, target=0, n_steps=256)
    gap = _logits(classifier, windows, windows.data)[:, 0] - _logits(
        classifier, windows, np.zeros_like(windows.data))[:, 0]
    np.testing.assert_allclose(attr.values.sum(axis=(1, 2)), gap, rtol=0.01, atol=1e-3)


def test_integrated_gradients_noise_baseline_is_seeded(classifier, windows):
    a = integrated_gradients(classifier, windows, baseline="noise", n_steps=4, seed=3)
    b = integrated_gradients(classifier, windows, baseline="noise", n_steps=4, seed=3)
    c = integrated_gradients(classifier, windows, baseline="noise", n_steps=4, seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)


def test_bands_partition_sums_to_total(classifier, windows):
    attr = integrated_gradients(classifier, windows, n_steps=4)
    nyquist = windows.sfreq / 2
    bands = attr.to_bands({"low": (0.0, 8.0), "mid": (8.0, 12.0), "high": (12.0, nyquist + 1)})
    total = sum(bands.values())
    np.testing.assert_allclose(total, attr.values.sum(axis=2), rtol=1e-4, atol=1e-5)
    # the planted 10 Hz sine: the 8-12 Hz band carries most of the hot sensor's attribution
    assert np.all(np.abs(bands["mid"][:2, 4]) > np.abs(bands["low"][:2, 4]))
    defaults = attr.to_bands()
    assert set(defaults) == {"delta", "theta", "alpha", "beta", "gamma"}
    with pytest.raises(ValueError, match="fmin < fmax"):
        attr.to_bands({"bad": (10.0, 5.0)})


def test_grad_cam_maps_tokens_to_sensors(classifier, windows):
    attr = grad_cam(classifier, windows)
    n_patches = windows.n_times // classifier.model.patch
    assert attr.values.shape == (windows.n_windows, 16, n_patches)
    assert np.all(attr.values >= 0)
    logits = _logits(classifier, windows, windows.data)
    np.testing.assert_array_equal(attr.target, logits.argmax(axis=1))
    nonzero = attr.to_sensors().sum(axis=1) > 0
    assert nonzero.any()
    peaks = attr.to_sensors().argmax(axis=1)
    expected = np.where(windows.metadata["state"] == "auditory", 4, 11)
    np.testing.assert_array_equal(peaks[nonzero], expected[nonzero])
    with pytest.raises(ValueError, match="input-level method"):
        attr.to_bands()


def test_grad_cam_needs_tokens_and_bad_arguments(classifier, windows):
    class Plain(torch.nn.Module):
        def forward(self, x, pos, ori, sensor_type, sensor_mask):
            return x.mean(dim=(1, 2))[:, None].repeat(1, 2)

    with pytest.raises(TypeError, match="forward_tokens"):
        grad_cam(Plain(), windows)
    attr = attribute(Plain(), windows, method="gradient_x_input", target=0)
    np.testing.assert_allclose(attr.values, windows.data / windows.data[0].size, rtol=1e-5)
    with pytest.raises(ValueError, match="'method'"):
        attribute(classifier, windows, method="lime")
    with pytest.raises(ValueError, match="'target'"):
        gradient_x_input(classifier, windows, target=5)
    with pytest.raises(ValueError, match="'n_steps'"):
        integrated_gradients(classifier, windows, n_steps=0)
    with pytest.raises(ValueError, match="'baseline'"):
        integrated_gradients(classifier, windows, baseline="mean")
