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


@pytest.mark.parametrize("options", [{}, {"leadfield_readout": True, "geometry_gain": True,
                                          "scale_feature": True}])
def test_layer_ids_are_declared_by_the_model_and_cover_the_encoder(options):
    from megfm.models import MaskedSignalModel, ModelConfig

    torch.manual_seed(0)
    net = MaskedSignalModel(ModelConfig.preset("tiny", **options))
    net.reset_head(2)
    ids, n_layers = layer_ids(net)
    depth = net.config.depth
    assert n_layers == depth + 1
    assert ids["patch_embed.weight"] == 0 and ids["latent_queries"] == 0
    assert ids["blocks.0.norm1.weight"] == 1 and ids[f"blocks.{depth - 1}.norm1.weight"] == depth
    assert ids["norm.weight"] == ids["head.weight"] == depth + 1
    # exactly the parameters that a classification loss reaches have a depth (the decoder
    # and its lead-field read-out have none; empty_latents stand in for a time patch with
    # no valid sensor, which this batch does not have)
    x, pos = torch.randn(2, 6, 400), 0.1 * torch.randn(2, 6, 3)
    ori = nn.functional.normalize(torch.randn(2, 6, 3), dim=-1)
    kinds, valid = torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool)
    net.forward_head(net.forward_features(x, pos, ori, kinds, valid), pre_logits=False) \
        .square().sum().backward()
    reached = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.any()}
    assert reached <= set(ids) and set(ids) - reached == {"empty_latents"}


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
