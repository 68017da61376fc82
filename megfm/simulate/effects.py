"""Groups and their planted effects, with literature-sized defaults.

Every group is a :class:`GroupEffects`: the group mean of each parameter that differs between
headache groups and healthy controls (``HC``). The simulator draws each subject's value
around the group mean (subject-level variability, :data:`SUBJECT_SD`), so that no single raw
feature separates the groups perfectly.

Defaults (approximate, chosen to be of the size reported, not copied from one data set):

* **Resting theta power** is raised interictally in migraine (quantitative EEG, e.g.
  Bjork et al., 2009, *J Headache Pain*, "Interictal quantitative EEG in migraine: a
  blinded controlled study"): +50 % theta (4-8 Hz) power over frontal and parietal
  regions.
* **Lack of habituation** of evoked responses across repeated blocks interictally in
  migraine (reviewed by Coppola et al., 2013, *J Headache Pain*, "Habituation and
  sensitization in primary headaches"): controls decline by
  ~10 % of the first-block amplitude per block, migraine stays flat.
* **Somatosensory gating ratio** (amplitude of the second / first response to paired
  pulses 500 ms apart): ~0.73 in controls vs ~0.83 to 0.97 in migraine (MEG, Hsiao et al.,
  2018, *Cephalalgia*, "Somatosensory gating is altered and associated with migraine
  chronification"); the default migraine mean is 0.90.
* **Post-traumatic headache** (acute ``APTH``, persistent ``PPTH``): structural and
  functional differences from controls in precentral, rostral middle frontal,
  supramarginal and cerebellar areas (e.g. Schwedt et al., 2017, *J Headache Pain*,
  persistent post-traumatic headache vs migraine, MRI; Chong and colleagues' MRI studies of
  acute post-traumatic headache). MEG effect sizes are not established: the
  defaults plant moderate theta increases in these regions (+40 %), a reduced alpha power in
  the supramarginal cortex for PPTH (-25 %), and intermediate habituation and gating values.

``effect_scale`` multiplies every difference from the ``HC`` value (0 = no effect, all groups
identical to controls; 2 = twice the default difference).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .sources import REGIONS

__all__ = ["GROUPS", "SUBJECT_SD", "GroupEffects", "resolve_groups"]


@dataclass(frozen=True)
class GroupEffects:
    """Group means of the simulated parameters.

    Parameters
    ----------
    habituation_slope : float
        Relative change of the evoked amplitude per stimulus block (block ``b`` has amplitude
        ``1 + habituation_slope * b`` times the first); negative = habituation.
    gating_ratio : float
        Second / first response amplitude to paired somatosensory pulses (>= 0).
    theta_power : dict of str to float
        Region -> ratio of resting theta power to the control value (1 = as controls).
    alpha_power : dict of str to float
        Region -> ratio of resting alpha power to the control value (1 = as controls).
    """

    habituation_slope: float = -0.10
    gating_ratio: float = 0.73
    theta_power: dict = field(default_factory=dict)
    alpha_power: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_HC = GroupEffects()

#: Built-in groups with their default (``effect_scale=1``) parameters.
GROUPS: dict[str, GroupEffects] = {
    "HC": _HC,
    "migraine": GroupEffects(
        habituation_slope=0.0,
        gating_ratio=0.90,
        theta_power={"rostral_middle_frontal_lh": 1.5, "rostral_middle_frontal_rh": 1.5,
                     "parietal_lh": 1.5, "parietal_rh": 1.5, "precuneus": 1.5},
    ),
    "APTH": GroupEffects(
        habituation_slope=-0.05,
        gating_ratio=0.80,
        theta_power={"rostral_middle_frontal_lh": 1.4, "rostral_middle_frontal_rh": 1.4,
                     "precentral_lh": 1.4, "precentral_rh": 1.4},
    ),
    "PPTH": GroupEffects(
        habituation_slope=-0.02,
        gating_ratio=0.85,
        theta_power={"precentral_lh": 1.4, "precentral_rh": 1.4,
                     "cerebellum_lh": 1.4, "cerebellum_rh": 1.4},
        alpha_power={"supramarginal_lh": 0.75, "supramarginal_rh": 0.75},
    ),
}

#: Between-subject standard deviations around the group means.
SUBJECT_SD = {
    "habituation_slope": 0.05,  # per block
    "gating_ratio": 0.10,
    "log_theta_power": 0.35,  # natural-log units, whole-subject theta level
    "log_alpha_power": 0.40,
    "alpha_peak_hz": 0.8,  # around 10 Hz
    "log_evoked_amplitude": 0.25,
}

#: Which state and regions each effect kind acts on (for the ground truth).
EFFECT_TARGETS = {
    "habituation_slope": [("auditory", "auditory_lh"), ("auditory", "auditory_rh"),
                          ("somatosensory", "postcentral_lh")],
    "gating_ratio": [("somatosensory", "postcentral_lh")],
}


def _check_number(value, what: str, *, low: float | None = None) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Invalid value for {what}: expected a number; got {value!r}.") from exc
    if not math.isfinite(value):
        raise ValueError(f"Invalid value for {what}: expected a finite number; got {value}.")
    if low is not None and value < low:
        raise ValueError(f"Invalid value for {what}: expected a number >= {low}; got {value}.")
    return value


def _validate(name: str, effects: GroupEffects) -> GroupEffects:
    _check_number(effects.habituation_slope, f"'habituation_slope' of group {name!r}")
    _check_number(effects.gating_ratio, f"'gating_ratio' of group {name!r}", low=0.0)
    for kind in ("theta_power", "alpha_power"):
        ratios = getattr(effects, kind)
        if not isinstance(ratios, dict):
            raise TypeError(f"Invalid value for '{kind}' of group {name!r}: expected a dict "
                            f"region -> power ratio; got {type(ratios).__name__}.")
        for region, ratio in ratios.items():
            if region not in REGIONS:
                raise ValueError(f"Invalid region {region!r} in '{kind}' of group {name!r}: "
                                 f"expected one of {', '.join(REGIONS)}.")
            _check_number(ratio, f"'{kind}[{region!r}]' of group {name!r} (a power ratio)",
                          low=0.0)
    return effects


def _scale(effects: GroupEffects, scale: float) -> GroupEffects:
    def ratios(d: dict) -> dict:
        return {r: 1.0 + scale * (v - 1.0) for r, v in d.items()}

    return replace(
        effects,
        habituation_slope=_HC.habituation_slope
        + scale * (effects.habituation_slope - _HC.habituation_slope),
        gating_ratio=_HC.gating_ratio + scale * (effects.gating_ratio - _HC.gating_ratio),
        theta_power=ratios(effects.theta_power),
        alpha_power=ratios(effects.alpha_power),
    )


def resolve_groups(groups, effect_scale: float = 1.0) -> dict[str, GroupEffects]:
    """Validate ``groups`` and apply ``effect_scale``.

    Parameters
    ----------
    groups : list of str | dict of str to GroupEffects or dict
        Names of built-in groups (:data:`GROUPS`), or a mapping from group name to its
        parameters (a :class:`GroupEffects` or a dict of its fields; missing fields take the
        built-in value of that group, or the ``HC`` value for a new group).
    effect_scale : float
        Multiplies every difference from the ``HC`` values (>= 0; 0 = no effect).

    Returns
    -------
    groups : dict of str to GroupEffects
        The scaled parameters of each group, in the order given.
    """
    scale = _check_number(effect_scale, "'effect_scale' (>= 0; 0 = no group effect)", low=0.0)
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    if isinstance(groups, dict):
        items = list(groups.items())
    else:
        items = []
        for name in groups:
            if name not in GROUPS:
                raise ValueError(f"Invalid group {name!r}: expected one of "
                                 f"{', '.join(GROUPS)} (or pass a dict name -> parameters "
                                 "to define a new group).")
            items.append((name, GROUPS[name]))
    if not items:
        raise ValueError("Invalid value for 'groups': expected at least one group, e.g. "
                         f"{', '.join(GROUPS)}.")
    out = {}
    for name, params in items:
        if isinstance(params, dict):
            allowed = set(GroupEffects.__dataclass_fields__)
            unknown = set(params) - allowed
            if unknown:
                raise ValueError(f"Invalid parameter(s) {sorted(unknown)} for group {name!r}: "
                                 f"expected some of {sorted(allowed)}.")
            params = replace(GROUPS.get(name, _HC), **params)
        elif not isinstance(params, GroupEffects):
            raise TypeError(f"Invalid value for group {name!r}: expected a GroupEffects or a "
                            f"dict; got {type(params).__name__}.")
        _validate(name, params)
        scaled = _scale(params, scale)
        for kind in ("theta_power", "alpha_power"):
            for region, ratio in getattr(scaled, kind).items():
                if ratio < 0:
                    raise ValueError(
                        f"Invalid value for 'effect_scale' ({scale}): it makes '{kind}' of "
                        f"{region!r} in group {name!r} negative ({ratio:.3g}); use a smaller "
                        "effect_scale.")
        out[str(name)] = scaled
    return out


def effect_list(groups: dict[str, GroupEffects]) -> list[dict]:
    """Planted effects relative to ``HC`` as ``{"group", "state", "region", "kind", "size"}``.

    ``size`` is the difference from the control value for ``habituation_slope`` and
    ``gating_ratio`` and the relative power change (ratio - 1) for ``theta_power`` and
    ``alpha_power``. Zero-size effects are left out.
    """
    effects = []
    for name, params in groups.items():
        for kind in ("habituation_slope", "gating_ratio"):
            size = getattr(params, kind) - getattr(_HC, kind)
            if abs(size) > 1e-12:
                for state, region in EFFECT_TARGETS[kind]:
                    effects.append(dict(group=name, state=state, region=region, kind=kind,
                                        size=round(size, 6),
                                        value=round(getattr(params, kind), 6),
                                        control_value=getattr(_HC, kind)))
        for kind in ("theta_power", "alpha_power"):
            for region, ratio in getattr(params, kind).items():
                if abs(ratio - 1.0) > 1e-12:
                    effects.append(dict(group=name, state="rest", region=region, kind=kind,
                                        size=round(ratio - 1.0, 6), value=round(ratio, 6),
                                        control_value=1.0))
    return effects
