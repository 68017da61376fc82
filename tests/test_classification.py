"""The study runner: null cohorts give chance, planted effects are found, no subject leaks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier

from megfm.evaluate.classification import (
    distinct_relabelings,
    parse_task,
    run_study,
    subject_state_matrix,
)

FAST = {"n_permutations": 39, "n_bootstrap": 300, "progress": False}


def _cohort(groups=None, windows_per_subject=4, seed=0, states=("rest", "auditory")):
    groups = groups or {"HC": 20, "migraine": 20}
    subjects, labels = [], []
    i = 0
    for g, n in groups.items():
        for _ in range(n):
            subjects += [f"sub-{i:03d}"] * windows_per_subject
            labels += [g] * windows_per_subject
            i += 1
    n = len(subjects)
    state = np.resize(np.repeat(states, max(1, windows_per_subject // len(states))), n)
    meta = {"subject": np.array(subjects), "label": np.array(labels), "state": state}
    return meta, np.random.default_rng(seed)


def _planted(meta, rng, *, d=16, size=1.5, group="migraine"):
    x = rng.normal(size=(len(meta["subject"]), d))
    x[:, :2] += size * (meta["label"] == group)[:, None]
    return x


def test_null_features_give_chance_for_every_method(tmp_path):
    # One seeded null cohort. Under the null, cross-validated AUROC on 60 subjects has a
    # spread of about 0.1 (and a slight negative bias), so a CI misses 0.5 for some seeds:
    # that is chance, and why the CIs and p-values are reported.
    meta, rng = _cohort({"HC": 30, "migraine": 30}, seed=1)
    feats = {"megfm": rng.normal(size=(240, 16)), "spectral": rng.normal(size=(240, 8))}
    forest = RandomForestClassifier(n_estimators=25, n_jobs=1)  # the built-in "rf", smaller
    res = run_study(feats, meta, classifiers={"logreg": "logreg", "svm": "svm", "rf": forest},
                    n_splits=5, seed=0, **FAST)
    assert len(res.metrics) == 6
    for name, m in res.metrics.items():
        ci = m["auroc"]
        assert ci["ci_low"] < 0.5 < ci["ci_high"], (name, ci)
    assert all(c["p_value"] > 0.05 for c in res.comparisons)


def test_planted_effect_detected_against_null_baseline(tmp_path):
    meta, rng = _cohort({"HC": 20, "migraine": 20}, seed=1)
    feats = {"megfm": _planted(meta, rng), "raw": rng.normal(size=(160, 40))}
    res = run_study(feats, meta, classifiers=("logreg", "svm"), seed=0, out=tmp_path, **FAST)
    for clf in ("logreg", "svm"):
        assert res.metrics[f"megfm/{clf}"]["auroc"]["value"] > 0.9
        assert res.metrics[f"megfm/{clf}"]["auroc"]["ci_low"] > 0.5
    assert [(c["reference"], c["other"]) for c in res.comparisons] == [
        ("megfm/logreg", "raw/logreg"), ("megfm/svm", "raw/svm")]
    assert all(c["p_value"] < 0.05 and c["difference"] > 0.2 for c in res.comparisons)
    assert "RawPCA" in res.config["preprocessors"]["raw"]  # raw reduced inside folds

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "migraine-vs-HC" and report["positive"] == "migraine"
    assert report["subjects_per_class"] == {"HC": 20, "migraine": 20}
    for metric in ("auroc", "balanced_accuracy", "sensitivity", "specificity"):
        assert report["methods"]["megfm/logreg"][metric].keys() == {
            "value", "ci_low", "ci_high", "interval"}
        assert report["methods"]["megfm/logreg"][metric]["interval"] == "permutation"
    assert report["comparisons"][0]["p_value"] < 0.05
    md = (tmp_path / "report.md").read_text()
    assert "| megfm/logreg |" in md and "p-value" in md
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    scores = (tmp_path / "scores.csv").read_text().splitlines()
    assert scores[0].startswith("subject,label,tested,megfm/logreg") and len(scores) == 41


def test_several_references_and_explicit_pairs_in_order_without_repeats():
    meta, rng = _cohort({"HC": 12, "migraine": 12}, windows_per_subject=2, seed=3)
    feats = {"megfm": _planted(meta, rng, d=4), "raw": rng.normal(size=(48, 4)),
             "spectral": rng.normal(size=(48, 4))}
    res = run_study(feats, meta, classifiers=("logreg",), n_splits=3, seed=0,
                    reference=["megfm", ("spectral/logreg", "raw/logreg"),
                               ("megfm/logreg", "raw/logreg")], **FAST)
    pairs = [(c["reference"], c["other"]) for c in res.comparisons]
    assert pairs == [("megfm/logreg", "raw/logreg"), ("megfm/logreg", "spectral/logreg"),
                     ("spectral/logreg", "raw/logreg")]
    m = res.metrics
    diff = m["spectral/logreg"]["auroc"]["value"] - m["raw/logreg"]["auroc"]["value"]
    assert res.comparisons[2]["difference"] == pytest.approx(diff)
    assert 0 < res.comparisons[2]["p_value"] <= 1
    assert res.config["reference"] == ["megfm", ["spectral/logreg", "raw/logreg"],
                                       ["megfm/logreg", "raw/logreg"]]
    # a single pair on its own
    one = run_study(feats, meta, classifiers=("logreg",), n_splits=3, seed=0,
                    reference=("raw/logreg", "megfm/logreg"), **FAST)
    assert [(c["reference"], c["other"]) for c in one.comparisons] == [
        ("raw/logreg", "megfm/logreg")]


@pytest.mark.parametrize("reference", [("megfm/logreg", "nope"), ("megfm/logreg",) * 2,
                                       ["megfm", "nope"]])
def test_bad_reference_pairs_name_the_problem(reference):
    meta, rng = _cohort({"HC": 6, "migraine": 6}, windows_per_subject=2)
    feats = {"megfm": rng.normal(size=(24, 3)), "raw": rng.normal(size=(24, 3))}
    with pytest.raises(ValueError, match="'reference'"):
        run_study(feats, meta, classifiers=("logreg",), n_splits=3, reference=reference,
                  **FAST)


def test_label_permutation_test_against_chance(tmp_path):
    meta, rng = _cohort({"HC": 15, "migraine": 15}, windows_per_subject=2, seed=2)
    feats = {"megfm": _planted(meta, rng, d=6), "noise": rng.normal(size=(60, 6))}
    res = run_study(feats, meta, classifiers=("logreg",), n_splits=3, out=tmp_path,
                    **{**FAST, "n_permutations": 19})
    assert res.chance["megfm/logreg"] == pytest.approx(1 / 20)  # no permutation reaches it
    assert res.chance["noise/logreg"] > 0.2
    assert json.loads((tmp_path / "report.json").read_text())["chance"] == res.chance
    assert "p vs chance" in (tmp_path / "report.md").read_text()


def test_distinct_relabelings_enumerate_every_other_assignment():
    y = np.array([0, 1, 0, 1, 1, 0])
    relabelings = distinct_relabelings(y, limit=200)
    assert len(relabelings) == 19  # C(6, 3) - 1: the observed assignment is left out
    assert len({tuple(r) for r in relabelings}) == 19
    assert all(np.bincount(r).tolist() == [3, 3] for r in relabelings)
    assert not any(np.array_equal(r, y) for r in relabelings)
    three = np.array([0, 1, 2, 2])  # 4! / 2! = 12 assignments of three classes
    assert len(distinct_relabelings(three, limit=11)) == 11
    assert distinct_relabelings(three, limit=10) is None  # more than asked: sample instead
    assert distinct_relabelings(np.repeat([0, 1], 20), limit=1000) is None


def test_few_subjects_get_the_exact_permutation_test(tmp_path):
    meta, rng = _cohort({"HC": 4, "migraine": 4}, windows_per_subject=2, seed=2)
    feats = {"megfm": _planted(meta, rng, d=4, size=4.0)}
    res = run_study(feats, meta, classifiers=("logreg",), n_splits=2, out=tmp_path,
                    **{**FAST, "n_permutations": 200})
    # 8 subjects, 4 per class: 70 assignments, each of the 69 others refitted once
    assert res.config["n_permutations"] == 69 and res.config["exact_permutation_test"]
    assert len(res.null["megfm/logreg"]["auroc"]) == 69
    assert res.chance["megfm/logreg"] >= 1 / 70
    assert "exact test" in (tmp_path / "report.md").read_text()
    tie = run_study(feats, meta, classifiers=("logreg",), n_splits=2,
                    **{**FAST, "n_permutations": 69})  # exactly every other assignment
    assert tie.config["n_permutations"] == 69 and tie.config["exact_permutation_test"]
    sampled = run_study(feats, meta, classifiers=("logreg",), n_splits=2,
                        **{**FAST, "n_permutations": 30})
    assert sampled.config["n_permutations"] == 30
    assert not sampled.config["exact_permutation_test"]


def test_intervals_and_tests_come_from_label_permutation_refits():
    meta, rng = _cohort({"HC": 20, "migraine": 20}, windows_per_subject=2, seed=3)
    feats = {"megfm": _planted(meta, rng, d=6), "noise": rng.normal(size=(80, 6))}

    def coin(train_idx, test_idx):  # an extra method: scored, never refitted
        return np.random.default_rng(len(train_idx)).random(len(test_idx))

    res = run_study(feats, meta, classifiers=("logreg",), n_splits=4, extra_methods={"coin": coin},
                    reference=["megfm", ("megfm/logreg", "coin")], n_permutations=49,
                    n_bootstrap=200, progress=False)
    assert set(res.null) == {"megfm/logreg", "noise/logreg"}  # the extra method is not refitted
    for name in res.null:
        for metric, values in res.null[name].items():
            assert values.shape == (49,) and np.all((values >= 0) & (values <= 1))
            m = res.metrics[name][metric]
            half = 1.959964 * np.std(values, ddof=1)
            assert m["interval"] == "permutation"
            assert m["ci_low"] == pytest.approx(max(0.0, m["value"] - half), abs=1e-6)
            assert m["ci_high"] == pytest.approx(min(1.0, m["value"] + half), abs=1e-6)
    # the p-values are shares of the refits
    null_auc = res.null["noise/logreg"]["auroc"]
    observed = res.metrics["noise/logreg"]["auroc"]["value"]
    assert res.chance["noise/logreg"] == pytest.approx((1 + np.sum(null_auc >= observed)) / 50)
    assert res.chance["megfm/logreg"] == pytest.approx(1 / 50)
    paired, versus_extra = res.comparisons
    assert paired["test"] == "label permutations" and paired["p_value"] == pytest.approx(1 / 50)
    assert versus_extra["other"] == "coin" and versus_extra["test"] == "swapped fixed scores"
    assert res.metrics["coin"]["auroc"]["interval"] == "bootstrap"
    assert "coin" not in res.chance
    # the refits in two processes give the same result
    twice = run_study(feats, meta, classifiers=("logreg",), n_splits=4, extra_methods={"coin": coin},
                      reference=["megfm", ("megfm/logreg", "coin")], n_permutations=49,
                      n_bootstrap=200, progress=False, n_jobs=2)
    assert twice.metrics == res.metrics and twice.comparisons == res.comparisons
    assert twice.chance == res.chance
    # no refits: bootstrap intervals, no p-values
    bare = run_study(feats, meta, classifiers=("logreg",), n_splits=4, n_permutations=0,
                     n_bootstrap=200, progress=False)
    assert bare.chance == {} and bare.null == {}
    assert bare.metrics["megfm/logreg"]["auroc"]["interval"] == "bootstrap"
    assert [c["p_value"] for c in bare.comparisons] == [None]


def test_splits_never_leak_into_extra_methods():
    meta, rng = _cohort({"HC": 10, "migraine": 15, "PPTH": 5}, windows_per_subject=3)
    calls = []

    def spy(train_idx, test_idx):
        calls.append((train_idx, test_idx))
        return np.full(len(test_idx), 0.5)

    res = run_study({"megfm": rng.normal(size=(90, 4))}, meta, classifiers=("logreg",),
                    n_splits=5, n_repeats=2, extra_methods={"spy": spy}, **FAST)
    assert len(calls) == 10
    for train_idx, test_idx in calls:
        train_s, test_s = set(meta["subject"][train_idx]), set(meta["subject"][test_idx])
        assert not train_s & test_s  # explicit: no subject on both sides
        assert "PPTH" not in set(meta["label"][np.r_[train_idx, test_idx]])
    for r in range(2):
        tested = np.concatenate([c[1] for c in calls[5 * r:5 * r + 5]])
        assert len(tested) == len(set(tested)) == 75  # each task window tested once per repeat
    assert res.metrics["spy"]["auroc"]["value"] == 0.5
    assert [c["other"] for c in res.comparisons] == ["spy"]


def test_window_level_multiclass_and_custom_estimators():
    meta, rng = _cohort({"HC": 8, "migraine": 8, "PPTH": 8}, windows_per_subject=4)
    x = rng.normal(size=(96, 6))
    for k, g in enumerate(["HC", "migraine", "PPTH"]):
        x[meta["label"] == g, k] += 3
    res = run_study({"megfm": x}, meta, task="multiclass", level="window", n_splits=4,
                    classifiers=[KNeighborsClassifier(3), DummyClassifier(strategy="prior")],
                    **FAST)
    assert res.classes == ["HC", "PPTH", "migraine"]
    assert res.scores["megfm/KNeighborsClassifier"].shape == (24, 3)
    assert res.metrics["megfm/KNeighborsClassifier"]["auroc"]["value"] > 0.95
    assert res.metrics["megfm/DummyClassifier"]["auroc"]["value"] == 0.5
    one = run_study({"megfm": x}, meta, task="PPTH-vs-HC", classifiers={"knn": KNeighborsClassifier(3)},
                    n_splits=4, **FAST)
    assert one.classes == ["HC", "PPTH"] and len(one.subjects) == 16
    assert one.metrics["megfm/knn"]["auroc"]["value"] > 0.95


def test_balanced_test_and_repeats():
    meta, rng = _cohort({"HC": 10, "migraine": 16}, windows_per_subject=2)
    res = run_study({"megfm": _planted(meta, rng)}, meta, classifiers=("logreg",),
                    n_splits=5, balanced_test=True, **FAST)
    assert res.tested.sum() == 20  # 2 + 2 per test fold
    assert np.isnan(res.scores["megfm/logreg"][~res.tested]).all()
    rep = run_study({"megfm": _planted(meta, rng)}, meta, classifiers=("logreg",),
                    n_splits=5, n_repeats=3, balanced_test=True, **FAST)
    assert rep.tested.sum() > 20 and len(rep.folds) == 15


def test_study_is_seeded():
    meta, rng = _cohort()
    x = {"megfm": _planted(meta, rng, size=0.3)}
    rf = RandomForestClassifier(n_estimators=20)  # random_state unset: the study seeds it
    fast = {**FAST, "n_permutations": 9}
    a = run_study(x, meta, classifiers=[rf], seed=3, **fast)
    b = run_study(x, meta, classifiers=[rf], seed=3, **fast)
    c = run_study(x, meta, classifiers=[rf], seed=4, **fast)
    key = "megfm/RandomForestClassifier"
    np.testing.assert_array_equal(a.scores[key], b.scores[key])
    assert a.metrics == b.metrics
    assert not np.array_equal(a.scores[key], c.scores[key])


def test_subject_state_matrix_known_answer():
    feats = np.array([[1.0, 2], [3, 4], [10, 20], [5, 5], [np.nan, 1]])
    subjects = np.array(["a", "a", "a", "b", "b"])
    states = np.array(["rest", "rest", "task", "rest", "rest"])
    X = subject_state_matrix(feats, subjects, states)
    np.testing.assert_array_equal(X[0], [2, 3, 10, 20])
    np.testing.assert_array_equal(X[1, :2], [5, 3])
    assert np.isnan(X[1, 2:]).all()  # b has no task windows


def test_missing_states_are_imputed_inside_folds():
    meta, rng = _cohort({"HC": 10, "migraine": 10})
    drop = (meta["subject"] == "sub-000") & (meta["state"] == "auditory")
    meta = {k: v[~drop] for k, v in meta.items()}
    x = _planted(meta, rng)
    x[3, 0] = np.nan
    res = run_study({"megfm": x}, meta, classifiers=("logreg",), n_splits=4, **FAST)
    assert np.isfinite(res.scores["megfm/logreg"]).all()


def test_parse_task():
    labels = ["HC", "migraine", "PPTH", ""]
    assert parse_task("migraine-vs-HC", labels) == ["HC", "migraine"]
    assert parse_task("multiclass", labels) == ["HC", "PPTH", "migraine"]
    with pytest.raises(ValueError, match="'task'"):
        parse_task("migraine_vs_HC", labels)


@pytest.mark.parametrize("mutate, kwargs, err, match", [
    (lambda m, x: m.update(label=np.full(len(m["label"]), "HC")), {}, ValueError,
     r"absent from the labels"),
    (lambda m, x: m.update(label=np.full(len(m["label"]), "HC")), {"task": "multiclass"},
     ValueError, "at least two groups"),
    (lambda m, x: m["label"].__setitem__(1, "migraine"), {}, ValueError, "more than one label"),
    (lambda m, x: None, {"n_splits": 50}, ValueError, "Only 40 subjects for n_splits=50"),
    (lambda m, x: x.update(megfm=x["megfm"][:-1]), {}, ValueError, "159 rows but metadata has 160"),
    (lambda m, x: None, {"task": "APTH-vs-HC"}, ValueError,
     r"names group\(s\) \['APTH'\] absent .* present: \['HC', 'migraine'\]"),
    (lambda m, x: None, {"level": "trial"}, ValueError, "'level'"),
    (lambda m, x: None, {"ci": 95}, ValueError, r"'ci'.*\(0, 1\)"),
    (lambda m, x: None, {"n_permutations": -1}, ValueError, "'n_permutations'"),
    (lambda m, x: None, {"reference": "nope"}, ValueError, "'reference'"),
    (lambda m, x: None, {"classifiers": ("xgb",)}, ValueError, "Invalid classifier 'xgb'"),
    (lambda m, x: None, {"classifiers": (object(),)}, TypeError, "not a scikit-learn"),
    (lambda m, x: m.update(subject=np.full(len(m["subject"]), "")), {}, ValueError,
     "empty subject id"),
    (lambda m, x: x.update(megfm=x["megfm"][:, 0]), {}, ValueError, r"shape \(n_windows"),
    (lambda m, x: None, {"extra_methods": {"bad": lambda tr, te: np.zeros(3)}}, ValueError,
     r"returned scores of shape \(3,\)"),
])
def test_bad_input(mutate, kwargs, err, match):
    meta, rng = _cohort()
    x = {"megfm": rng.normal(size=(160, 3))}
    mutate(meta, x)
    with pytest.raises(err, match=match):
        run_study(x, meta, **{**FAST, "classifiers": ("logreg",), **kwargs})


def _fake_store(monkeypatch, windows):
    import sys
    import types

    module = types.ModuleType("megfm.data.store")
    module.read_store = lambda path: windows
    monkeypatch.setitem(sys.modules, "megfm.data.store", module)


def test_cli_evaluate_with_baselines(tmp_path, monkeypatch, capsys):
    from megfm.cli.main import main
    from megfm.data.geometry import SensorGeometry
    from megfm.data.windows import Windows

    meta, rng = _cohort({"HC": 6, "migraine": 6}, windows_per_subject=2)
    n = len(meta["subject"])
    pos = rng.normal(size=(8, 3))
    geom = SensorGeometry(names=[f"M{i}" for i in range(8)], positions=pos,
                          orientations=pos, types=np.zeros(8, int))
    windows = Windows(data=rng.normal(size=(n, 8, 100)), sfreq=100.0, geometries=[geom],
                      metadata=meta)
    _fake_store(monkeypatch, windows)
    store = tmp_path / "store"
    store.mkdir()
    npz = tmp_path / "features.npz"
    np.savez(npz, features=_planted(meta, rng, d=4, size=3), store=str(store), **meta)
    args = [str(npz), "--out", str(tmp_path / "report"), "--classifiers", "logreg",
            "--folds", "3", "--permutations", "50", "--bootstrap", "50", "--no-progress"]
    assert main(["evaluate", *args]) == 0
    out = capsys.readouterr().out
    assert "| megfm/logreg |" in out and "| raw/logreg |" in out and "| spectral/logreg |" in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["methods"]) == {"megfm/logreg", "raw/logreg", "spectral/logreg"}
    assert report["config"]["n_splits"] == 3

    # fine-tuning runs as extra methods on the same folds
    import sys
    import types

    calls, seen = [], []

    def method(tr, te):
        seen.append((np.asarray(tr), np.asarray(te)))
        return (meta["label"][te] == "migraine").astype(float)  # perfect, if indices are right

    def make_finetune_method(checkpoint, store_path, **kw):
        calls.append(kw)
        return method

    fake = types.ModuleType("megfm.evaluate.finetune")
    fake.make_finetune_method = make_finetune_method
    monkeypatch.setitem(sys.modules, "megfm.evaluate.finetune", fake)
    assert main(["evaluate", *args, "--baselines", "none", "--finetune", str(tmp_path),
                 "--linear-probe", "--finetune-steps", "7"]) == 0
    assert "| finetune |" in capsys.readouterr().out
    assert calls[0]["max_steps"] == 7 and calls[1]["linear_probe"] is True
    # `megfm embed` layout: "meta_" columns and the store index of each row (here reversed);
    # extra methods get store indices, baselines are computed on the same rows
    order = np.arange(n)[::-1]
    np.savez(npz, features=_planted(meta, rng, d=4, size=3)[order], store=str(store),
             meta_index=order, **{f"meta_{k}": v[order] for k, v in meta.items()})
    seen.clear()
    assert main(["evaluate", *args, "--finetune", str(tmp_path)]) == 0
    assert "| spectral/logreg |" in capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["methods"]["finetune"]["auroc"]["value"] == 1.0
    for tr, te in seen:
        assert not set(meta["subject"][tr]) & set(meta["subject"][te])
        assert sorted(np.r_[tr, te].tolist()) == list(range(n))
    assert main(["evaluate", *args, "--linear-probe"]) == 1
    assert "--linear-probe needs --finetune" in capsys.readouterr().err

    assert main(["evaluate", *args, "--baselines", "fft"]) == 1
    assert "Invalid baseline(s) ['fft']" in capsys.readouterr().err
    np.savez(npz, features=np.zeros((n, 2)), **meta)  # no store recorded
    assert main(["evaluate", *args, "--baselines", "raw"]) == 1
    assert "Pass --store STORE" in capsys.readouterr().err
    np.savez(npz, features=np.zeros((n - 1, 2)), store=str(store), **meta)
    assert main(["evaluate", *args]) == 1
    assert "do not match" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.npz"), "--out", str(tmp_path)]) == 1


def test_evaluate_namespace_is_lazy_and_complete():
    import megfm.evaluate as ev

    for name in ("run_study", "StudyResult", "raw_features", "spectral_features", "RawPCA",
                 "subject_folds", "check_no_leak", "bootstrap_metrics",
                 "paired_permutation_test"):
        assert callable(getattr(ev, name))
    assert {"finetune", "make_finetune_method", "evaluate_reconstruction"} <= set(dir(ev))
    with pytest.raises(AttributeError, match="attribute '?nope"):
        _ = ev.nope
