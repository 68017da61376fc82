"""Sensor map -> sources (minimum norm) -> ranked region table (megfm.explain.regions)."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest
from test_explain_attention import helmet_geometry

from megfm.data import SensorGeometry
from megfm.explain import (
    SourceMap,
    format_region_table,
    geometry_to_info,
    null_region_scores,
    project_to_sources,
    rank_regions,
    region_scores,
)

REGIONS = {
    "auditory_left": {"position": [-0.05, 0.0, 0.045], "hemisphere": "left"},
    "auditory_right": {"position": [0.05, 0.0, 0.045], "hemisphere": "right"},
    "postcentral_left": {"position": [-0.035, -0.01, 0.09], "hemisphere": "left"},
    "occipital": {"position": [0.0, -0.06, 0.06], "hemisphere": "both"},
    "frontal": {"position": [0.0, 0.06, 0.07], "hemisphere": "both"},
}


@pytest.fixture(scope="module")
def geometry():
    return helmet_geometry(40, planar=True)


def planted_map(geometry: SensorGeometry, position, seed: int = 0) -> np.ndarray:
    """Sensor power of one tangential dipole at ``position`` plus a little noise."""
    info = geometry_to_info(geometry)
    pos = np.asarray(position, float)
    src = mne.setup_volume_source_space(pos={"rr": pos[None], "nn": np.array([[0, 0, 1.0]])},
                                        verbose=False)
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.04), head_radius=0.09, verbose=False)
    fwd = mne.make_forward_solution(info, None, src, sphere, verbose=False)
    radial = pos - np.array([0.0, 0.0, 0.04])
    ori = np.cross(radial, [0.3, 1.0, 0.2])
    ori /= np.linalg.norm(ori)
    field = fwd["sol"]["data"] @ ori
    rng = np.random.default_rng(seed)
    field = field + 0.05 * np.std(field) * rng.standard_normal(len(field))
    return field ** 2


@pytest.mark.parametrize("planted", ["auditory_left", "postcentral_left", "occipital"])
def test_planted_source_ranks_first(geometry, planted):
    sensor_map = planted_map(geometry, REGIONS[planted]["position"])
    table = rank_regions(sensor_map, geometry, REGIONS)
    assert [r["rank"] for r in table] == [1, 2, 3, 4, 5]
    assert table[0]["region"] == planted
    assert table[0]["score"] > 1.5  # well above a uniform map
    assert table[0]["score"] >= table[1]["score"]


def test_source_map_is_normalised_and_field_mode(geometry):
    field_map = np.sqrt(planted_map(geometry, REGIONS["auditory_right"]["position"]))
    sm = project_to_sources(field_map, geometry, mode="field")
    assert isinstance(sm, SourceMap)
    assert sm.power.sum() == pytest.approx(1.0) and np.all(sm.power >= 0)
    assert sm.positions.shape == (len(sm.power), 3)
    assert region_scores(sm, REGIONS)[0]["region"] == "auditory_right"


def test_regions_from_ground_truth_file_and_absent_sensors(geometry, tmp_path):
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps({"regions": REGIONS, "expected_sensors": {}}))
    sensor_map = planted_map(geometry, REGIONS["auditory_left"]["position"])
    sensor_map[::7] = np.nan  # absent sensors are left out of the projection
    table = rank_regions(sensor_map, geometry, path)
    assert table[0]["region"] == "auditory_left"
    text = format_region_table(table, top=3)
    assert text.count("\n") == 4 and "| 1 | auditory_left | left |" in text


def test_label_regions_on_a_surface_source_space():
    # a two-hemisphere "surface" source map: power on left vertices 10 and 11
    sm = SourceMap(positions=np.zeros((6, 3)), power=[0.4, 0.4, 0.1, 0.05, 0.05, 0.0],
                   vertices=[np.array([10, 11, 12]), np.array([3, 4, 5])])
    labels = [mne.Label(vertices=np.array([10, 11]), hemi="lh", name="superiortemporal-lh"),
              mne.Label(vertices=np.array([12]), hemi="lh", name="precuneus-lh"),
              mne.Label(vertices=np.array([3, 4, 5]), hemi="rh", name="postcentral-rh")]
    table = region_scores(sm, labels)
    assert [r["region"] for r in table] == ["superiortemporal-lh", "precuneus-lh",
                                            "postcentral-rh"]
    assert table[0]["score"] == pytest.approx(0.8 / (2 / 6))  # no baseline: point share
    assert table[2]["power"] == pytest.approx(0.1)


def test_errors(geometry):
    no_locs = SensorGeometry(names=["A", "B"], positions=np.zeros((2, 3)),
                             orientations=np.tile([0.0, 0, 1], (2, 1)), types=[0, 0])
    with pytest.raises(ValueError, match="no sensor locations"):
        rank_regions([1.0, 2.0], no_locs, REGIONS)
    n = geometry.n_sensors
    with pytest.raises(ValueError, match="non-negative"):
        project_to_sources(-np.ones(n), geometry)
    with pytest.raises(ValueError, match="'mode'"):
        project_to_sources(np.ones(n), geometry, mode="dspm")
    with pytest.raises(ValueError, match="has 3 values"):
        project_to_sources(np.ones(3), geometry)
    with pytest.raises(ValueError, match="all zeros"):
        project_to_sources(np.zeros(n), geometry)
    with pytest.raises(FileNotFoundError, match="ground-truth"):
        rank_regions(np.ones(n), geometry, "/nonexistent/ground_truth.json")


def test_uniform_map_scores_one_everywhere(geometry):
    table = rank_regions(np.ones(geometry.n_sensors), geometry, REGIONS)
    np.testing.assert_allclose([r["score"] for r in table], 1.0, rtol=1e-6)


def test_point_reference_and_bad_reference(geometry):
    sensor_map = planted_map(geometry, REGIONS["frontal"]["position"])
    table = rank_regions(sensor_map, geometry, REGIONS, reference="points")
    assert table[0]["region"] == "frontal"
    with pytest.raises(ValueError, match="'reference'"):
        rank_regions(sensor_map, geometry, REGIONS, reference="mean")


def test_noise_reference_calibrates_against_noise_maps(geometry):
    rng = np.random.default_rng(5)
    # under the uniform reference, noise maps favour some regions over others ...
    tops_uniform, tops_noise = [], []
    for _ in range(8):
        noise = np.clip(rng.standard_normal(geometry.n_sensors), 0.0, None)
        tops_uniform.append(rank_regions(noise, geometry, REGIONS)[0]["region"])
        table = rank_regions(noise, geometry, REGIONS, reference="noise", n_null=20)
        tops_noise.append(table[0]["region"])
        for row in table:  # score = uniform score / its mean over the noise maps
            assert row["score"] == pytest.approx(row["score_uniform"] / row["null_mean"])
    null = null_region_scores(geometry, REGIONS, n_null=20)
    assert max(null.values()) / min(null.values()) > 1.5  # the bias exists ...
    # ... and the noise reference spreads the winners of pure-noise maps more evenly
    assert len(set(tops_noise)) >= len(set(tops_uniform))
    # a planted source still ranks first, with a score well above noise
    planted = planted_map(geometry, REGIONS["postcentral_left"]["position"])
    table = rank_regions(planted, geometry, REGIONS, reference="noise", n_null=20)
    assert table[0]["region"] == "postcentral_left" and table[0]["score"] > 1.5
    assert [r["rank"] for r in table] == [1, 2, 3, 4, 5]
    # seeded: the same call gives the same table
    again = rank_regions(planted, geometry, REGIONS, reference="noise", n_null=20)
    assert [r["score"] for r in again] == [r["score"] for r in table]
    with pytest.raises(ValueError, match="'n_null'"):
        rank_regions(planted, geometry, REGIONS, reference="noise", n_null=0)
    with pytest.raises(ValueError, match="rank_regions"):
        region_scores(project_to_sources(planted, geometry), REGIONS, reference="noise")


@pytest.mark.parametrize("n_missing", [0, 12])
def test_noise_reference_scores_its_own_noise_maps_one_on_average(geometry, n_missing):
    # the very noise maps of the reference (same seed and draws) average a score of 1, also
    # when the map lacks some sensors (NaN): the noise maps then lack the same ones
    rng = np.random.default_rng(3)
    missing = np.zeros(geometry.n_sensors, bool)
    missing[np.random.default_rng(0).choice(geometry.n_sensors, n_missing, replace=False)] = True
    scores: dict[str, list] = {}
    for _ in range(6):
        noise = np.clip(rng.standard_normal(geometry.n_sensors), 0.0, None)
        noise[missing] = np.nan
        for row in rank_regions(noise, geometry, REGIONS, reference="noise", n_null=6, seed=3):
            scores.setdefault(row["region"], []).append(row["score"])
    np.testing.assert_allclose([np.mean(v) for v in scores.values()], 1.0, rtol=1e-9)


def test_null_region_scores_refuses_a_missing_mask_of_another_size(geometry):
    with pytest.raises(ValueError, match="one flag per sensor"):
        null_region_scores(geometry, REGIONS, n_null=1, missing=np.zeros(3, bool))
