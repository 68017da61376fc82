"""Downstream evaluation: baselines, subject-level splits, statistics and the study runner.

Names are resolved lazily, so importing :mod:`megfm.evaluate` loads neither torch nor
Lightning; ``finetune`` / ``make_finetune_method`` (which need them) load on first use.
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY_ATTRS: dict[str, str] = {
    "run_study": "classification",
    "StudyResult": "classification",
    "subject_state_matrix": "classification",
    "make_classifier": "classification",
    "parse_task": "classification",
    "raw_features": "baselines",
    "spectral_features": "baselines",
    "sensor_regions": "baselines",
    "RawPCA": "baselines",
    "BANDS": "baselines",
    "REGIONS": "baselines",
    "Fold": "splits",
    "subject_folds": "splits",
    "check_no_leak": "splits",
    "subject_labels": "splits",
    "window_indices": "splits",
    "METRICS": "stats",
    "compute_metrics": "stats",
    "bootstrap_metrics": "stats",
    "paired_permutation_test": "stats",
    "finetune": "finetune",
    "make_finetune_method": "finetune",
    "evaluate_reconstruction": "reconstruction",
    "covariance_features": "riemann",
    "TangentSpaceBlocks": "riemann",
    "scorecard": "card",
    "Scorecard": "card",
    "layer_features": "card",
    "subject_variance_fraction": "card",
}
_SUBMODULES = ("baselines", "classification", "splits", "stats", "finetune", "reconstruction",
               "riemann", "card")

__all__ = [*_LAZY_ATTRS, *_SUBMODULES]


def __getattr__(name: str):
    if name in _LAZY_ATTRS:
        module = importlib.import_module(f"{__name__}.{_LAZY_ATTRS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
