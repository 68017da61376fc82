"""Downstream evaluation: baselines, subject-level splits, statistics and the study runner.

Names are resolved lazily, so importing :mod:`megfm.evaluate` loads neither torch nor
Lightning; ``finetune`` / ``make_finetune_method`` (which need them) load on first use.
"""

import lazy_loader as _lazy

# ``finetune`` is the function (its module is still ``import megfm.evaluate.finetune``)
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["baselines", "card", "classification", "reconstruction", "riemann", "splits",
                "stats"],
    submod_attrs={
        "classification": ["StudyResult", "make_classifier", "parse_task", "run_study",
                           "subject_state_matrix"],
        "baselines": ["BANDS", "REGIONS", "RawPCA", "raw_features", "sensor_regions",
                      "spectral_features"],
        "splits": ["Fold", "check_no_leak", "subject_folds", "subject_labels", "window_indices"],
        "stats": ["METRICS", "bootstrap_metrics", "compute_metrics", "paired_permutation_test"],
        "finetune": ["finetune", "make_finetune_method"],
        "reconstruction": ["evaluate_reconstruction"],
        "riemann": ["TangentSpaceBlocks", "covariance_features"],
        "card": ["Scorecard", "layer_features", "random_encoder", "scorecard",
                 "subject_variance_fraction"],
    },
)
