"""WindowDataset and collate_windows: items, filters, padding of two layouts, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from megfm.data.dataset import BATCH_KEYS, WindowDataset, collate_windows
from megfm.data.geometry import SensorGeometry
from megfm.data.store import write_store
from megfm.data.windows import Windows


def _windows(n, n_sensors, *, seed, subject, state, label="HC", n_times=16, n_bad=0):
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3))
    bads = np.zeros(n_sensors, bool)
    bads[:n_bad] = True
    geom = SensorGeometry(names=[f"S{seed}_{i}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=np.arange(n_sensors) % 4, bads=bads)
    data = rng.standard_normal((n, n_sensors, n_times)).astype(np.float32)
    meta = {"subject": [subject] * n, "state": [state] * n, "label": [label] * n}
    return Windows(data=data, sfreq=200.0, geometries=[geom], metadata=meta)


@pytest.fixture
def two_layouts(tmp_path):
    """Store with a 4-sensor (1 bad) and a 7-sensor recording, then an appended one."""
    a = _windows(5, 4, seed=1, subject="s1", state="rest", n_bad=1)
    b = _windows(3, 7, seed=2, subject="s2", state="auditory", label="migraine")
    c = _windows(4, 4, seed=3, subject="s3", state="somatosensory", label="migraine")
    path = write_store(Windows.concatenate([a, b]), tmp_path / "store")
    write_store(c, path)
    return path, (a, b, c)


def test_item_contract(two_layouts):
    path, (a, b, c) = two_layouts
    ds = WindowDataset(path)
    assert len(ds) == 12 and ds.sfreq == 200.0 and ds.n_times == 16
    item = ds[1]
    assert tuple(item) == BATCH_KEYS
    assert item["x"].shape == (4, 16) and item["x"].dtype == torch.float32
    assert item["pos"].shape == (4, 3) and item["ori"].shape == (4, 3)
    assert item["sensor_type"].dtype == torch.int64
    assert item["sensor_mask"].tolist() == [False, True, True, True]  # first sensor is bad
    assert item["index"].item() == 1
    np.testing.assert_array_equal(item["x"].numpy(), a.data[1])
    np.testing.assert_allclose(item["pos"].numpy(), a.geometry.positions)
    item = ds[6]
    assert item["x"].shape == (7, 16) and bool(item["sensor_mask"].all())
    np.testing.assert_array_equal(item["x"].numpy(), b.data[1])
    assert ds[-1]["index"].item() == 11
    with pytest.raises(IndexError, match="out of range for a WindowDataset of 12"):
        ds[12]
    half = WindowDataset(path, dtype=torch.float16)
    assert half[0]["x"].dtype == torch.float16
    with pytest.raises(TypeError, match="floating torch.dtype"):
        WindowDataset(path, dtype=torch.int32)


def test_filters_and_metadata(two_layouts):
    path, (a, b, c) = two_layouts
    ds = WindowDataset(path, states=["auditory", "somatosensory"])
    np.testing.assert_array_equal(ds.indices, np.arange(5, 12))
    assert ds.metadata["state"].tolist() == ["auditory"] * 3 + ["somatosensory"] * 4
    np.testing.assert_array_equal(ds.metadata["recording"], [1] * 3 + [2] * 4)
    assert len(WindowDataset(path, labels="migraine")) == 7
    assert len(WindowDataset(path, subjects=["s1", "s3"], states="rest")) == 5
    ds = WindowDataset(path, indices=[11, 0, 6], labels="migraine")
    np.testing.assert_array_equal(ds.indices, [11, 6])
    np.testing.assert_array_equal(ds[0]["x"].numpy(), c.data[3])
    with pytest.raises(ValueError, match=r"Invalid value for 'states': \['Rest'\] not in the store"):
        WindowDataset(path, states="Rest")
    with pytest.raises(ValueError, match="'subjects' is empty"):
        WindowDataset(path, subjects=[])
    with pytest.raises(IndexError, match=r"'indices' must lie in \[0, 12\)"):
        WindowDataset(path, indices=[12])


def test_collate_pads_two_layouts(two_layouts):
    path, (a, b, c) = two_layouts
    ds = WindowDataset(path)
    batch = collate_windows([ds[0], ds[5], ds[11]])
    assert batch["x"].shape == (3, 7, 16) and batch["pos"].shape == (3, 7, 3)
    assert batch["ori"].shape == (3, 7, 3) and batch["sensor_type"].shape == (3, 7)
    assert batch["sensor_mask"].dtype == torch.bool
    assert batch["sensor_mask"].tolist() == [
        [False, True, True, True, False, False, False],
        [True] * 7,
        [True, True, True, True, False, False, False],
    ]
    assert torch.all(batch["x"][0, 4:] == 0) and torch.all(batch["pos"][2, 4:] == 0)
    np.testing.assert_array_equal(batch["x"][1].numpy(), b.data[0])
    assert batch["index"].tolist() == [0, 5, 11]
    with pytest.raises(ValueError, match="empty list"):
        collate_windows([])
    other = dict(ds[0], x=torch.zeros(4, 8))
    with pytest.raises(ValueError, match=r"different lengths \[8, 16\]"):
        collate_windows([ds[0], other])


def test_getitems_matches_getitem(two_layouts):
    path, _ = two_layouts
    ds = WindowDataset(path)
    order = [11, 0, 6, 0, 3]
    for one, many in zip([ds[i] for i in order], ds.__getitems__(order), strict=True):
        for key in BATCH_KEYS:
            assert torch.equal(one[key], many[key])


def test_pickle_has_no_handles(two_layouts):
    path, _ = two_layouts
    ds = WindowDataset(path)
    ds[0]  # opens a shard in this process
    assert ds.reader._handles
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone.reader._handles
    assert torch.equal(clone[3]["x"], ds[3]["x"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_workers(two_layouts, num_workers):
    path, (a, b, c) = two_layouts
    ds = WindowDataset(path)
    ds[0]  # a handle open in the parent must not leak into forked workers
    loader = DataLoader(ds, batch_size=5, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_windows)
    batches = list(loader)
    assert [bt["x"].shape[0] for bt in batches] == [5, 5, 2]
    index = torch.cat([bt["index"] for bt in batches])
    assert index.tolist() == list(range(12))
    assert batches[1]["x"].shape == (5, 7, 16)  # windows 5..9 include the 7-sensor layout
    np.testing.assert_array_equal(batches[2]["x"][:, :4].numpy(), c.data[2:])
