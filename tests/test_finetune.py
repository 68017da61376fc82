"""Fine-tuning: learns a planted effect, freezing works, layer decay, study-runner method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import training_helpers as helpers
from torch import nn

from megfm.evaluate.finetune import (  # noqa: E402
    FinetuneModule,
    finetune,
    layer_ids,
    make_finetune_method,
    parse_task,
)


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


@pytest.fixture(scope="module")
def windows():
    """8 subjects; migraine subjects carry a strong 25 Hz rhythm."""
    w = helpers.tiny_windows(n_windows=48, n_subjects=8, seed=1)
    t = np.arange(w.n_times) / w.sfreq
    mig = w.metadata["label"] == "migraine"
    w.data[mig] += (150 * np.sin(2 * np.pi * 25 * t)).astype(np.float32)
    return w


@pytest.fixture(scope="module")
def model():
    return helpers.tiny_model(0)


def test_parse_task():
    assert parse_task("migraine-vs-HC", ["HC", "migraine", "PPTH"]) == ["HC", "migraine"]
    assert parse_task("multiclass", ["b", "a", "a"]) == ["a", "b"]
    with pytest.raises(ValueError, match="absent from the labels"):
        parse_task("APTH-vs-HC", ["HC", "migraine"])
    with pytest.raises(ValueError, match="'task'"):
        parse_task("migraine", ["HC", "migraine"])
    with pytest.raises(ValueError, match="at least two groups"):
        parse_task("multiclass", ["HC"])


def test_layer_ids_and_decay():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(2, 2)
            self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
            self.norm = nn.LayerNorm(2)
            self.decoder = nn.Linear(2, 2)

    ids, n_layers = layer_ids(Net())
    assert n_layers == 4
    assert ids["embed.weight"] == 0 and ids["blocks.0.weight"] == 1
    assert ids["blocks.2.bias"] == 3 and ids["norm.weight"] == 4
    assert "decoder.weight" not in ids


def test_finetune_learns_planted_effect(windows, model):
    subjects = sorted(set(windows.metadata["subject"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clf = finetune(model, windows, train_subjects=subjects[:6], val_subjects=subjects[6:],
                   max_steps=30, lr=1e-2, batch_size=36, seed=0, accelerator="cpu")
    assert clf.classes_ == ["HC", "migraine"]
    names, proba = clf.predict_proba_subjects(windows)
    assert proba.shape == (8, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    truth = np.array([int(s) % 2 for s in names])  # odd subjects are migraine
    assert (proba.argmax(1) == truth).all()
    # the caller's model is untouched; the fine-tuned encoder did change
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    tuned = clf.module.encoder.state_dict()
    assert any(not torch.equal(tuned[k], before[k]) for k in before)


def test_encoder_trains_in_train_mode_even_from_an_eval_mode_checkpoint(windows, model,
                                                                        monkeypatch):
    # a loaded checkpoint is in eval mode; dropout must still act while fine-tuning
    modes = []
    step = FinetuneModule.training_step

    def recording_step(self, batch, batch_idx):
        modes.append((self.encoder.training,
                      all(m.training for m in self.encoder.modules())))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(FinetuneModule, "training_step", recording_step)
    model.eval()
    subjects = sorted(set(windows.metadata["subject"]))
    finetune(model, windows, train_subjects=subjects[:6], max_steps=2, seed=0,
             accelerator="cpu")
    assert modes == [(True, True)] * 2
    assert not model.training  # the caller's model keeps its mode


@pytest.mark.parametrize("kw", [{"linear_probe": True}, {"freeze_encoder": True}])
def test_frozen_encoder_stays_frozen(windows, model, kw):
    subjects = sorted(set(windows.metadata["subject"]))
    clf = finetune(model, windows, train_subjects=subjects[:6], max_steps=5, seed=0,
                   accelerator="cpu", **kw)
    for k, v in model.state_dict().items():
        assert torch.equal(clf.module.encoder.state_dict()[k], v)
    assert isinstance(clf.module.head, nn.Linear) == bool(kw.get("linear_probe"))


def test_finetune_method_for_study_runner(windows, model):
    subj = windows.metadata["subject"]
    train = np.flatnonzero(~np.isin(subj, ["00", "01"]))
    test = np.flatnonzero(np.isin(subj, ["00", "01"]))[::-1]
    method = make_finetune_method(model, windows, max_steps=30, lr=1e-2, batch_size=40, seed=0,
                                  accelerator="cpu")
    scores = method(train, test)
    assert scores.shape == (len(test),)
    migraine = windows.metadata["label"][test] == "migraine"
    assert scores[migraine].mean() > scores[~migraine].mean()
    with pytest.raises(ValueError, match="both the training and the test fold"):
        method(np.arange(10), np.arange(5, 15))
    with pytest.raises(TypeError, match="unexpected keyword"):
        make_finetune_method(model, windows, epochs=3)


def test_finetune_errors(windows, model):
    with pytest.raises(ValueError, match="both train_subjects and val_subjects"):
        finetune(model, windows, train_subjects=["00"], val_subjects=["00"])
    with pytest.raises(ValueError, match="no windows in the store"):
        finetune(model, windows, train_subjects=["99"])
    with pytest.raises(ValueError, match="absent from the labels"):
        finetune(model, windows, train_subjects=["00", "02"], max_steps=1)
    with pytest.raises(ValueError, match="'layer_decay'"):
        finetune(model, windows, train_subjects=["00", "01"], layer_decay=0)
    assert FinetuneModule(model, 3).head[-1].out_features == 3
