"""Attention maps, rollout, geometry -> Info and topomaps (megfm.explain)."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch
from torch import nn

from megfm.data import SensorGeometry, Windows
from megfm.explain import (
    AttentionMaps,
    alignment_score,
    attention_maps,
    attention_rollout,
    geometry_to_info,
    plot_sensor_map,
    plot_state_topomaps,
)

SFREQ = 100.0


# ---------------------------------------------------------------------- stand-ins (tests only)
class TinyModel(nn.Module):
    """Stand-in following the model contract of docs/design.md (forward_features/forward_head).

    The spatial cross-attention scores add the log energy of each sensor patch, so sensors
    carrying signal draw the attention: that is what the tests of the plumbing rely on.
    """

    def __init__(self, patch: int = 10, n_latents: int = 3, dim: int = 8, n_heads: int = 2,
                 seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.patch, self.n_latents = patch, n_latents
        self.embed = nn.Linear(patch, dim)
        self.geo = nn.Linear(6, dim)
        self.queries = nn.Parameter(torch.randn(n_latents, dim) * 0.1)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.temporal = nn.MultiheadAttention(dim, n_heads, batch_first=True)

    def forward_features(self, x, pos, ori, sensor_type, sensor_mask, *, return_attention=False):
        b, s, t = x.shape
        p = t // self.patch
        patches = x[..., :p * self.patch].reshape(b, s, p, self.patch).transpose(1, 2)
        energy = torch.log1p(patches.pow(2).mean(-1))  # (B, P, S)
        tokens = self.embed(patches / 100.0) + self.geo(torch.cat([pos, ori], -1))[:, None]
        scores = torch.einsum("kd,bpsd->bpks", self.queries, self.key(tokens)) * 0.1
        scores = scores + 2.0 * energy[:, :, None, :]
        scores = scores.masked_fill(~sensor_mask[:, None, None, :], float("-inf"))
        spatial = scores.softmax(-1)  # (B, P, K, S)
        latents = torch.einsum("bpks,bpsd->bpkd", spatial, self.value(tokens))
        flat = latents.reshape(b, p * self.n_latents, -1)
        out, weights = self.temporal(flat, flat, flat, need_weights=True,
                                     average_attn_weights=False)
        features = (flat + out).reshape(b, p, self.n_latents, -1)
        if return_attention:
            return features, {"spatial": spatial, "temporal": [weights, weights]}
        return features

    def forward_head(self, features, pre_logits=True):
        return features.mean(dim=(1, 2))


def helmet_geometry(n: int = 40, *, planar: bool = False, prefix: str = "MEG") -> SensorGeometry:
    """Magnetometers (and optionally planar pairs) on a hemisphere, device frame."""
    i = np.arange(n) + 0.5
    z = i / n  # upper hemisphere
    phi = np.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z ** 2)
    normals = np.c_[r * np.cos(phi), r * np.sin(phi), z]
    positions = normals * 0.11 + np.array([0.0, 0.0, 0.04])
    names = [f"{prefix}{k:03d}1" for k in range(n)]
    types = [0] * n
    pos, ori = list(positions), list(normals)
    if planar:
        for k in range(n):
            e1 = np.cross(normals[k], [0.0, 0.0, 1.0] if abs(normals[k, 2]) < 0.9 else [1, 0, 0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(normals[k], e1)
            for suffix, e in (("2", e1), ("3", e2)):
                names.append(f"{prefix}{k:03d}{suffix}")
                types.append(1)
                pos.append(positions[k])
                ori.append(e)
    return SensorGeometry(names=names, positions=np.array(pos), orientations=np.array(ori),
                          types=np.array(types))


def make_windows(geometry: SensorGeometry, hot: dict[str, int], *, n_per_state: int = 4,
                 n_times: int = 60, seed: int = 0) -> Windows:
    """Windows of small noise with a 10 Hz sine on one sensor per state."""
    rng = np.random.default_rng(seed)
    s = geometry.n_sensors
    data, states = [], []
    t = np.arange(n_times) / SFREQ
    for state, sensor in hot.items():
        for _ in range(n_per_state):
            w = rng.standard_normal((s, n_times)) * 2.0
            w[sensor] += 300.0 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi))
            data.append(w)
            states.append(state)
    return Windows(data=np.array(data, np.float32), sfreq=SFREQ, geometries=[geometry],
                   metadata={"state": np.array(states),
                             "label": np.array(["HC", "migraine"] * (len(states) // 2))})


@pytest.fixture(scope="module")
def model():
    return TinyModel()


@pytest.fixture(scope="module")
def geometry():
    return helmet_geometry(24)


# ---------------------------------------------------------------------- tests
def test_maps_shapes_and_normalisation(model, geometry):
    windows = make_windows(geometry, {"auditory": 3, "rest": 10})
    maps = attention_maps(model, windows, batch_size=3)
    assert isinstance(maps, AttentionMaps)
    assert maps.keys == [("auditory",), ("rest",)]
    assert maps.names == geometry.names
    n_patches = windows.n_times // model.patch
    for key in maps.keys:
        assert maps.weights[key].shape == (geometry.n_sensors,)
        assert maps.patch_weights[key].shape == (n_patches, geometry.n_sensors)
        np.testing.assert_allclose(maps.weights[key].sum(), 1.0, atol=1e-9)
        np.testing.assert_allclose(maps.patch_weights[key].sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(maps.rollout[key].sum(), 1.0, atol=1e-9)
        assert np.all(maps.weights[key] >= 0)
        assert maps.n_windows[key] == 4
    assert maps.patch_seconds == pytest.approx(model.patch / SFREQ)


def test_single_sensor_signal_peaks_at_that_sensor(model, geometry):
    windows = make_windows(geometry, {"auditory": 3, "somatosensory": 17})
    maps = attention_maps(model, windows)
    assert int(np.argmax(maps["auditory"])) == 3
    assert int(np.argmax(maps["somatosensory"])) == 17
    assert int(np.argmax(maps.get("auditory", kind="rollout"))) == 3
    # the hot sensor holds far more than its uniform share
    assert maps.alignment([geometry.names[3]], "auditory") > 5
    scores = maps.alignment({"auditory": [geometry.names[3]], "somatosensory": [],
                             "rest": ["x"]})
    assert list(scores) == ["auditory"] and scores["auditory"] > 5
    with pytest.raises(ValueError, match="'key'"):
        maps.alignment([geometry.names[3]])


def test_group_by_state_and_label(model, geometry):
    windows = make_windows(geometry, {"auditory": 3, "rest": 5})
    maps = attention_maps(model, windows, by=("state", "label"), rollout=False)
    assert ("auditory", "HC") in maps.keys and ("rest", "migraine") in maps.keys
    assert maps.rollout is None
    with pytest.raises(ValueError, match="rollout=False"):
        maps.get(("auditory", "HC"), kind="rollout")


def test_mixed_geometries_and_bad_sensors(model, geometry):
    # second recording: a subset of the sensors, reversed, one marked bad
    sub = geometry.pick(np.arange(20)[::-1])
    sub.bads[0] = True  # sensor geometry.names[19]
    w1 = make_windows(geometry, {"rest": 3})
    w2 = make_windows(sub, {"rest": 1}, seed=1)  # row 1 of sub = geometry sensor 18
    both = Windows.concatenate([w1, w2])
    maps = attention_maps(model, both)
    w = maps["rest"]
    np.testing.assert_allclose(np.nansum(w), 1.0)
    assert np.all(np.isfinite(w))  # every sensor is present in the first recording
    only_sub = attention_maps(model, w2)
    names = only_sub.names
    assert np.isnan(only_sub["rest"][names.index(geometry.names[19])])  # bad: absent
    assert names[int(np.nanargmax(only_sub["rest"]))] == geometry.names[18]
    evoked = only_sub.to_evoked("rest")
    assert geometry.names[19] not in evoked.ch_names and len(evoked.ch_names) == 19


def test_to_evoked_and_topomap(model, geometry):
    windows = make_windows(geometry, {"auditory": 3})
    maps = attention_maps(model, windows)
    evoked = maps.to_evoked("auditory")
    assert isinstance(evoked, mne.EvokedArray)
    assert evoked.data.shape == (geometry.n_sensors, windows.n_times // model.patch)
    np.testing.assert_allclose(evoked.data.sum(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(evoked.times[1] - evoked.times[0], maps.patch_seconds)
    assert maps.to_evoked("auditory", kind="rollout").data.shape == (geometry.n_sensors, 1)
    fig = evoked.plot_topomap(times=evoked.times[:1], ch_type="mag", scalings=1.0, show=False)
    assert fig is not None


def test_absent_state_and_bad_arguments(model, geometry):
    windows = make_windows(geometry, {"rest": 3})
    maps = attention_maps(model, windows, rollout=False)
    with pytest.raises(ValueError, match="absent from the data; available: 'rest'"):
        maps.to_evoked("auditory")
    with pytest.raises(ValueError, match="'states'.*absent from the data"):
        attention_maps(model, windows, states=["auditory"])
    with pytest.raises(ValueError, match="not a metadata column"):
        attention_maps(model, windows, by=("task",))
    with pytest.raises(TypeError, match="Windows object or the path"):
        attention_maps(model, windows.data)


def test_attention_rollout_known_answers():
    n = 4
    eye = np.broadcast_to(np.eye(n), (1, 2, n, n))
    np.testing.assert_allclose(attention_rollout([eye, eye]), np.full((1, n), 1 / n))
    to_first = np.zeros((1, 1, n, n))
    to_first[..., 0] = 1.0  # every token reads token 0
    np.testing.assert_allclose(attention_rollout([to_first], residual=0.0), [[1, 0, 0, 0]])
    rel = attention_rollout([to_first], residual=0.5)
    np.testing.assert_allclose(rel.sum(), 1.0)
    assert rel[0, 0] == pytest.approx(0.5 + 0.5 / n)
    with pytest.raises(ValueError, match="residual"):
        attention_rollout([eye], residual=2.0)


def test_geometry_to_info_round_trip():
    geometry = helmet_geometry(10, planar=True)
    info = geometry_to_info(geometry)
    assert info.get_channel_types().count("grad") == 20
    back = SensorGeometry.from_info(info)
    assert back.names == geometry.names
    np.testing.assert_allclose(back.positions, geometry.positions, atol=1e-6)
    np.testing.assert_allclose(back.orientations, geometry.orientations, atol=1e-6)
    np.testing.assert_array_equal(back.types, geometry.types)


@pytest.mark.realdata
@pytest.mark.parametrize("system", ["vectorview", "ctf275", "kit"])
def test_geometry_to_info_real_systems(real_file, system, tmp_path):
    raw = mne.io.read_raw(real_file(system), verbose=False)
    geometry = SensorGeometry.from_info(raw.info)
    back = SensorGeometry.from_info(geometry_to_info(geometry))
    np.testing.assert_allclose(back.positions, geometry.positions, atol=1e-6)
    np.testing.assert_allclose(back.orientations, geometry.orientations, atol=1e-5)
    np.testing.assert_array_equal(back.types, geometry.types)
    if system == "vectorview":  # planar pairs merged, mags apart: the trickiest layout
        values = np.linspace(0, 1, geometry.n_sensors)
        fig = plot_sensor_map(values, geometry)
        fig.savefig(tmp_path / f"{system}.png")
        assert len(fig.axes) == 2  # topomap + colour bar


def test_no_sensor_locations_error():
    geometry = SensorGeometry(names=["A", "B"], positions=np.zeros((2, 3)),
                              orientations=np.tile([0.0, 0, 1], (2, 1)), types=[0, 0])
    with pytest.raises(ValueError, match="no sensor locations"):
        geometry_to_info(geometry)
    with pytest.raises(ValueError, match="no sensor locations"):
        plot_sensor_map([1.0, 2.0], geometry)


def test_state_topomap_pngs(model, tmp_path):
    geometry = helmet_geometry(12, planar=True)
    windows = make_windows(geometry, {"auditory": 2, "rest": 30})
    maps = attention_maps(model, windows)
    paths = plot_state_topomaps(maps, tmp_path)
    assert [p.name for p in paths] == ["attention_auditory.png", "attention_rest.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    with pytest.raises(ValueError, match="absent from the data"):
        plot_state_topomaps(maps, tmp_path, states=["somatosensory"])


def _constructed_maps(patch_weights: np.ndarray, geometry: SensorGeometry) -> AttentionMaps:
    return AttentionMaps(geometry=geometry, by=("state",),
                         patch_weights={("auditory",): patch_weights},
                         weights={("auditory",): patch_weights.mean(0)}, rollout=None,
                         n_windows={("auditory",): 1}, patch_seconds=0.1)


def test_event_related_known_answer(geometry):
    s = geometry.n_sensors
    pw = np.full((6, s), 1.0 / s)
    pw[2, 5] *= 3.0  # sensor 5 triples its share in the first post-event patch
    pw[2, 7] *= 2.0  # sensor 7 doubles it
    pw[2] /= pw[2].sum()
    maps = _constructed_maps(pw, geometry)
    change = maps.event_related("auditory", tmin=-0.2)  # patches 0-1 are the baseline
    np.testing.assert_allclose(change.sum(), 1.0)
    assert np.count_nonzero(change) == 2  # sensors whose share shrank are 0, not negative
    # relative increases 3 * c - 1 and 2 * c - 1 with c the renormalisation of row 2
    c = 1.0 / pw[2].sum() * pw[2, 0] * s
    np.testing.assert_allclose(change[5] / change[7], (3 * c - 1) / (2 * c - 1))
    assert alignment_score(change, [geometry.names[5], geometry.names[7]],
                           names=geometry.names) == pytest.approx(s / 2)
    # a later patch; nothing changes there
    np.testing.assert_allclose(maps.event_related("auditory", tmin=-0.2, patch=4), 0.0)


def test_event_related_bad_arguments(geometry):
    maps = _constructed_maps(np.full((6, geometry.n_sensors), 1.0 / geometry.n_sensors), geometry)
    with pytest.raises(ValueError, match="before the event"):
        maps.event_related("auditory", tmin=0.0)
    with pytest.raises(ValueError, match="post-event patch"):
        maps.event_related("auditory", tmin=-0.2, patch=1)
    with pytest.raises(ValueError, match="absent from the data"):
        maps.event_related("somatosensory")


def test_event_kind_and_event_locked_groups(model, geometry):
    windows = make_windows(geometry, {"auditory": 3, "rest": 10}, n_times=60)
    windows.metadata["event"] = np.where(windows.metadata["state"] == "auditory", 1, -1)
    windows.info["tmin"] = -0.2
    maps = attention_maps(model, windows, rollout=False)
    assert maps.info["event_locked"] == ["auditory"] and maps.info["tmin"] == -0.2
    change = maps.get("auditory", kind="event")
    np.testing.assert_allclose(change, maps.event_related("auditory", tmin=-0.2))
    assert change.shape == (geometry.n_sensors,)
    with pytest.raises(ValueError, match="not locked to stimulus events"):
        maps.get("rest", kind="event")
    with pytest.raises(ValueError, match="'spatial', 'rollout' or 'event'"):
        maps.get("auditory", kind="power")
