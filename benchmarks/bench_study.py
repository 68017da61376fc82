"""Time the downstream study on 60 synthetic subjects, next to plain scikit-learn.

Three feature sets over the same windows (a planted "megfm" effect, raw signals reduced by
PCA inside the folds, spectral-sized noise), three classifiers, 5 subject-level folds and
``--permutations`` label permutations, each refitting every method (the p-values and
intervals; see ``bench_study_calibration.py`` for why they refit).

Baselines in the same run:

* ``sklearn cross_val_predict``: the same 45 model fits with no statistics, i.e. the floor;
* ``sklearn permutation_test_score`` on one method (logistic regression on the "megfm"
  features) with the same number of refits, next to ``run_study`` on that method alone.

Usage::

    python benchmarks/bench_study.py [--quick]

Prints a table and writes ``--out`` (the recorded result: ``benchmarks/results/study.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _results import parse_args, write_json
from sklearn.model_selection import StratifiedKFold, cross_val_predict, permutation_test_score
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from megfm.evaluate.baselines import RawPCA
from megfm.evaluate.classification import make_classifier, run_study, subject_state_matrix


def _data(n_subjects: int, windows_per_subject: int, seed: int):
    rng = np.random.default_rng(seed)
    subject = np.repeat([f"sub-{i:03d}" for i in range(n_subjects)], windows_per_subject)
    label = np.repeat(np.where(np.arange(n_subjects) % 2, "migraine", "HC"), windows_per_subject)
    state = np.resize(np.repeat(["rest", "auditory"], windows_per_subject // 2), len(subject))
    n = len(subject)
    megfm = rng.normal(size=(n, 64))
    megfm[:, :4] += 0.8 * (label == "migraine")[:, None]
    feats = {"megfm": megfm,
             "raw": rng.normal(size=(n, 102 * 25)).astype(np.float32),
             "spectral": rng.normal(size=(n, 190))}
    return feats, {"subject": subject, "label": label, "state": state}


def _sklearn_fits(feats, meta, y, cv) -> None:
    for name, x in feats.items():
        X = subject_state_matrix(x, meta["subject"], meta["state"])
        for clf in ("logreg", "svm", "rf"):
            est = make_classifier(clf, seed=0)
            if name == "raw":
                est = make_pipeline(RawPCA(), est)
            cross_val_predict(est, X, y, cv=cv)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 windows per subject and 10 permutations (well under a minute)")
    parser.add_argument("--subjects", type=int, default=60, help="number of subjects")
    parser.add_argument("--windows", type=int, default=None,
                        help="windows per subject (default 20, 10 with --quick)")
    parser.add_argument("--permutations", type=int, default=None,
                        help="label permutations (default 100, 10 with --quick)")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="also write the full study's report (report.md, roc.png, ...) here")
    args = parse_args(parser, argv, "study")
    args.windows = args.windows or (10 if args.quick else 20)
    n_perm = args.permutations or (10 if args.quick else 100)
    feats, meta = _data(args.subjects, args.windows, seed=0)

    t0 = time.perf_counter()
    res = run_study(feats, meta, n_splits=5, n_permutations=n_perm, seed=0, progress=False,
                    out=args.report)
    t_study = time.perf_counter() - t0

    # baseline 1: the same fits with plain scikit-learn, no statistics
    subjects = np.unique(meta["subject"])
    y = (np.array([meta["label"][meta["subject"] == s][0] for s in subjects]) == "migraine")
    # one row per subject, so plain stratified folds are subject-level folds
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):  # same BLAS setting as run_study
        _sklearn_fits(feats, meta, y, cv)
    t_sklearn = time.perf_counter() - t0

    # baseline 2: the same refits for one method, run_study against permutation_test_score
    t0 = time.perf_counter()
    one = run_study({"megfm": feats["megfm"]}, meta, classifiers=["logreg"], n_splits=5,
                    n_permutations=n_perm, reference=None, seed=0, progress=False)
    t_one = time.perf_counter() - t0
    X = subject_state_matrix(feats["megfm"], meta["subject"], meta["state"])
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        _, _, p_sklearn = permutation_test_score(make_classifier("logreg"), X, y, cv=cv,
                                                 n_permutations=n_perm, scoring="roc_auc",
                                                 random_state=0)
    t_perm = time.perf_counter() - t0

    n_comp = len(res.comparisons)
    rows = [
        (f"megfm run_study: 3 feature sets x 3 clf x 5 folds, {n_perm} label permutations, "
         f"{n_comp} paired tests", t_study),
        ("sklearn cross_val_predict, same 45 fits, no statistics", t_sklearn),
        (f"megfm run_study, megfm/logreg alone, {n_perm} label permutations", t_one),
        (f"sklearn permutation_test_score, megfm/logreg, {n_perm} refits", t_perm),
    ]
    print(f"{'what':<88} {'seconds':>9}")
    for what, sec in rows:
        print(f"{what:<88} {sec:>9.2f}")
    print()
    print(f"{'method':<18} {'AUROC':>6}  95% interval  p vs chance")
    for m, v in res.metrics.items():
        a = v["auroc"]
        print(f"{m:<18} {a['value']:>6.3f}  [{a['ci_low']:.3f}, {a['ci_high']:.3f}]  "
              f"{res.chance[m]:.3f}")
    for c in res.comparisons:
        print(f"{c['reference']} vs {c['other']}: difference {c['difference']:+.3f}, "
              f"p = {c['p_value']:.4f}")
    print(f"megfm/logreg p vs chance: run_study {one.chance['megfm/logreg']:.3f}, "
          f"sklearn permutation_test_score {p_sklearn:.3f}")

    result = {
        "benchmark": "study",
        "quick": args.quick,
        "n_subjects": args.subjects,
        "windows_per_subject": args.windows,
        "permutations": n_perm,
        "feature_dims": {k: int(v.shape[1]) for k, v in feats.items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": {"megfm_run_study": t_study, "sklearn_cross_val_predict": t_sklearn,
                    "megfm_run_study_one_method": t_one,
                    "sklearn_permutation_test_score_one_method": t_perm},
        "p_vs_chance_one_method": {"megfm": one.chance["megfm/logreg"], "sklearn": p_sklearn},
        "auroc": {m: v["auroc"] for m, v in res.metrics.items()},
        "comparisons": res.comparisons,
    }
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
