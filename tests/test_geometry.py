"""SensorGeometry on every real system in the test data, plus synthetic checks."""

from __future__ import annotations

from collections import defaultdict

import mne
import numpy as np
import pytest

from megfm.data import SENSOR_TYPES, SensorGeometry
from megfm.data.read import read_raw

REAL = {"vectorview": 306, "triux": 306, "vectorview90": 306, "ctf275": 273, "ctf151": 151,
        "kit": 160}


def _fit_sphere(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre: |p|^2 = 2 p.c + (r^2 - |c|^2)."""
    a = np.c_[2 * points, np.ones(len(points))]
    b = (points ** 2).sum(1)
    return np.linalg.lstsq(a, b, rcond=None)[0][:3]


def _radial_cosines(geom: SensorGeometry) -> np.ndarray:
    centre = _fit_sphere(geom.positions.astype(float))
    radial = geom.positions - centre
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    return np.abs((radial * geom.orientations).sum(1))


@pytest.fixture(scope="module")
def geometries(real_file):
    return {name: SensorGeometry.from_info(read_raw(real_file(name), preload=False).info)
            for name in REAL}


@pytest.mark.parametrize("name", list(REAL))
def test_every_real_file(geometries, name):
    geom = geometries[name]
    assert geom.n_sensors == REAL[name]
    assert geom.frame == "device"
    assert np.isfinite(geom.positions).all()
    np.testing.assert_allclose(np.linalg.norm(geom.orientations, axis=1), 1.0, atol=1e-5)
    # sensors sit on a helmet: 5 to 20 cm from its centre, no two identical (pos, ori)
    centre = _fit_sphere(geom.positions.astype(float))
    dist = np.linalg.norm(geom.positions - centre, axis=1)
    assert 0.05 < dist.min() and dist.max() < 0.2
    keys = np.round(np.c_[geom.positions, geom.orientations], 5)
    assert len(np.unique(keys, axis=0)) == geom.n_sensors


def test_vectorview_triplets(geometries):
    for name in ("vectorview", "triux"):
        geom = geometries[name]
        assert geom.type_names.count("mag") == 102
        assert geom.type_names.count("planar_grad") == 204
        triplets = defaultdict(list)
        for i, ch in enumerate(geom.names):
            triplets[ch.replace(" ", "")[:-1]].append(i)
        assert len(triplets) == 102
        for idx in triplets.values():
            assert len(idx) == 3
            # the three sensors of a triplet share a position
            np.testing.assert_allclose(geom.positions[idx], geom.positions[idx[:1]].repeat(3, 0),
                                       atol=1e-6)
            grads = [i for i in idx if geom.type_names[i] == "planar_grad"]
            mag = [i for i in idx if geom.type_names[i] == "mag"][0]
            o1, o2 = geom.orientations[grads]
            assert abs(o1 @ o2) < 1e-4  # planar pair orthogonal
            # both gradient directions lie in the coil plane (orthogonal to the mag normal)
            assert abs(o1 @ geom.orientations[mag]) < 1e-2
            assert abs(o2 @ geom.orientations[mag]) < 1e-2


@pytest.mark.parametrize("name", ["ctf275", "ctf151", "kit"])
def test_axial_gradiometers_roughly_radial(geometries, name):
    geom = geometries[name]
    assert set(geom.type_names) == {"axial_grad"}
    cos = _radial_cosines(geom)
    assert np.median(cos) > 0.9
    assert np.mean(cos > 0.7) > 0.9


def test_vectorview_magnetometers_roughly_radial(geometries):
    geom = geometries["vectorview"]
    mags = geom.pick(np.flatnonzero(geom.types == 0))
    assert np.median(_radial_cosines(mags)) > 0.85


def test_reference_sensors_excluded(real_file):
    info = read_raw(real_file("ctf275"), preload=False).info
    n_ref = len(mne.pick_types(info, meg=False, ref_meg=True))
    assert n_ref > 0
    geom = SensorGeometry.from_info(info)
    ref_names = {info["ch_names"][i] for i in mne.pick_types(info, meg=False, ref_meg=True)}
    assert not ref_names & set(geom.names)


def test_head_frame_is_rigid_transform(real_file):
    info = read_raw(real_file("vectorview"), preload=False).info
    dev = SensorGeometry.from_info(info)
    head = SensorGeometry.from_info(info, frame="head")
    assert head.frame == "head"
    trans = info["dev_head_t"]["trans"]
    np.testing.assert_allclose(head.positions, dev.positions @ trans[:3, :3].T + trans[:3, 3],
                               atol=1e-6)
    # distances and angles are preserved
    d_dev = np.linalg.norm(dev.positions[:50, None] - dev.positions[None, :50], axis=-1)
    d_head = np.linalg.norm(head.positions[:50, None] - head.positions[None, :50], axis=-1)
    np.testing.assert_allclose(d_dev, d_head, atol=1e-6)
    np.testing.assert_allclose((dev.orientations * dev.orientations[::-1]).sum(1),
                               (head.orientations * head.orientations[::-1]).sum(1), atol=1e-5)


def test_bads_flagged(real_file):
    info = read_raw(real_file("vectorview"), preload=False).info.copy()
    info["bads"] = [info["ch_names"][0]]
    geom = SensorGeometry.from_info(info)
    assert geom.bads[0] and geom.bads.sum() == 1


# ---------------------------------------------------------------------------- synthetic
def _info(types=("mag", "grad", "grad")):
    info = mne.create_info([f"C{i}" for i in range(len(types))], 100.0, list(types))
    for i, ch in enumerate(info["chs"]):
        ch["loc"][:3] = [0.0, 0.0, 0.1 + 0.001 * i]
        ch["loc"][3:6] = [1.0, 0.0, 0.0] if i != 2 else [0.0, 2.0, 0.0]
        ch["loc"][6:9] = [0.0, 1.0, 0.0]
        ch["loc"][9:12] = [0.0, 0.0, 3.0]
    return info


def test_synthetic_orientation_rules():
    geom = SensorGeometry.from_info(_info())
    assert geom.type_names == ["mag", "planar_grad", "planar_grad"]
    np.testing.assert_allclose(geom.orientations, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(geom.positions[:, 2], [0.1, 0.101, 0.102], atol=1e-7)


def test_synthetic_roundtrip_and_pick():
    geom = SensorGeometry.from_info(_info())
    assert SensorGeometry.from_dict(geom.to_dict()) == geom
    sub = geom.pick([2, 0])
    assert sub.names == ["C2", "C0"] and sub.type_names == ["planar_grad", "mag"]


def test_no_locations_error():
    info = mne.create_info(["A", "B"], 100.0, "mag")
    with pytest.raises(ValueError, match="no sensor locations"):
        SensorGeometry.from_info(info)


def test_no_meg_error():
    info = mne.create_info(["E"], 100.0, "eeg")
    with pytest.raises(ValueError, match="no MEG channels"):
        SensorGeometry.from_info(info)


def test_head_frame_needs_transform():
    with pytest.raises(ValueError, match="dev_head_t"):
        SensorGeometry.from_info(_info(), frame="head")


def test_invalid_frame():
    with pytest.raises(ValueError, match="'frame'"):
        SensorGeometry.from_info(_info(), frame="mri")


def test_type_codes_match_names():
    assert SENSOR_TYPES.index("planar_grad") == 1


# --- SensorGeometry.to_info and fit_sphere
def _cap(n: int, radius: float = 0.11, centre=(0.0, 0.01, 0.04), seed: int = 0) -> np.ndarray:
    """``n`` points on the upper part of a sphere, as sensors on a helmet."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, 1.2, n)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    unit = np.c_[np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
    return np.asarray(centre) + radius * unit


def _mixed_geometry() -> SensorGeometry:
    """Two sensors of every megfm type: radial normals, tangential planar gradients."""
    pos = _cap(8)
    radial = (pos - [0.0, 0.01, 0.04]) / 0.11
    tangent = np.cross(radial, [0.0, 0.0, 1.0])
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    ori = np.where(np.isin(np.arange(8), [2, 3])[:, None], tangent, radial)
    return SensorGeometry(names=[f"S{i}" for i in range(8)], positions=pos, orientations=ori,
                          types=np.repeat(np.arange(4), 2),
                          bads=np.array([False, True] + [False] * 6))


def test_fit_sphere_recovers_a_helmet_and_falls_back_on_a_plane():
    from megfm.data.geometry import fit_sphere

    centre, radius = fit_sphere(_cap(30))
    np.testing.assert_allclose(centre, [0.0, 0.01, 0.04], atol=1e-9)
    assert radius == pytest.approx(0.11)
    np.testing.assert_allclose(centre, _fit_sphere(_cap(30)))  # the textbook formula
    # nearly flat points: the fitted centre is far away, so the mean stands in
    flat = np.c_[np.random.default_rng(1).uniform(-0.1, 0.1, (20, 2)), np.full(20, 0.3)]
    flat += 1e-4 * np.random.default_rng(2).standard_normal((20, 3))
    centre, radius = fit_sphere(flat)
    np.testing.assert_allclose(centre, flat.mean(0))
    np.testing.assert_allclose(radius, np.median(np.linalg.norm(flat - flat.mean(0), axis=1)))
    np.testing.assert_allclose(fit_sphere(_cap(3))[0], _cap(3).mean(0))  # too few points
    # a ring in a plane: a centre on its axis (the topomap projection relies on it)
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.c_[0.1 * np.cos(angles), 0.1 * np.sin(angles), np.full(12, 0.05)]
    np.testing.assert_allclose(fit_sphere(ring)[0][:2], [0.0, 0.0], atol=1e-12)


def test_to_info_coils_and_channel_types_per_sensor_type():
    from mne.io.constants import FIFF

    geom = _mixed_geometry()
    info = geom.to_info(250.0)
    assert info["sfreq"] == 250.0 and info["ch_names"] == geom.names
    assert info.get_channel_types() == ["mag", "mag", "grad", "grad", "mag", "mag", "mag", "mag"]
    coils = [int(ch["coil_type"]) for ch in info["chs"]]
    assert coils == [FIFF.FIFFV_COIL_POINT_MAGNETOMETER] * 2 + [FIFF.FIFFV_COIL_VV_PLANAR_T1] * 2 \
        + [FIFF.FIFFV_COIL_CTF_GRAD] * 2 + [FIFF.FIFFV_COIL_QUSPIN_ZFOPM_MAG2] * 2
    units = [int(ch["unit"]) for ch in info["chs"]]
    assert units == [FIFF.FIFF_UNIT_T] * 2 + [FIFF.FIFF_UNIT_T_M] * 2 + [FIFF.FIFF_UNIT_T] * 4
    assert all(ch["coord_frame"] == FIFF.FIFFV_COORD_DEVICE for ch in info["chs"])
    assert info["bads"] == ["S1"]
    np.testing.assert_allclose(info["dev_head_t"]["trans"], np.eye(4))
    for ch in info["chs"]:  # orthonormal, right-handed coil frames
        axes = ch["loc"][3:12].reshape(3, 3)
        np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(axes) == pytest.approx(1.0)
    # planar gradiometers: gradient along the orientation, normal radial from the sphere centre
    for i in (2, 3):
        ex, ez = info["chs"][i]["loc"][3:6], info["chs"][i]["loc"][9:12]
        np.testing.assert_allclose(ex, geom.orientations[i], atol=1e-12)
        radial = geom.positions[i] - [0.0, 0.01, 0.04]
        np.testing.assert_allclose(ez, radial / np.linalg.norm(radial), atol=1e-6)
    # MNE computes fields on it: every coil type has a definition
    sphere = mne.make_sphere_model(r0=(0.0, 0.01, 0.04), head_radius=0.09, verbose=False)
    dip = mne.Dipole(np.array([0.0]), np.array([[0.02, 0.01, 0.09]]), np.array([1e-8]),
                     np.array([[0.0, 1.0, 0.0]]), np.array([1.0]))
    fwd, _ = mne.make_forward_dipole(dip, sphere, info, verbose=False)
    field = fwd["sol"]["data"][:, 0]
    assert field.shape == (8,) and np.all(np.isfinite(field)) and np.all(field != 0)


def test_to_info_round_trips_through_from_info():
    geom = _mixed_geometry()
    back = SensorGeometry.from_info(geom.to_info(1000.0))
    assert back.names == geom.names
    np.testing.assert_allclose(back.positions, geom.positions, atol=1e-12)
    np.testing.assert_allclose(back.orientations, geom.orientations, atol=1e-12)
    np.testing.assert_array_equal(back.types, geom.types)
    np.testing.assert_array_equal(back.bads, geom.bads)
    # a device->head transform is recorded for a device-frame geometry only
    trans = np.eye(4)
    trans[:3, 3] = [0.0, 0.0, 0.04]
    info = geom.to_info(1000.0, dev_head_t=trans)
    np.testing.assert_allclose(info["dev_head_t"]["trans"], trans)
    head = SensorGeometry.from_info(info, frame="head")
    np.testing.assert_allclose(head.positions, geom.positions + [0.0, 0.0, 0.04], atol=1e-12)
    with pytest.raises(ValueError, match="4x4 transform"):
        geom.to_info(1000.0, dev_head_t=np.eye(3))


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(REAL))
def test_to_info_round_trips_real_systems(geometries, name):
    geom = geometries[name]
    back = SensorGeometry.from_info(geom.to_info(1000.0))
    np.testing.assert_allclose(back.positions, geom.positions, atol=1e-6)
    np.testing.assert_allclose(back.orientations, geom.orientations, atol=1e-5)
    np.testing.assert_array_equal(back.types, geom.types)
