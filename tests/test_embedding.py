"""Embeddings: embed(), aggregate_by_subject() (and its wide twin), the Embedder transformer and `megfm embed`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import training_helpers as helpers
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from megfm.data import SensorGeometry  # noqa: E402
from megfm.embedding import Embedder, aggregate_by_subject, embed  # noqa: E402
from megfm.evaluate.classification import subject_state_matrix  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


def _model(**changes):
    return helpers.tiny_model(0, **changes)


@pytest.fixture(scope="module")
def windows():
    return helpers.tiny_windows(n_windows=24, n_subjects=6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _model().save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")


def test_embed_shapes_and_metadata(windows, checkpoint):
    feats, meta = embed(checkpoint, windows, batch_size=5, progress=False)
    assert feats.dtype == np.float32 and feats.shape[0] == 24 and feats.ndim == 2
    np.testing.assert_array_equal(meta["index"], np.arange(24))
    np.testing.assert_array_equal(meta["subject"], windows.metadata["subject"])
    # batching does not change the result; the model's pooled features are used
    feats2, _ = embed(checkpoint, windows, batch_size=24, progress=False)
    np.testing.assert_allclose(feats, feats2, rtol=1e-5, atol=1e-6)
    net = _model()
    batch = helpers.windows_batch(windows, [3])
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(**batch.inputs()))
    np.testing.assert_allclose(feats[3], ref[0].numpy(), rtol=1e-5, atol=1e-6)


def test_embed_indices_and_attention(windows):
    feats, meta = embed(_model(), windows, indices=[5, 1], pooling="attention", progress=False)
    assert feats.shape[0] == 2
    np.testing.assert_array_equal(meta["index"], [5, 1])
    full, _ = embed(_model(), windows, pooling="attention", progress=False)
    np.testing.assert_allclose(feats, full[[5, 1]], rtol=1e-5, atol=1e-6)
    mean, _ = embed(_model(), windows, pooling="mean", progress=False)
    assert not np.allclose(full, mean)


def test_state_concat_is_subject_level(windows):
    feats, meta = embed(_model(), windows, pooling="state_concat", progress=False)
    win, wmeta = embed(_model(), windows, pooling="mean", progress=False)
    dim = win.shape[1]
    assert feats.shape == (6, 2 * dim)  # 6 subjects x (auditory, rest)
    sel = (wmeta["subject"] == "02") & (wmeta["state"] == "rest")
    row = list(meta["subject"]).index("02")
    np.testing.assert_allclose(feats[row, dim:], win[sel].mean(0), rtol=1e-5)
    assert meta["n_windows_rest"][row] == sel.sum()
    assert meta["label"][row] == "HC"


def test_aggregate_by_subject(windows):
    feats = np.arange(24, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    agg, meta = aggregate_by_subject(feats, windows.metadata, per_state=True)
    assert agg.shape == (12, 3)
    i = np.flatnonzero((meta["subject"] == "01") & (meta["state"] == "auditory"))[0]
    expected = np.flatnonzero((windows.metadata["subject"] == "01")
                              & (windows.metadata["state"] == "auditory")).mean()
    assert agg[i, 0] == pytest.approx(expected)
    agg, meta = aggregate_by_subject(feats, windows.metadata, per_state=False)
    assert agg.shape == (6, 3) and set(meta["label"]) == {"HC", "migraine"}
    assert "state" not in meta and meta["n_windows"].sum() == 24
    with pytest.raises(ValueError, match="entries but features have"):
        aggregate_by_subject(feats[:5], windows.metadata)
    bad = dict(windows.metadata, label=np.where(np.arange(24) == 0, "HC", "migraine"))
    with pytest.raises(ValueError, match="several labels"):
        aggregate_by_subject(feats, bad)


def test_long_and_wide_subject_means_agree(windows):
    rng = np.random.default_rng(0)
    meta = windows.metadata
    # subject 01 loses its auditory windows: a missing (subject, state) cell
    keep = ~((meta["subject"] == "01") & (meta["state"] == "auditory"))
    meta = {k: np.asarray(v)[keep] for k, v in meta.items()}
    feats = rng.normal(size=(int(keep.sum()), 5)).astype(np.float32)
    long, lmeta = aggregate_by_subject(feats, meta, per_state=True)
    wide = subject_state_matrix(feats, meta["subject"], meta["state"])
    subjects, states = np.unique(meta["subject"]), np.unique(meta["state"])
    assert wide.shape == (len(subjects), len(states) * 5)
    assert len(long) == len(subjects) * len(states) - 1
    blocks = wide.reshape(len(subjects), len(states), 5)
    for row, (subject, state) in enumerate(zip(lmeta["subject"], lmeta["state"], strict=True)):
        i, j = list(subjects).index(subject), list(states).index(state)
        np.testing.assert_allclose(long[row], blocks[i, j], rtol=1e-6)
    i, j = list(subjects).index("01"), list(states).index("auditory")
    assert np.isnan(blocks[i, j]).all() and np.isfinite(np.delete(blocks, i, 0)).all()
    # one state: one row per subject in both shapes
    long1, lmeta1 = aggregate_by_subject(feats, meta, per_state=False)
    np.testing.assert_array_equal(lmeta1["subject"], subjects)
    np.testing.assert_allclose(long1, subject_state_matrix(feats, meta["subject"]), rtol=1e-6)
    # NaN: the long mean propagates it, the wide matrix skips it
    feats[0, 2] = np.nan
    long, _ = aggregate_by_subject(feats, meta, per_state=False)
    wide = subject_state_matrix(feats, meta["subject"])
    first = list(subjects).index(meta["subject"][0])
    assert np.isnan(long[first, 2]) and np.isfinite(wide[first, 2])
    sel = meta["subject"] == meta["subject"][0]
    assert wide[first, 2] == pytest.approx(np.nanmean(feats[sel, 2]), rel=1e-6)


def test_embed_errors(windows):
    with pytest.raises(ValueError, match="'pooling'"):
        embed(_model(), windows, pooling="max")
    with pytest.raises(TypeError, match="Windows or a store"):
        embed(_model(), np.zeros((2, 6, 100)), progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embed("/no/such/ckpt", windows)


def test_embedder_array_and_windows(windows, checkpoint):
    emb = Embedder(str(checkpoint), geometry=windows.geometry, sfreq=windows.sfreq)
    a = emb.fit_transform(windows.data)
    b = emb.transform(windows.data.reshape(24, -1))
    c = Embedder(str(checkpoint)).fit(windows).transform(windows)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-6)
    assert emb.get_feature_names_out().shape == (emb.embedding_dim_,)
    with pytest.raises(ValueError, match="no sensor geometry"):
        Embedder(str(checkpoint)).fit(windows.data)
    with pytest.raises(ValueError, match="differs from the model's"):
        Embedder(str(checkpoint), geometry=windows.geometry, sfreq=250.0).fit(windows.data)
    with pytest.raises(ValueError, match="4 sensors but the geometry has 6"):
        emb.transform(windows.data[:, :4])
    with pytest.raises(ValueError, match="shorter than one patch"):
        Embedder(str(checkpoint), geometry=windows.geometry).fit(windows.data[:, :, :5])


def test_embedder_in_pipeline_and_gridsearch(windows, checkpoint):
    y = (windows.metadata["label"] == "migraine").astype(int)
    pipe = Pipeline([("embed", Embedder(str(checkpoint), geometry=windows.geometry)),
                     ("clf", LogisticRegression(max_iter=200))])
    search = GridSearchCV(pipe, {"embed__pooling": ["mean", "attention"], "clf__C": [0.1, 1.0]},
                          cv=2)
    search.fit(windows.data.reshape(24, -1), y)
    assert search.best_params_["embed__pooling"] in ("mean", "attention")
    proba = search.predict_proba(windows.data.reshape(24, -1))
    assert proba.shape == (24, 2)


_GEOM = SensorGeometry(names=["A"], positions=[[0.0, 0.0, 0.1]], orientations=[[0, 0, 1.0]],
                       types=[0])


def _checks_estimator():
    # The generic checks pass tiny 2-d arrays (n_samples, n_features): one sensor, and a model
    # with 1-sample patches so that every n_features >= 1 is a valid window.
    import tempfile

    folder = tempfile.mkdtemp(prefix="megfm-embedder-")
    path = _model(patch_samples=1).save_pretrained(f"{folder}/model")
    return Embedder(str(path), geometry=_GEOM)


@parametrize_with_checks([_checks_estimator()])
def test_sklearn_compatible(estimator, check):
    check(estimator)
