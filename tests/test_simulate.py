"""Simulator: sensor arrays, cohort output, determinism and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mne
import numpy as np
import pytest

from megfm.data.geometry import SensorGeometry
from megfm.simulate import (
    ARRAY_KINDS,
    GROUPS,
    STIM_CHANNEL,
    GroupEffects,
    resolve_groups,
    sensor_array,
    simulate_cohort,
)
from megfm.simulate.sources import SPHERE_CENTRE, make_subject_anatomy

# kind -> (n_channels, {sensor type name: count})
EXPECTED_ARRAYS = {
    "vectorview": (306, {"mag": 102, "planar_grad": 204}),
    "ctf275": (275, {"axial_grad": 275}),
    "kit160": (160, {"axial_grad": 160}),
    "bti248": (248, {"mag": 248}),
    "opm": (128, {"opm": 128}),
}

SMALL = dict(array="kit160", duration=16.0, sfreq=200.0, block_size=3)


def test_every_named_array_is_tested():
    assert set(EXPECTED_ARRAYS) == set(ARRAY_KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED_ARRAYS))
def test_sensor_array_geometry_and_forward(kind):
    info = sensor_array(kind, sfreq=250.0)
    n_channels, counts = EXPECTED_ARRAYS[kind]
    assert len(info["ch_names"]) == n_channels
    assert len(set(info["ch_names"])) == n_channels
    assert info["sfreq"] == 250.0
    geom = SensorGeometry.from_info(info)
    names = geom.type_names
    assert {t: names.count(t) for t in set(names)} == counts
    # unit orientations, sensors outside the head, head in the helmet
    assert np.allclose(np.linalg.norm(geom.orientations, axis=1), 1.0, atol=1e-6)
    head = mne.transforms.apply_trans(info["dev_head_t"], geom.positions)
    dist = np.linalg.norm(head - SPHERE_CENTRE, axis=1)
    assert dist.min() > 0.085 and dist.max() < 0.16
    # coil normals point away from the head (outward), except tangential OPM axes
    normals = np.array([ch["loc"][9:12] for ch in info["chs"]])
    radial = (head - SPHERE_CENTRE) / dist[:, None]
    normals_head = normals @ info["dev_head_t"]["trans"][:3, :3].T
    cos = np.einsum("ij,ij->i", normals_head, radial)
    if kind == "opm":
        assert np.sum(cos > 0.99) == 64 and np.sum(np.abs(cos) < 1e-6) == 64
    else:
        assert np.all(cos > 0.5)
    # planar gradiometer pairs are orthogonal
    if kind == "vectorview":
        grads = geom.orientations[geom.types == 1]
        assert np.allclose(np.einsum("ij,ij->i", grads[::2], grads[1::2]), 0.0, atol=1e-6)
    # MNE computes a forward solution (through the subject's anatomy)
    anatomy = make_subject_anatomy(info, np.random.default_rng(0))
    assert anatomy.gain.shape == (n_channels, anatomy.positions.shape[0])
    assert np.all(np.isfinite(anatomy.gain))
    assert np.abs(anatomy.gain).max() > 0


def test_sensor_array_from_user_info(real_file):
    info = mne.io.read_info(real_file("ctf275"), verbose=False)
    out = sensor_array(info, sfreq=300.0)
    assert out["sfreq"] == 300.0
    assert all(ch["kind"] == mne.io.constants.FIFF.FIFFV_MEG_CH for ch in out["chs"])
    assert len(out["ch_names"]) == len(mne.pick_types(info, meg=True, ref_meg=False))


def test_sensor_array_from_synthetic_info_roundtrip():
    info = sensor_array("bti248")
    again = sensor_array(info, sfreq=500.0)
    assert again["ch_names"] == info["ch_names"]
    assert again["sfreq"] == 500.0


def test_sensor_array_bad_input():
    with pytest.raises(ValueError, match="vectorview, ctf275, kit160, bti248, opm"):
        sensor_array("neuromag")
    with pytest.raises(TypeError, match="str or mne.Info"):
        sensor_array(3)
    info = mne.create_info(["MEG 001", "MEG 002"], 250.0, "mag")
    with pytest.raises(ValueError, match="no sensor location"):
        sensor_array(info)
    eeg = mne.create_info(["Fz"], 250.0, "eeg")
    with pytest.raises(ValueError, match="no MEG channels"):
        sensor_array(eeg)


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    result = simulate_cohort(out, n_subjects=2, groups=["HC", "migraine"], seed=3,
                             verbose=False, **SMALL)
    return out, result


def test_cohort_layout(small_cohort):
    out, result = small_cohort
    names = sorted(p.name for p in out.glob("*_raw.fif"))
    assert names == sorted(f"sub-00{s}_task-{t}_raw.fif" for s in (1, 2)
                           for t in ("rest", "auditory", "somatosensory"))
    assert not list(out.glob(".megfm-sim-*"))  # temporary folder removed
    with open(out / "participants.tsv", encoding="utf-8") as fid:
        rows = list(csv.DictReader(fid, delimiter="\t"))
    assert [(r["participant_id"], r["group"]) for r in rows] == [("sub-001", "HC"),
                                                                   ("sub-002", "migraine")]
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth == result["ground_truth"]
    for key in ("array", "sfreq", "seed", "effect_scale", "groups", "effects", "regions",
                "state_regions", "expected_sensors"):
        assert key in truth
    assert truth["array"] == "kit160" and truth["seed"] == 3
    assert set(truth["groups"]) == {"HC", "migraine"}
    kinds = {(e["group"], e["kind"]) for e in truth["effects"]}
    assert ("migraine", "gating_ratio") in kinds and ("migraine", "theta_power") in kinds
    assert all(e["group"] != "HC" for e in truth["effects"])
    assert truth["state_regions"] == {"auditory": ["auditory_lh", "auditory_rh"],
                                      "somatosensory": ["postcentral_lh"]}
    info = sensor_array("kit160")
    for state in ("auditory", "somatosensory"):
        expected = truth["expected_sensors"][state]
        assert 0 < len(expected) < len(info["ch_names"]) / 2
        assert set(expected) <= set(info["ch_names"])
    assert len(result["recordings"]) == 6


def test_cohort_events_and_blocks(small_cohort):
    out, _ = small_cohort
    raw = mne.io.read_raw_fif(out / "sub-001_task-somatosensory_raw.fif", verbose=False)
    assert raw.info["sfreq"] == 200.0
    assert STIM_CHANNEL in raw.ch_names
    events = mne.find_events(raw, stim_channel=STIM_CHANNEL, verbose=False)
    first = events[events[:, 2] == 2, 0] / raw.info["sfreq"]
    second = events[events[:, 2] == 3, 0] / raw.info["sfreq"]
    assert len(first) == len(second) == 6  # 2 blocks of 3 paired pulses
    assert np.allclose(second - first, 0.5, atol=0.01)
    isi = np.diff(first)
    within = isi[isi < 2.0]
    assert np.all((within > 1.35) & (within < 1.65))
    gaps = isi[isi >= 2.0]
    assert len(gaps) == 1 and gaps[0] > 2 * np.median(within)
    raw = mne.io.read_raw_fif(out / "sub-002_task-auditory_raw.fif", verbose=False)
    events = mne.find_events(raw, stim_channel=STIM_CHANNEL, verbose=False)
    assert set(events[:, 2]) == {1}
    assert len(events) == 6  # 2 blocks of 3 tones in 16 s
    rest = mne.io.read_raw_fif(out / "sub-001_task-rest_raw.fif", verbose=False)
    assert rest.get_data(picks="stim").max() == 0
    data = rest.get_data(picks="meg")
    assert np.all(np.isfinite(data))
    rms_ft = data.std(axis=1).mean() * 1e15
    assert 20 < rms_ft < 2000  # tens to hundreds of fT, like real MEG


def test_cohort_is_deterministic(tmp_path):
    a = simulate_cohort(tmp_path / "a", n_subjects=2, states=["rest", "auditory"], seed=7,
                        verbose=False, **SMALL)
    b = simulate_cohort(tmp_path / "b", n_subjects=2, states=["auditory"], seed=7, n_jobs=2,
                        verbose=False, **SMALL)
    c = simulate_cohort(tmp_path / "c", n_subjects=1, states=["auditory"], seed=8,
                        verbose=False, **SMALL)

    def load(result, sub, state):
        rec = next(r for r in result["recordings"]
                   if r["subject"] == sub and r["state"] == state)
        return mne.io.read_raw_fif(rec["path"], verbose=False).get_data()

    # same seed: same data, whatever n_jobs or the other states simulated
    for sub in ("sub-001", "sub-002"):
        np.testing.assert_array_equal(load(a, sub, "auditory"), load(b, sub, "auditory"))
    assert not np.allclose(load(a, "sub-001", "auditory"), load(c, "sub-001", "auditory"))
    pa = (tmp_path / "a" / "participants.tsv").read_text()
    pb = (tmp_path / "b" / "participants.tsv").read_text()
    assert pa == pb


def test_bids_layout(tmp_path):
    mne_bids = pytest.importorskip("mne_bids")
    simulate_cohort(tmp_path, n_subjects=2, groups=["HC", "PPTH"], states=["somatosensory"],
                    bids=True, seed=0, verbose=False, **SMALL)
    fif = tmp_path / "sub-002" / "meg" / "sub-002_task-somatosensory_meg.fif"
    assert fif.exists()
    assert not list(tmp_path.glob("*_raw.fif"))
    bids_path = mne_bids.BIDSPath(subject="002", task="somatosensory", datatype="meg",
                                  root=tmp_path)
    with pytest.warns(RuntimeWarning, match="Unable to map"):
        raw = mne_bids.read_raw_bids(bids_path, verbose=False)
    assert raw.annotations.count() == {"stim": 6, "stim2": 6}
    rows = (tmp_path / "participants.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["participant_id", "group"]
    assert rows[2].split("\t")[:2] == ["sub-002", "PPTH"]


def test_cli_simulate(tmp_path, capsys):
    from megfm.cli.main import main

    code = main(["simulate", str(tmp_path), "--subjects", "2", "--array", "kit160",
                 "--duration", "16", "--sfreq", "200", "--block-size", "3", "--groups",
                 "HC,APTH", "--states", "rest", "--seed", "1", "--effect-scale", "0.5"])
    assert code == 0
    assert "wrote 2 recordings" in capsys.readouterr().out
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert truth["effect_scale"] == 0.5 and set(truth["groups"]) == {"HC", "APTH"}
    assert main(["simulate", str(tmp_path), "--groups", "HC,cluster"]) == 1
    assert "expected one of HC, migraine, APTH, PPTH" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(array="neuromag"), ValueError, "vectorview, ctf275, kit160, bti248, opm"),
        (dict(groups=["HC", "cluster"]), ValueError, "HC, migraine, APTH, PPTH"),
        (dict(states=["rest", "visual"]), ValueError, "rest, auditory, somatosensory"),
        (dict(duration=3.0), ValueError, "shorter than one stimulus block"),
        (dict(effect_scale=-1.0), ValueError, "'effect_scale'.*>= 0"),
        (dict(effect_scale=float("nan")), ValueError, "'effect_scale'.*finite"),
        (dict(groups={"HC": {}, "migraine": {"gating_ratio": -0.2}}), ValueError,
         "gating_ratio.*>= 0"),
        (dict(groups={"migraine": {"theta_power": {"precuneus": float("nan")}}}),
         ValueError, "finite"),
        (dict(groups={"migraine": {"theta_power": {"insula": 1.2}}}), ValueError,
         "expected one of auditory_lh"),
        (dict(groups={"migraine": {"speed": 1.2}}), ValueError, "habituation_slope"),
        (dict(n_subjects=0), ValueError, "n_subjects"),
        (dict(sfreq=-5.0), ValueError, "sfreq"),
    ],
)
def test_cohort_bad_input(tmp_path, kwargs, error, match):
    params = dict(SMALL, n_subjects=1, verbose=False)
    params.update(kwargs)
    with pytest.raises(error, match=match):
        simulate_cohort(tmp_path / "out", **params)
    assert not (tmp_path / "out" / "ground_truth.json").exists()


def test_groups_and_effect_scale():
    assert set(GROUPS) >= {"HC", "migraine", "APTH", "PPTH"}
    zero = resolve_groups(list(GROUPS), effect_scale=0.0)
    for params in zero.values():
        assert params.habituation_slope == GROUPS["HC"].habituation_slope
        assert params.gating_ratio == GROUPS["HC"].gating_ratio
        assert all(v == 1.0 for v in params.theta_power.values())
        assert all(v == 1.0 for v in params.alpha_power.values())
    double = resolve_groups(["migraine"], effect_scale=2.0)["migraine"]
    assert double.gating_ratio == pytest.approx(0.73 + 2 * (0.90 - 0.73))
    assert double.theta_power["precuneus"] == pytest.approx(2.0)
    custom = resolve_groups({"HC": GroupEffects(), "mild": {"gating_ratio": 0.8}})
    assert custom["mild"].gating_ratio == 0.8
    with pytest.raises(ValueError, match="negative"):
        resolve_groups(["PPTH"], effect_scale=5.0)  # alpha ratio 0.75 -> -0.25


def test_flat_output_paths_are_strings(small_cohort):
    _, result = small_cohort
    for rec in result["recordings"]:
        assert Path(rec["path"]).exists()
        assert rec["group"] in {"HC", "migraine"}


def test_user_head_model_is_used(tmp_path):
    """``bem=`` reaches the forward model: the default sphere given explicitly reproduces the
    default files, a sphere with another origin changes the sensor data."""
    def run(name, bem):
        out = simulate_cohort(tmp_path / name, 1, states=["rest"], duration=4.0, sfreq=200.0,
                              array="kit160", seed=3, bem=bem, verbose=False)
        return mne.io.read_raw_fif(out["recordings"][0]["path"], verbose=False).get_data(
            picks="meg")

    default = run("default", None)
    same = run("same", mne.make_sphere_model(r0=tuple(SPHERE_CENTRE), head_radius=None,
                                             verbose=False))
    shifted = run("shifted", mne.make_sphere_model(r0=(0.0, 0.01, 0.02), head_radius=None,
                                                   verbose=False))
    np.testing.assert_array_equal(default, same)
    # data are in T (~1e-13): compare relative to their scale
    assert np.abs(default - shifted).max() > 0.01 * np.abs(default).max()
