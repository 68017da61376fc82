"""The downstream peer benchmark's own machinery (benchmarks/bench_peers_downstream.py).

The helpers (leak assertion, training-only scaling, the from-scratch training loop, the
table) are tested with a tiny stand-in model; the braindecode builders only where
braindecode is installed (skipped otherwise).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bpd = pytest.importorskip("bench_peers_downstream")

from megfm.data.geometry import SensorGeometry  # noqa: E402
from megfm.data.windows import Windows  # noqa: E402


def _windows(n_subjects=6, per_subject=4, n_sensors=6, n_times=40, seed=0) -> Windows:
    """Planted effect: migraine windows have a larger amplitude; two sensor types."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"s{i}" for i in range(n_subjects)], per_subject)
    labels = np.array(["migraine" if int(s[1:]) % 2 else "HC" for s in subjects])
    types = np.array([0, 1] * (n_sensors // 2))
    data = rng.normal(size=(len(subjects), n_sensors, n_times))
    data *= np.where(labels == "migraine", 3.0, 1.0)[:, None, None]
    data *= np.where(types == 0, 100.0, 1.0)[None, :, None]  # fT vs fT/cm-like scales
    pos = 0.1 * rng.normal(size=(n_sensors, 3))
    geom = SensorGeometry(names=[f"M{i}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=types)
    return Windows(data=data.astype(np.float32), sfreq=100.0, geometries=[geom],
                   metadata={"subject": subjects, "label": labels,
                             "state": np.array(["rest"] * len(subjects))})


class _Power(nn.Module):
    """Logits from the log mean power: a stand-in peer that can learn the planted effect."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, x):
        return self.lin(torch.log((x ** 2).mean(dim=(1, 2)))[:, None])


def _call(m, b):
    return m(b["x"])


def test_assert_subject_split_catches_a_shared_subject():
    subjects = np.array(["a", "a", "b", "b", "c"])
    bpd.assert_subject_split(subjects, np.array([0, 1]), np.array([2, 3, 4]))  # clean
    with pytest.raises(AssertionError, match=r"subjects \['a'\] in both"):
        bpd.assert_subject_split(subjects, np.array([0, 2]), np.array([1]))


def test_type_scales_use_training_windows_only():
    win = _windows()
    train = np.flatnonzero(win.metadata["label"] == "HC")
    scale = bpd.type_scales(win, train, seed=0)
    types = np.asarray(win.geometries[0].types)
    for t in (0, 1):
        expected = win.data[train][:, types == t].std()
        np.testing.assert_allclose(scale[types == t], expected, rtol=1e-5)
    # HC windows only: 100x between the types, no trace of the 3x migraine amplitude
    assert 80 < scale[types == 0][0] / scale[types == 1][0] < 120
    assert scale[types == 1][0] < 1.3


def test_lr_schedule_warms_up_then_decays_to_zero():
    f = bpd._lr_lambda(20)
    values = [f(i) for i in range(20)]
    assert values[0] == pytest.approx(0.5) and values[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[1:], values[2:], strict=False))
    assert f(20) == pytest.approx(0.0, abs=1e-9)


def test_train_and_predict_learn_a_planted_effect():
    torch.manual_seed(0)
    win = _windows()
    subjects = win.metadata["subject"]
    train = np.flatnonzero(np.isin(subjects, ["s0", "s1", "s2", "s3"]))
    test = np.flatnonzero(np.isin(subjects, ["s4", "s5"]))
    y = (win.metadata["label"][train] == "migraine").astype(np.int64)
    scale = bpd.type_scales(win, train)
    model = _Power()
    info = bpd.train_window_classifier(model, _call, win, train, y, steps=60, batch_size=8,
                                       lr=0.1, seed=0, scale=scale)
    assert info["loss_last"] < info["loss_first"]
    proba = bpd.predict_windows(model, _call, win, test, scale, batch_size=3)
    assert proba.shape == (len(test),) and np.all((proba >= 0) & (proba <= 1))
    is_migraine = win.metadata["label"][test] == "migraine"
    assert proba[is_migraine].mean() > 0.5 > proba[~is_migraine].mean()


def test_training_refuses_a_single_class():
    win = _windows()
    train = np.flatnonzero(win.metadata["label"] == "HC")
    with pytest.raises(ValueError, match="single class"):
        bpd.train_window_classifier(_Power(), _call, win, train, np.zeros(len(train), np.int64),
                                    steps=1, batch_size=2, lr=0.1, seed=0,
                                    scale=np.ones(6, np.float32))


def test_markdown_table_lists_every_row_and_the_reason_of_a_missing_peer():
    ci = {"value": 0.75, "ci_low": 0.5, "ci_high": 1.0}
    result = {"task": "migraine-vs-HC", "device": "CPU", "braindecode": "1.8.1",
              "cohort": {"n_subjects": 4, "subjects_per_class": {"HC": 2, "migraine": 2},
                         "n_windows": 8, "n_sensors": 306, "n_times": 200},
              "training": {"steps": 5, "batch_size": 4}, "folds": [{}, {}],
              "n_permutations": 10, "n_bootstrap": 10, "seconds": 1.0,
              "rows": [{"method": "megfm frozen", "params": 50_000, "auroc": ci,
                        "balanced_accuracy": ci, "p_vs_megfm_frozen": None,
                        "p_vs_megfm_finetuned": 0.25, "note": ""},
                       {"method": "Labram", "params": None, "auroc": None,
                        "balanced_accuracy": None, "p_vs_megfm_frozen": None,
                        "p_vs_megfm_finetuned": None, "note": "cannot take 306 sensors"}]}
    text = bpd.markdown_table(result)
    assert "| megfm frozen | 0.05M | 0.750 [0.500, 1.000] |" in text
    assert "| - | 0.250 |" in text
    assert "| Labram | - | - | - | - | - | cannot take 306 sensors |" in text
    assert "2 subject-level folds" in text


def test_peer_builders_at_meg_size():
    # find_spec first: without braindecode, leave sys.path alone (no torchaudio stand-in)
    if importlib.util.find_spec("braindecode") is None \
            or bpd.bench_peers._braindecode_available() is None:
        pytest.skip("braindecode not installed")
    with pytest.raises(bpd.bench_peers._CannotTake, match="vocabulary"):
        bpd.build_peer("Labram", 306, 200, 200.0, seed=0)
    a, call = bpd.build_peer("LUNA", 306, 200, 200.0, seed=0)
    b, _ = bpd.build_peer("LUNA", 306, 200, 200.0, seed=0)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)  # seeded: the same initial weights in every fold
    batch = {"x": torch.randn(2, 306, 200), "pos": 0.1 * torch.randn(2, 306, 3)}
    with torch.no_grad():
        assert call(a, batch).shape == (2, 2)
    assert bpd.bench_peers.N_TIMES == 800  # the builders' global size is restored
