"""Named source regions, per-subject head placement and the gain matrix.

Sources are current dipoles in a spherical head model (:func:`mne.make_sphere_model`, centre
``(0, 0, 0.04)`` m in head coordinates). Each named region is one dipole at a typical
location of that cortical area in head coordinates (x right, y anterior, z up, origin between
the ears) with a tangential orientation (radial dipoles are silent in a sphere). A set of
background dipoles spread over the cortex carries the 1/f activity.

Each subject gets its own head position in the helmet (a shift of the device->head
transform) and small jitter of source locations and orientations; the gain matrix is
computed once per subject with :func:`mne.make_forward_solution` and reused for every state.
"""

from __future__ import annotations

from dataclasses import dataclass

import mne
import numpy as np

__all__ = ["REGIONS", "SPHERE_CENTRE", "SubjectAnatomy", "make_subject_anatomy",
           "region_field"]

#: Centre of the spherical head model in head coordinates (m).
SPHERE_CENTRE = np.array([0.0, 0.0, 0.04])

# name -> (position in head coordinates (m), preferred tangential orientation, hemisphere).
# Positions are typical locations of the areas relative to the head frame (approximate,
# transposed from MNI atlas coordinates to a head-sized sphere).
_REGION_TABLE: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str]] = {
    # superior/transverse temporal gyrus; M100 dipole perpendicular to the Sylvian fissure
    "auditory_lh": ((-0.052, 0.005, 0.045), (0.0, 0.2, 1.0), "lh"),
    "auditory_rh": ((0.052, 0.005, 0.045), (0.0, 0.2, 1.0), "rh"),
    # postcentral hand area; N20m/M20 dipole points anterior/posterior across the sulcus
    "postcentral_lh": ((-0.040, -0.012, 0.100), (0.0, 1.0, -0.3), "lh"),
    "postcentral_rh": ((0.040, -0.012, 0.100), (0.0, 1.0, -0.3), "rh"),
    "precentral_lh": ((-0.038, 0.010, 0.100), (0.0, 1.0, -0.3), "lh"),
    "precentral_rh": ((0.038, 0.010, 0.100), (0.0, 1.0, -0.3), "rh"),
    # occipital and parietal alpha generators (calcarine / parieto-occipital sulcus)
    "occipital_lh": ((-0.025, -0.070, 0.050), (1.0, 0.0, 0.4), "lh"),
    "occipital_rh": ((0.025, -0.070, 0.050), (-1.0, 0.0, 0.4), "rh"),
    "parietal_lh": ((-0.035, -0.055, 0.090), (0.0, 0.4, 1.0), "lh"),
    "parietal_rh": ((0.035, -0.055, 0.090), (0.0, 0.4, 1.0), "rh"),
    "precuneus": ((0.0, -0.060, 0.085), (1.0, 0.0, 0.0), "midline"),
    "supramarginal_lh": ((-0.055, -0.035, 0.075), (0.0, 1.0, 0.3), "lh"),
    "supramarginal_rh": ((0.055, -0.035, 0.075), (0.0, 1.0, 0.3), "rh"),
    "rostral_middle_frontal_lh": ((-0.035, 0.062, 0.070), (1.0, 0.0, 0.3), "lh"),
    "rostral_middle_frontal_rh": ((0.035, 0.062, 0.070), (-1.0, 0.0, 0.3), "rh"),
    "cerebellum_lh": ((-0.030, -0.065, 0.000), (1.0, 0.3, 0.0), "lh"),
    "cerebellum_rh": ((0.030, -0.065, 0.000), (-1.0, 0.3, 0.0), "rh"),
}


def _tangential(pos: np.ndarray, ori: np.ndarray) -> np.ndarray:
    radial = pos - SPHERE_CENTRE
    radial = radial / np.linalg.norm(radial)
    ori = ori - (ori @ radial) * radial
    return ori / np.linalg.norm(ori)


#: Named regions: ``{name: {"position": (3,), "orientation": (3,), "hemisphere": str}}``.
REGIONS: dict[str, dict] = {
    name: {"position": np.array(pos), "orientation": _tangential(np.array(pos), np.array(ori)),
           "hemisphere": hemi}
    for name, (pos, ori, hemi) in _REGION_TABLE.items()
}

N_BACKGROUND = 40  # background (1/f) dipoles
_BACKGROUND_RADIUS = 0.065  # m from the sphere centre


def _background_positions(n: int = N_BACKGROUND) -> np.ndarray:
    """Fixed, evenly spread cortical positions for the background dipoles (head frame)."""
    k = np.arange(n) + 0.5
    z = 1 - k / n * 1.2  # down to ~12 degrees below the equator of the sphere
    phi = np.pi * (1 + 5**0.5) * k
    r_xy = np.sqrt(np.clip(1 - z**2, 0, None))
    return SPHERE_CENTRE + _BACKGROUND_RADIUS * np.c_[r_xy * np.cos(phi), r_xy * np.sin(phi), z]


@dataclass
class SubjectAnatomy:
    """One subject's head placement and source gains.

    Attributes
    ----------
    info : mne.Info
        The array info with this subject's device->head transform.
    head_offset : array, shape (3,)
        Shift of the head in the helmet (m, head frame) relative to the array default.
    region_names : list of str
        Names of the region dipoles, the first columns of ``gain``.
    gain : array, shape (n_channels, n_regions + n_background)
        Field at each channel (T or T/m) per unit dipole moment (A*m), fixed orientation.
    positions : array, shape (n_regions + n_background, 3)
        Dipole positions (head frame, m) after jitter.
    """

    info: mne.Info
    head_offset: np.ndarray
    region_names: list[str]
    gain: np.ndarray
    positions: np.ndarray

    @property
    def n_regions(self) -> int:
        return len(self.region_names)

    def region_gain(self, name: str) -> np.ndarray:
        """Column of ``gain`` for region ``name``, shape (n_channels,)."""
        return self.gain[:, self.region_names.index(name)]


def _random_tangential(rng: np.random.Generator, pos: np.ndarray) -> np.ndarray:
    return _tangential(pos, rng.standard_normal(3))


def _gain(info: mne.Info, pos: np.ndarray, ori: np.ndarray, *, bem=None,
          trans=None) -> np.ndarray:
    """Fixed-orientation gain (n_channels, n_dipoles) of dipoles in a head model.

    ``bem`` is None (a sphere model centred at :data:`SPHERE_CENTRE`), or anything
    :func:`mne.make_forward_solution` takes as ``bem`` (a BEM solution file or
    ``ConductorModel``, in MRI coordinates related to head coordinates by ``trans``).
    """
    if bem is None:
        bem = mne.make_sphere_model(r0=tuple(SPHERE_CENTRE), head_radius=None, verbose=False)
    src = mne.setup_volume_source_space(pos=dict(rr=pos, nn=ori), verbose=False)
    fwd = mne.make_forward_solution(info, trans=trans, src=src, bem=bem, meg=True, eeg=False,
                                    mindist=0.0, verbose=False)
    free = fwd["sol"]["data"].reshape(len(info["ch_names"]), len(pos), 3)
    return np.einsum("cdk,dk->cd", free, ori)


def make_subject_anatomy(
    info: mne.Info,
    rng: np.random.Generator,
    *,
    head_shift_mm: float = 5.0,
    location_jitter_mm: float = 3.0,
    orientation_jitter_deg: float = 10.0,
    bem=None,
    trans=None,
) -> SubjectAnatomy:
    """Place one subject's head in the array and compute the gain matrix once.

    Parameters
    ----------
    info : mne.Info
        The sensor array (from :func:`megfm.simulate.sensor_array`).
    rng : numpy.random.Generator
        The subject's random generator.
    head_shift_mm : float
        Standard deviation of the head shift in the helmet, per axis (mm).
    location_jitter_mm : float
        Standard deviation of the jitter of each source location, per axis (mm).
    orientation_jitter_deg : float
        Approximate standard deviation of the jitter of region orientations (degrees).
    bem : str | path-like | mne.bem.ConductorModel | None
        Head model; None uses a sphere model. A BEM must contain the regions' head-frame
        positions (they are placed for an average adult head).
    trans : str | mne.transforms.Transform | None
        Head <-> MRI transform of the BEM (None: identity).

    Returns
    -------
    anatomy : SubjectAnatomy
    """
    info = info.copy()
    offset = rng.normal(0.0, head_shift_mm / 1000.0, 3)
    offset[2] = -abs(offset[2])  # the head does not go further up into the helmet
    dev_head = info["dev_head_t"]["trans"].copy()
    # head point = dev_head @ device point; moving the head by +offset moves sensors by -offset
    dev_head[:3, 3] -= offset
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_head)
    names = list(REGIONS)
    pos = np.array([REGIONS[n]["position"] for n in names])
    ori = np.array([REGIONS[n]["orientation"] for n in names])
    pos = pos + rng.normal(0.0, location_jitter_mm / 1000.0, pos.shape)
    ori = ori + rng.normal(0.0, np.deg2rad(orientation_jitter_deg), ori.shape)
    ori = np.array([_tangential(p, o) for p, o in zip(pos, ori, strict=True)])
    bg_pos = _background_positions()
    bg_ori = np.array([_random_tangential(rng, p) for p in bg_pos])
    all_pos = np.concatenate([pos, bg_pos])
    all_ori = np.concatenate([ori, bg_ori])
    gain = _gain(info, all_pos, all_ori, bem=bem, trans=trans)
    return SubjectAnatomy(info=info, head_offset=offset, region_names=names, gain=gain,
                          positions=all_pos)


def region_field(info: mne.Info, regions: list[str]) -> np.ndarray:
    """Summed absolute field pattern of ``regions`` (no jitter, default head position).

    Used for the ``expected_sensors`` of the ground truth: sensors whose |field| exceeds
    half of the maximum, per channel type (magnetometer-like and planar gradiometers are
    scaled separately, since their units differ).

    Returns
    -------
    field : array, shape (n_channels,)
        Per channel, the |field| divided by the maximum over channels of its unit.
    """
    pos = np.array([REGIONS[n]["position"] for n in regions])
    ori = np.array([REGIONS[n]["orientation"] for n in regions])
    gain = np.abs(_gain(info, pos, ori)).sum(1)
    units = np.array([ch["unit"] for ch in info["chs"]])
    out = np.zeros_like(gain)
    for unit in np.unique(units):
        sel = units == unit
        out[sel] = gain[sel] / gain[sel].max()
    return out
