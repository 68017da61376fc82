"""Are the study's p-values and intervals calibrated? Many synthetic cohorts with known truth.

Each draw is a cohort of subjects (half HC, half migraine) with three states and two feature
sets ``a`` and ``b`` of i.i.d. Gaussian noise; ``effect`` shifts one feature of each state
for the migraine subjects. :func:`megfm.run_study` (logistic regression, 5 subject folds,
``--permutations`` label permutations) scores both; in the same run the baseline statistics
of fixed out-of-fold scores (the stratified bootstrap CI of ``bootstrap_metrics`` and the
score-swapping ``paired_permutation_test``, what ``run_study`` used before) are computed from
the same scores. Reported per setting, over ``--draws`` cohorts:

* ``a`` 95 % interval covers 0.5 (settings with no effect in ``a``): should be ~0.95;
* ``a`` 95 % interval covers the setting's mean AUROC over the draws (a stand-in for the
  expected cross-validated AUROC): should be ~0.95 or more;
* paired test ``a`` vs ``b`` with p < 0.05: ~0.05 when ``a`` and ``b`` carry the same effect
  (false positives), as high as possible when ``a`` carries more (power);
* test of ``a`` against chance with p < 0.05 (label permutations only).

Run::

    python benchmarks/bench_study_calibration.py --quick        # ~1 min
    python benchmarks/bench_study_calibration.py --out benchmarks/results/study_calibration.json

Without ``--out`` the JSON goes to the git-ignored ``benchmarks/scratch/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _results import parse_args, write_json
from joblib import Parallel, delayed

from megfm.evaluate import run_study
from megfm.evaluate.stats import bootstrap_metrics, paired_permutation_test

STATES = ("rest", "auditory", "somatosensory")
#: (subjects, features per state, effect in a, effect in b)
SETTINGS = ((120, 71, 0.0, 0.0), (120, 71, 0.5, 0.5), (120, 71, 1.0, 1.0), (60, 5, 0.5, 0.5),
            (120, 71, 1.0, 0.0))


def _draw(n_subjects: int, n_features: int, effect_a: float, effect_b: float, draw: int,
          n_permutations: int) -> dict[str, float | bool]:
    rng = np.random.default_rng([n_subjects, n_features, int(10 * effect_a),
                                 int(10 * effect_b), draw])
    patient = np.arange(n_subjects) % 2 == 1
    meta = {"subject": np.repeat([f"sub-{i:03d}" for i in range(n_subjects)], len(STATES)),
            "label": np.repeat(np.where(patient, "migraine", "HC"), len(STATES)),
            "state": np.tile(STATES, n_subjects)}
    feats = {}
    for name, effect in (("a", effect_a), ("b", effect_b)):
        x = rng.standard_normal((n_subjects * len(STATES), n_features))
        x[:, 0] += effect * np.repeat(patient, len(STATES))
        feats[name] = x
    res = run_study(feats, meta, classifiers=["logreg"], reference="a",
                    n_permutations=n_permutations, seed=draw, progress=False)
    auroc = res.metrics["a/logreg"]["auroc"]
    y, sa, sb = res.y, res.scores["a/logreg"], res.scores["b/logreg"]
    boot = bootstrap_metrics(y, sa, (sa >= 0.5).astype(int), n_bootstrap=1000,
                             seed=draw)["auroc"]
    swapped = paired_permutation_test(y, sa, sb, n_permutations=1000, seed=draw)["p_value"]
    return {"auroc_a": auroc["value"],
            "new_low": auroc["ci_low"], "new_high": auroc["ci_high"],
            "new_covers": auroc["ci_low"] <= 0.5 <= auroc["ci_high"],
            "new_width": auroc["ci_high"] - auroc["ci_low"],
            "new_paired_sig": res.comparisons[0]["p_value"] < 0.05,
            "new_chance_sig": res.chance["a/logreg"] < 0.05,
            "old_low": boot["ci_low"], "old_high": boot["ci_high"],
            "old_covers": boot["ci_low"] <= 0.5 <= boot["ci_high"],
            "old_width": boot["ci_high"] - boot["ci_low"],
            "old_paired_sig": swapped < 0.05}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 draws, 20 permutations")
    ap.add_argument("--draws", type=int, default=100, help="cohorts per setting")
    ap.add_argument("--permutations", type=int, default=100,
                    help="label permutations of each study (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel draws")
    args = parse_args(ap, argv, "study_calibration")
    if args.quick:
        args.draws, args.permutations = 10, 20
    t0 = time.perf_counter()
    rows = []
    print(f"{'subjects':>8} {'feat/state':>10} {'effect a/b':>10} {'AUROC a':>8} | "
          f"{'CI covers 0.5':>13} {'(bootstrap)':>11} | {'covers mean':>11} {'(bootstrap)':>11} | "
          f"{'paired p<.05':>12} {'(swapped)':>9} | {'chance p<.05':>12}")
    for n_sub, n_feat, eff_a, eff_b in SETTINGS:
        draws = Parallel(n_jobs=args.jobs)(
            delayed(_draw)(n_sub, n_feat, eff_a, eff_b, d, args.permutations)
            for d in range(args.draws))
        rates = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]
                 if not k.endswith(("_low", "_high"))}
        # the expected AUROC of this setting ~ its mean over the draws
        for which in ("new", "old"):
            rates[f"{which}_covers_mean"] = float(np.mean(
                [d[f"{which}_low"] <= rates["auroc_a"] <= d[f"{which}_high"] for d in draws]))
        row = {"n_subjects": n_sub, "features_per_state": n_feat, "effect_a": eff_a,
               "effect_b": eff_b, "draws": args.draws, **rates}
        rows.append(row)
        null_a = eff_a == 0
        cover = (f"{rates['new_covers']:>13.2f} {rates['old_covers']:>11.2f}" if null_a
                 else f"{'-':>13} {'-':>11}")
        print(f"{n_sub:>8} {n_feat:>10} {f'{eff_a:g}/{eff_b:g}':>10} {rates['auroc_a']:>8.3f} | "
              f"{cover} | {rates['new_covers_mean']:>11.2f} {rates['old_covers_mean']:>11.2f} | "
              f"{rates['new_paired_sig']:>12.2f} {rates['old_paired_sig']:>9.2f} | "
              f"{rates['new_chance_sig']:>12.2f}", flush=True)
    result = {"benchmark": "study_calibration", "quick": args.quick,
              "permutations": args.permutations, "draws": args.draws,
              "classifier": "logreg", "n_splits": 5, "settings": rows,
              "seconds": time.perf_counter() - t0,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
