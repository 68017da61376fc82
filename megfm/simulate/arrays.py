"""Synthetic MEG sensor arrays built from the helmet surfaces that MNE ships.

:func:`sensor_array` returns an :class:`mne.Info` with full sensor geometry (position, coil
orientation, MNE coil type, units) for a named system, or checks and copies the MEG channels
of a user ``info`` so that any real system can be simulated.

Sensor positions are spread evenly over MNE's helmet surface of the system
(``mne/data/helmets``) by farthest-point sampling; the coil normal is the helmet normal.
These surfaces sit at the real sensor positions (within a few millimetres for the
Vectorview helmet), so the synthetic arrays have realistic distances to the head, but they
are not the vendors' exact layouts.
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
from mne.io.constants import FIFF

from ..data.geometry import fit_sphere

__all__ = ["ARRAY_KINDS", "sensor_array"]

#: Named synthetic arrays: helmet file, number of sensor locations, layout description.
ARRAY_KINDS: dict[str, dict] = {
    "vectorview": dict(helmet="306m.fif.gz", n_locations=102,
                       doc="102 magnetometers + 204 planar gradiometers (Elekta/MEGIN)"),
    "ctf275": dict(helmet="CTF_275.fif.gz", n_locations=275, z_min=-0.075,
                   doc="275 axial gradiometers (CTF)"),
    "kit160": dict(helmet="KIT.fif.gz", n_locations=160,
                   doc="160 axial gradiometers (KIT/Yokogawa)"),
    "bti248": dict(helmet="Magnes_3600wh.fif.gz", n_locations=248,
                   doc="248 magnetometers (4D Neuroimaging Magnes 3600)"),
    "opm": dict(helmet=None, n_locations=64,
                doc="64 on-scalp OPM positions x 2 axes (radial + tangential) = 128 channels"),
}

# Where the centre of the sphere fitted to a helmet lies in head coordinates (m); measured on
# MNE's Vectorview and CTF sample recordings (both within ~5 mm of this point).
_HELMET_CENTRE_HEAD = np.array([0.0, 0.01, 0.055])
# OPM sensors: scalp-mounted on a sphere around the head-sphere centre.
_OPM_CENTRE_HEAD = np.array([0.0, 0.0, 0.04])
_OPM_RADIUS = 0.105


def _farthest_points(rr: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` points of ``rr`` spread evenly (deterministic farthest-point sampling)."""
    if n > len(rr):
        raise ValueError(f"cannot place {n} sensors on a surface of {len(rr)} vertices")
    centre = rr.mean(0)
    chosen = [int(np.argmin(np.linalg.norm(rr - centre - [0, 0, 1], axis=1)))]  # top
    dist = np.linalg.norm(rr - rr[chosen[0]], axis=1)
    for _ in range(n - 1):
        idx = int(np.argmax(dist))
        chosen.append(idx)
        dist = np.minimum(dist, np.linalg.norm(rr - rr[idx], axis=1))
    return np.array(sorted(chosen, key=lambda i: (-rr[i, 1], rr[i, 0])))


def _subdivided_helmet(fname: str, z_min: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Helmet vertices and outward unit normals, densified by adding triangle centroids."""
    path = Path(mne.__file__).parent / "data" / "helmets" / fname
    surf = mne.read_bem_surfaces(path, verbose=False)[0]
    rr, nn, tris = surf["rr"], surf["nn"], surf["tris"]
    rr = np.concatenate([rr, rr[tris].mean(1)])
    nn = np.concatenate([nn, nn[tris].mean(1)])
    if z_min is not None:
        keep = rr[:, 2] >= z_min
        rr, nn = rr[keep], nn[keep]
    centre, _ = fit_sphere(rr)
    nn = nn / np.linalg.norm(nn, axis=1, keepdims=True)
    flip = np.einsum("ij,ij->i", rr - centre, nn) < 0
    nn[flip] *= -1
    # keep the part of the surface that faces the head (drop rims and flanges)
    radial = (rr - centre) / np.linalg.norm(rr - centre, axis=1, keepdims=True)
    keep = np.einsum("ij,ij->i", radial, nn) > 0.6
    return rr[keep], nn[keep]


def _tangents(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``normal`` and to each other (ex, ey)."""
    ref = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    ex = np.cross(ref, normal)
    ex /= np.linalg.norm(ex)
    ey = np.cross(normal, ex)
    return ex, ey


def _channel(name: str, pos, ex, ey, ez, coil_type: int, unit: int) -> dict:
    loc = np.zeros(12)
    loc[:3], loc[3:6], loc[6:9], loc[9:12] = pos, ex, ey, ez
    return dict(ch_name=name, kind=FIFF.FIFFV_MEG_CH, coil_type=coil_type, unit=unit,
                loc=loc, coord_frame=FIFF.FIFFV_COORD_DEVICE)


def _build_chs(kind: str, rr: np.ndarray, nn: np.ndarray) -> list[dict]:
    chs = []
    for i, (pos, ez) in enumerate(zip(rr, nn, strict=True), start=1):
        ex, ey = _tangents(ez)
        if kind == "vectorview":
            base = f"MEG {i:03d}"
            chs.append(_channel(base + "2", pos, ex, ey, ez, FIFF.FIFFV_COIL_VV_PLANAR_T1,
                                FIFF.FIFF_UNIT_T_M))
            chs.append(_channel(base + "3", pos, ey, -ex, ez, FIFF.FIFFV_COIL_VV_PLANAR_T1,
                                FIFF.FIFF_UNIT_T_M))
            chs.append(_channel(base + "1", pos, ex, ey, ez, FIFF.FIFFV_COIL_VV_MAG_T3,
                                FIFF.FIFF_UNIT_T))
        elif kind == "ctf275":
            chs.append(_channel(f"MEG {i:03d}", pos, ex, ey, ez, FIFF.FIFFV_COIL_CTF_GRAD,
                                FIFF.FIFF_UNIT_T))
        elif kind == "kit160":
            chs.append(_channel(f"MEG {i:03d}", pos, ex, ey, ez, FIFF.FIFFV_COIL_KIT_GRAD,
                                FIFF.FIFF_UNIT_T))
        elif kind == "bti248":
            chs.append(_channel(f"A{i}", pos, ex, ey, ez, FIFF.FIFFV_COIL_MAGNES_MAG,
                                FIFF.FIFF_UNIT_T))
        elif kind == "opm":
            coil = FIFF.FIFFV_COIL_QUSPIN_ZFOPM_MAG2
            chs.append(_channel(f"OPM{i:03d}-Z", pos, ex, ey, ez, coil, FIFF.FIFF_UNIT_T))
            # tangential axis: the sensitive (z) axis of the coil points along ey
            chs.append(_channel(f"OPM{i:03d}-Y", pos, ex, -ez, ey, coil, FIFF.FIFF_UNIT_T))
    return chs


def _opm_positions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scalp positions (head frame) on the upper part of a sphere; radial normals."""
    # Fibonacci sphere restricted to elevations above ~-25 degrees.
    k = np.arange(n) + 0.5
    z = 1 - k / n * (1 - np.sin(np.deg2rad(-25)))
    phi = np.pi * (1 + 5**0.5) * k
    r_xy = np.sqrt(1 - z**2)
    nn = np.c_[r_xy * np.cos(phi), r_xy * np.sin(phi), z]
    return _OPM_CENTRE_HEAD + _OPM_RADIUS * nn, nn


def _check_user_info(info: mne.Info) -> mne.Info:
    picks = mne.pick_types(info, meg=True, ref_meg=False, exclude=[])
    if len(picks) == 0:
        raise ValueError("Invalid value for 'kind': the info has no MEG channels; pass an "
                         "info of a MEG recording or one of " + ", ".join(ARRAY_KINDS) + ".")
    locs = np.array([info["chs"][p]["loc"][:3] for p in picks])
    normals = np.array([info["chs"][p]["loc"][9:12] for p in picks])
    bad = ~np.isfinite(locs).all(1) | (np.linalg.norm(locs, axis=1) < 1e-6) | (
        np.linalg.norm(normals, axis=1) < 1e-6)
    if bad.any():
        names = [info["ch_names"][p] for p in picks[bad]][:5]
        raise ValueError(
            f"Invalid value for 'kind': {int(bad.sum())} MEG channel(s) of the info have no "
            f"sensor location (e.g. {', '.join(names)}); pass an info read from a recording "
            "(mne.io.read_info) or a named array: " + ", ".join(ARRAY_KINDS) + ".")
    out = mne.pick_info(info, picks, copy=True, verbose=False)
    with out._unlock():
        if out["dev_head_t"] is None:
            out["dev_head_t"] = mne.transforms.Transform("meg", "head")
        out["bads"] = []
        out["projs"] = []
        out["comps"] = []
    return out


def sensor_array(kind: str | mne.Info = "vectorview", *, sfreq: float = 1000.0) -> mne.Info:
    """Return the sensor array of a MEG system as an :class:`mne.Info`.

    Parameters
    ----------
    kind : str | mne.Info
        One of ``"vectorview"`` (102 magnetometers + 204 planar gradiometers), ``"ctf275"``
        (275 axial gradiometers), ``"kit160"`` (160 axial gradiometers), ``"bti248"``
        (248 magnetometers), ``"opm"`` (64 scalp positions x 2 axes, radial and tangential);
        or the ``info`` of a real recording, whose MEG channels (reference sensors dropped)
        and device->head transform are kept.
    sfreq : float
        Sampling frequency written into the info (Hz).

    Returns
    -------
    info : mne.Info
        MEG channels in the device frame with MNE coil types and units (T for magnetometers,
        axial gradiometers and OPM axes, T/m for planar gradiometers) and ``dev_head_t`` set
        so the head (sphere centre ``(0, 0, 0.04)`` m in head coordinates) sits in the helmet.

    Raises
    ------
    ValueError
        For an unknown array name or an info without MEG sensor locations.
    """
    if isinstance(kind, mne.Info):
        info = _check_user_info(kind)
        if float(info["sfreq"]) != float(sfreq):
            with info._unlock():
                info["sfreq"] = float(sfreq)
                info["lowpass"] = float(sfreq) / 2
        return info
    if not isinstance(kind, str):
        raise TypeError(f"Invalid type for 'kind': expected a str or mne.Info; "
                        f"got {type(kind).__name__}.")
    if kind not in ARRAY_KINDS:
        raise ValueError(f"Invalid value for 'kind' (sensor array): expected one of "
                         f"{', '.join(ARRAY_KINDS)} or an mne.Info; got {kind!r}.")
    spec = ARRAY_KINDS[kind]
    if spec["helmet"] is None:  # OPM: sensors are on the head, device frame = head frame
        rr, nn = _opm_positions(spec["n_locations"])
        trans = np.eye(4)
    else:
        rr_all, nn_all = _subdivided_helmet(spec["helmet"], spec.get("z_min"))
        idx = _farthest_points(rr_all, spec["n_locations"])
        rr, nn = rr_all[idx], nn_all[idx]
        centre, _ = fit_sphere(rr_all)
        trans = np.eye(4)
        trans[:3, 3] = _HELMET_CENTRE_HEAD - centre
    chs = _build_chs(kind, rr, nn)
    info = mne.create_info([ch["ch_name"] for ch in chs], sfreq, "mag", verbose=False)
    with info._unlock():
        for ch, new in zip(info["chs"], chs, strict=True):
            ch.update(new)
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", trans)
        info["line_freq"] = 50.0
        info["description"] = f"megfm synthetic {kind} array: {spec['doc']}"
    info._check_consistency()
    return info
