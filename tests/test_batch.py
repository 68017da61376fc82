"""megfm.data.batch: one Batch type and one builder, for stores and in-memory windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import training_helpers as helpers

from megfm.data import Batch, Windows, collate_windows, iter_batches, windows_batch
from megfm.data.dataset import WindowDataset, batch_indices, check_batch
from megfm.data.geometry import SensorGeometry
from megfm.data.store import read_store, write_store

FIELDS = ("x", "pos", "ori", "sensor_type", "sensor_mask", "index")


def _windows(n=6, n_sensors=5, n_times=160, *, n_bad=1, seed=0):
    """One recording whose first ``n_bad`` sensors are bad and saturated."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3)) * 0.05
    bads = np.zeros(n_sensors, bool)
    bads[:n_bad] = True
    geom = SensorGeometry(names=[f"MEG{i:03d}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=np.arange(n_sensors) % 4, bads=bads)
    data = 100 * rng.standard_normal((n, n_sensors, n_times)).astype(np.float32)
    data[:, :n_bad] = 5e3  # a saturated bad channel
    meta = {"subject": [f"s{i % 3}" for i in range(n)], "state": ["rest"] * n}
    return Windows(data=data, sfreq=200.0, geometries=[geom], metadata=meta)


def test_the_store_and_the_windows_builders_give_the_same_batch(tmp_path):
    windows = _windows()
    path = write_store(windows, tmp_path / "store")
    from_store = next(iter_batches(path, batch_size=4))
    from_windows = next(iter_batches(windows, batch_size=4))
    assert isinstance(from_store, Batch) and isinstance(from_windows, Batch)
    for key in FIELDS:
        a, b = from_store[key], from_windows[key]
        assert a.dtype == b.dtype and torch.equal(a, b), key
    assert from_store.index.tolist() == [0, 1, 2, 3] and len(from_store) == 4
    assert from_store.pos.dtype == torch.float32 and from_store.sensor_type.dtype == torch.int64
    assert from_store.sensor_mask.dtype == torch.bool
    # one rule for invalid sensors: zero in every batch (the bad channel held 5e3)
    assert torch.all(from_store.x[:, 0] == 0)
    np.testing.assert_array_equal(from_store.x[:, 1:].numpy(), windows.data[:4, 1:])
    # the items themselves are untouched: only the batch is zeroed
    assert float(WindowDataset(path)[1]["x"][0, 0]) == 5e3


def test_collate_pads_and_zeroes_and_the_windows_batch_pads_to_the_windows_rows():
    a, b = _windows(2, 3, seed=1), _windows(2, 5, n_bad=0, seed=2)
    both = Windows.concatenate([a, b])
    # one item per recording: 3 sensors (the first bad) and 5 sensors
    items = [{k: v[0] for k, v in dict(windows_batch(w, [0])).items()} for w in (a, b)]
    batch = collate_windows(items)
    assert batch.x.shape == (2, 5, 160) and batch.sensor_mask.tolist() == [
        [False, True, True, False, False], [True] * 5]
    assert torch.all(batch.x[0, [0, 3, 4]] == 0) and torch.all(batch.pos[0, 3:] == 0)
    from_windows = windows_batch(both, [0, 2])
    assert from_windows.x.shape == (2, 5, 160)
    for key in ("x", "pos", "ori", "sensor_type", "sensor_mask"):
        assert torch.equal(from_windows[key], batch[key]), key
    assert from_windows.index.tolist() == [0, 2] and batch.index.tolist() == [0, 0]


def test_batch_access_move_and_checks():
    batch = windows_batch(_windows(), [4, 1])
    assert batch["x"] is batch.x and list(dict(batch)) == list(FIELDS)
    assert list(batch.inputs()) == list(FIELDS[:5])
    assert [k for k, _ in batch.items()] == list(FIELDS)
    assert list(batch.replace(index=None).keys()) == list(FIELDS[:5])
    assert set(batch.numpy()) == set(FIELDS) and batch.numpy()["x"].dtype == np.float32
    with pytest.raises(KeyError, match="A Batch has the fields"):
        batch["y"]
    moved = batch.to("meta")
    assert all(moved[k].device.type == "meta" for k in FIELDS)
    assert batch.x.device.type == "cpu"  # `to` returns a new batch
    # Lightning moves it with its own helper (anything with a `.to`)
    from lightning.fabric.utilities.apply_func import move_data_to_device

    lightning_moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(lightning_moved, Batch) and lightning_moved.sensor_mask.is_meta
    # a NaN on a bad sensor is zeroed too (in-memory windows may hold one; stores refuse it)
    nan = _windows()
    nan.data[0, 0, 3] = np.nan
    assert bool(torch.isfinite(windows_batch(nan, [0, 1]).x).all())
    # errors name windows by their index
    bad = batch.replace(x=batch.x.clone())
    bad.x[1, 2, 5] = float("inf")
    with pytest.raises(ValueError, match=r"store index \[1\] have NaN or Inf"):
        check_batch(bad, "test")
    codes = batch.replace(sensor_type=batch.sensor_type.clone())
    sensor = int(torch.nonzero(codes.sensor_mask[0])[0])
    codes.sensor_type[0, sensor] = 9  # on a valid sensor: refused (the model skips its check)
    first = batch_indices(codes)[0]
    with pytest.raises(ValueError, match=rf"store index \[{first}\] have sensor-type codes"):
        check_batch(codes, "test")


def test_float16_store_stays_float16_up_to_the_model_which_upcasts(tmp_path):
    windows = _windows(n_bad=0)
    path = write_store(windows, tmp_path / "half", dtype="float16")
    batch = next(iter_batches(path, batch_size=6))
    assert batch.x.dtype == torch.float16
    assert batch.to("meta").x.dtype == torch.float16  # nothing is cast on the way
    from megfm.training import MEGDataModule

    dm = MEGDataModule(path, batch_size=3, val_fraction=0.0)
    dm.setup()
    assert next(iter(dm.train_dataloader())).x.dtype == torch.float16
    # the model upcasts at its input: float16 in = the same float16 values given as float32
    model = helpers.tiny_model().eval()
    with torch.no_grad():
        half = model(**batch.inputs(), generator=torch.Generator().manual_seed(0))
        full = model(**batch.replace(x=batch.x.float()).inputs(),
                     generator=torch.Generator().manual_seed(0))
        feats = model.forward_features(**batch.inputs())
    assert half["loss"].dtype == torch.float32 and feats.dtype == torch.float32
    assert half["loss"].item() == full["loss"].item()
    torch.testing.assert_close(half["pred"], full["pred"], rtol=0, atol=0)
    # a float32 store is read as float32, and WindowDataset's dtype still overrides
    assert WindowDataset(path, dtype=torch.float32)[0]["x"].dtype == torch.float32
    assert read_store(path).data.dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs a GPU")
def test_dataloader_pins_and_moves_a_batch_to_the_gpu(tmp_path):
    path = write_store(_windows(n_bad=0), tmp_path / "half", dtype="float16")
    loader = torch.utils.data.DataLoader(WindowDataset(path), batch_size=3,
                                         collate_fn=collate_windows, pin_memory=True)
    batch = next(iter(loader))
    assert isinstance(batch, Batch) and batch.x.is_pinned() and batch.index.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    assert on_gpu.x.dtype == torch.float16 and on_gpu.x.is_cuda
    model = helpers.tiny_model().eval().cuda()
    with torch.no_grad():
        out = model(**on_gpu.inputs(), generator=torch.Generator("cuda").manual_seed(0))
    assert torch.isfinite(out["loss"])


def test_pretrain_module_refuses_a_dict_batch():
    from megfm.training import PretrainModule

    batch = dict(windows_batch(_windows(n_bad=0), [0, 1]))
    with pytest.raises(TypeError, match="collate_fn=megfm.data.collate_windows"):
        PretrainModule("tiny")._shared_step(batch, "val")


def test_iter_batches_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="'batch_size' must be a positive integer"):
        next(iter_batches(_windows(), batch_size=0))
    with pytest.raises(FileNotFoundError, match="is neither a megfm store"):
        next(iter_batches(tmp_path, batch_size=2))
    with pytest.raises(TypeError, match="expected a megfm.Windows or a store folder"):
        next(iter_batches(np.zeros((2, 3, 4)), batch_size=2))
    with pytest.raises(IndexError, match=r"'indices' must lie in \[0, 6\)"):
        next(iter_batches(_windows(), batch_size=2, indices=[7]))
