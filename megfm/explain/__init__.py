"""Looking inside the model: attention maps, gradient attribution, topomaps, region scores.

* :func:`attention_maps` -> :class:`AttentionMaps` (per state/group/time patch, rollout,
  ``to_evoked``), :func:`geometry_to_info`;
* :func:`attribute` (:func:`grad_cam`, :func:`gradient_x_input`,
  :func:`integrated_gradients`) -> :class:`Attribution`; :class:`LinearHead`,
  :class:`EncoderClassifier`;
* :func:`class_contrast` -> :class:`ClassContrast` (where the evidence differs between classes);
* :func:`decision_pattern` -> :class:`DecisionPattern` (where band power moves with the
  decision: the classifier's activation pattern);
* :func:`project_to_sources`, :func:`region_scores`, :func:`rank_regions`;
* :func:`alignment_score`;
* :func:`plot_sensor_map`, :func:`plot_state_topomaps`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "alignment_score": "alignment",
    "find_ground_truth": "alignment",
    "AttentionMaps": "attention",
    "attention_maps": "attention",
    "attention_rollout": "attention",
    "geometry_to_info": "_common",
    "DEFAULT_BANDS": "attribution",
    "Attribution": "attribution",
    "EncoderClassifier": "attribution",
    "LinearHead": "attribution",
    "attribute": "attribution",
    "grad_cam": "attribution",
    "gradient_x_input": "attribution",
    "integrated_gradients": "attribution",
    "ClassContrast": "contrast",
    "class_contrast": "contrast",
    "DecisionPattern": "pattern",
    "decision_pattern": "pattern",
    "SourceMap": "regions",
    "format_region_table": "regions",
    "null_region_scores": "regions",
    "project_to_sources": "regions",
    "rank_regions": "regions",
    "region_scores": "regions",
    "plot_sensor_map": "plotting",
    "plot_state_topomaps": "plotting",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    # torch and matplotlib load only when the function that needs them is used
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
