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

import lazy_loader as _lazy

# torch and matplotlib load only when the function that needs them is used
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "alignment": ["alignment_score", "find_ground_truth"],
        "attention": ["AttentionMaps", "attention_maps", "attention_rollout", "geometry_to_info"],
        "attribution": ["Attribution", "DEFAULT_BANDS", "EncoderClassifier", "LinearHead",
                        "attribute", "grad_cam", "gradient_x_input", "integrated_gradients"],
        "contrast": ["ClassContrast", "class_contrast"],
        "pattern": ["DecisionPattern", "decision_pattern"],
        "regions": ["SourceMap", "format_region_table", "null_region_scores",
                    "project_to_sources", "rank_regions", "region_scores"],
        "plotting": ["plot_sensor_map", "plot_state_topomaps"],
    },
)
