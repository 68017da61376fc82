"""MEGDataModule: subject-disjoint seeded splits, state balancing, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megfm.data.geometry import SensorGeometry
from megfm.data.store import write_store
from megfm.data.windows import Windows
from megfm.training import MEGDataModule
from megfm.training.datamodule import split_subjects

N_TIMES = 8


def _recording(subject: str, label: str, state: str, n: int, n_sensors: int, seed: int):
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3))
    geom = SensorGeometry(names=[f"C{i}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=np.zeros(n_sensors, int))
    data = rng.standard_normal((n, n_sensors, N_TIMES)).astype(np.float32)
    meta = {"subject": [subject] * n, "label": [label] * n, "state": [state] * n}
    return Windows(data=data, sfreq=100.0, geometries=[geom], metadata=meta)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """10 subjects (6 HC, 4 migraine); rest has 6 windows per subject, auditory 2."""
    parts = []
    for i in range(10):
        label = "HC" if i < 6 else "migraine"
        parts.append(_recording(f"sub-{i:02d}", label, "rest", 6, 3 + i % 2, seed=2 * i))
        parts.append(_recording(f"sub-{i:02d}", label, "auditory", 2, 3 + i % 2, seed=2 * i + 1))
    return write_store(Windows.concatenate(parts), tmp_path_factory.mktemp("dm") / "store")


def test_split_is_by_subject_and_seeded(cohort):
    dm = MEGDataModule(cohort, batch_size=4, val_fraction=0.2, test_fraction=0.2, seed=3)
    dm.setup()
    train, val, test = dm.train_subjects_, dm.val_subjects_, dm.test_subjects_
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert sorted(train + val + test) == [f"sub-{i:02d}" for i in range(10)]
    # stratified: each held-out split has one HC and one migraine subject
    for split in (val, test):
        assert sorted(int(s[-2:]) < 6 for s in split) == [False, True]
    # windows follow their subject
    for ds, subs in ((dm.train_dataset_, train), (dm.val_dataset_, val), (dm.test_dataset_, test)):
        assert set(ds.metadata["subject"].tolist()) == set(subs)
        assert len(ds) == 8 * len(subs)
    again = MEGDataModule(cohort, val_fraction=0.2, test_fraction=0.2, seed=3)
    again.setup()
    assert (again.train_subjects_, again.val_subjects_, again.test_subjects_) == (train, val, test)
    splits = set()
    for seed in range(6):
        tr, va, te = split_subjects(dm.metadata_["subject"], dm.metadata_["label"],
                                    val_fraction=0.2, test_fraction=0.2, seed=seed)
        splits.add(tuple(va))
    assert len(splits) > 1  # the seed matters


def test_train_loader_is_seeded_and_padded(cohort):
    def first_epoch(seed):
        dm = MEGDataModule(cohort, batch_size=5, seed=seed)
        return [b for b in dm.train_dataloader()]

    a, b = first_epoch(0), first_epoch(0)
    assert all(torch.equal(x["index"], y["index"]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x["index"], y["index"])
                   for x, y in zip(a, first_epoch(1), strict=False))
    assert {bt["x"].shape[1] for bt in a} <= {3, 4}
    assert all(bt["sensor_mask"].sum(1).tolist() == [3 + (s % 2) for s in
               [int(n) for n in bt["index"] // 8]] for bt in a)
    dm = MEGDataModule(cohort, batch_size=5, seed=0)
    val = torch.cat([bt["index"] for bt in dm.val_dataloader()])
    assert val.tolist() == sorted(val.tolist())  # validation in store order
    assert dm.test_dataloader() == []  # no test subjects by default
    assert len(torch.cat([bt["index"] for bt in dm.predict_dataloader()])) == 80


def test_balance_states(cohort):
    dm = MEGDataModule(cohort, batch_size=16, val_fraction=0.2, balance_states=True, seed=0)
    dm.setup()
    w = dm.state_weights()
    states = dm.train_dataset_.metadata["state"]
    np.testing.assert_allclose(w[states == "rest"].sum(), w[states == "auditory"].sum())
    drawn = []
    loader = dm.train_dataloader()
    for epoch in range(10):  # runs of windows are drawn: average over epochs
        loader.sampler.set_epoch(epoch)
        for bt in loader:
            drawn.extend(dm.metadata_["state"][np.searchsorted(dm.full_dataset_.indices,
                                                                bt["index"].numpy())])
    frac = np.mean(np.asarray(drawn) == "auditory")
    assert 0.4 < frac < 0.6  # unbalanced data are 25% auditory
    plain = MEGDataModule(cohort, batch_size=16, val_fraction=0.2, seed=0)
    index = torch.cat([bt["index"] for bt in plain.train_dataloader()]).numpy()
    assert np.mean(plain.metadata_["state"][index] == "auditory") == 0.25


def test_filters_and_errors(cohort):
    dm = MEGDataModule(cohort, states="auditory", labels=["migraine"], val_fraction=0.25)
    dm.setup()
    assert set(dm.metadata_["state"].tolist()) == {"auditory"}
    assert len(dm.train_subjects_) == 3 and len(dm.val_subjects_) == 1
    with pytest.raises(ValueError, match="Invalid value for 'val_fraction'"):
        MEGDataModule(cohort, val_fraction=1.5)
    with pytest.raises(ValueError, match="must be below 1"):
        MEGDataModule(cohort, val_fraction=0.5, test_fraction=0.5).setup()
    with pytest.raises(ValueError, match="Cannot split 1 subject"):
        MEGDataModule(cohort, subjects="sub-01").setup()
    with pytest.raises(ValueError, match="Invalid value for 'batch_size'"):
        MEGDataModule(cohort, batch_size=0)


def test_workers_persistent(cohort):
    dm = MEGDataModule(cohort, batch_size=8, num_workers=2, seed=0)
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    n = sum(len(bt["index"]) for bt in loader)
    assert n == len(dm.train_dataset_) == 64


def test_fits_with_lightning_trainer(cohort, tmp_path):
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def _loss(self, batch):
            x = batch["x"] * batch["sensor_mask"][..., None]
            return ((x.mean(dim=(1, 2)) - self.w) ** 2).mean()

        def training_step(self, batch, batch_idx):
            return self._loss(batch)

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", self._loss(batch), batch_size=len(batch["index"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(Tiny(), datamodule=MEGDataModule(cohort, batch_size=16, seed=0))
    assert "val/loss" in trainer.callback_metrics
    trainer.fit(Tiny(), datamodule=MEGDataModule(cohort, batch_size=16, val_fraction=0.0))


def _epoch_indices(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [bt["index"].tolist() for bt in loader]


def test_training_order_depends_on_seed_and_epoch(cohort):
    dm = MEGDataModule(cohort, batch_size=16, val_fraction=0.2, seed=0)
    loader = dm.train_dataloader()
    train = sorted(dm.train_dataset_.indices.tolist())
    epochs = [sum(_epoch_indices(loader, e), []) for e in range(3)]
    for order in epochs:
        assert sorted(order) == train  # every window exactly once per epoch
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    # a fresh loader (a resumed run) gives epoch 2 the same order, whatever came before
    assert sum(_epoch_indices(dm.train_dataloader(), 2), []) == epochs[2]
    other = MEGDataModule(cohort, batch_size=16, val_fraction=0.2, seed=1).train_dataloader()
    assert sum(_epoch_indices(other, 0), []) != epochs[0]


@pytest.mark.parametrize("balance_states", [False, True])
def test_loader_resumes_mid_epoch(cohort, balance_states):
    dm = MEGDataModule(cohort, batch_size=10, val_fraction=0.2, seed=2,
                       balance_states=balance_states)
    loader = dm.train_dataloader()  # 64 windows: batches of 10, ..., 10, 4
    assert len(loader) == 7
    full = _epoch_indices(loader, 1)
    loader.sampler.set_epoch(1)
    it = iter(loader)
    head = [next(it)["index"].tolist() for _ in range(3)]
    state = loader.state_dict()
    assert (state["epoch"], state["consumed"]) == (1, 30)
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    tail = [bt["index"].tolist() for bt in resumed]
    assert head + tail == full
    assert resumed.state_dict()["consumed"] == 64
    # a saved complete epoch continues with the next one
    resumed.load_state_dict(resumed.state_dict())
    assert [bt["index"].tolist() for bt in resumed] == _epoch_indices(loader, 2)
    # the data module keeps the position of its latest loader (kept in checkpoints too)
    latest = dm.train_dataloader()
    latest.sampler.set_epoch(1)
    it = iter(latest)
    for _ in range(3):
        next(it)
    assert dm.state_dict() == {"train_loader": state}
    again = MEGDataModule(cohort, batch_size=10, val_fraction=0.2, seed=2,
                          balance_states=balance_states)
    again.load_state_dict(dm.state_dict())
    assert [bt["index"].tolist() for bt in again.train_dataloader()] == tail


def _world_loader(cohort, world_size: int, rank: int):
    from types import SimpleNamespace

    dm = MEGDataModule(cohort, batch_size=10, val_fraction=0.2, seed=2)
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    return dm.train_dataloader()


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_loader_resumes_on_another_number_of_ranks(cohort, before, after):
    # every rank steps together: each takes `steps` batches, rank 0's state is saved
    steps = 2 if before == 2 else 3
    heads = []
    for rank in range(before):
        loader = _world_loader(cohort, before, rank)
        loader.sampler.set_epoch(1)
        it = iter(loader)
        heads += [i for _ in range(steps) for i in next(it)["index"].tolist()]
        if rank == 0:
            state = loader.state_dict()
    assert state["consumed"] == steps * before * 10 == len(heads)
    tails = []
    for rank in range(after):
        resumed = _world_loader(cohort, after, rank)
        resumed.load_state_dict(state)
        # Lightning ends the epoch when its restored count of batches reaches the length
        rest = -(-(64 - state["consumed"]) // after)
        assert len(resumed) == steps + -(-rest // 10)
        tails += [i for bt in resumed for i in bt["index"].tolist()]
    # every training window of the epoch exactly once across the interruption
    train = sorted(resumed.dataset.indices.tolist())
    assert sorted(heads + tails) == train and len(train) == 64
    # and in the order one process would have drawn them
    assert set(heads) == set(sum(_epoch_indices(_world_loader(cohort, 1, 0), 1), [])[:len(heads)])


def test_loader_resume_with_workers_and_a_changed_store(cohort, caplog):
    dm = MEGDataModule(cohort, batch_size=10, val_fraction=0.2, seed=2, num_workers=2)
    loader = dm.train_dataloader()
    full = _epoch_indices(loader, 0)
    it = iter(loader)  # the workers read ahead; the count is of batches handed out
    head = [next(it)["index"].tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state["consumed"] == 20
    del it
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert head + [bt["index"].tolist() for bt in resumed] == full
    # another batch size: the epoch restarts from its first batch, with a warning
    other = MEGDataModule(cohort, batch_size=8, val_fraction=0.2, seed=2).train_dataloader()
    with caplog.at_level("WARNING", logger="megfm.training.datamodule"):
        other.load_state_dict(state)
    assert "restarts from its first batch" in caplog.text
    assert sum(len(bt["index"]) for bt in other) == 64


def test_loader_resume_on_another_store_of_the_same_size_restarts(cohort, tmp_path, caplog):
    dm = MEGDataModule(cohort, batch_size=10, val_fraction=0.2, seed=2)
    loader = dm.train_dataloader()
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    # the same layout (10 subjects, as many windows) under other subject names
    parts = []
    for i in range(10):
        label = "HC" if i < 6 else "migraine"
        parts.append(_recording(f"sub-x{i:02d}", label, "rest", 6, 3 + i % 2, seed=2 * i))
        parts.append(_recording(f"sub-x{i:02d}", label, "auditory", 2, 3 + i % 2,
                                seed=2 * i + 1))
    other_store = write_store(Windows.concatenate(parts), tmp_path / "other")
    other = MEGDataModule(other_store, batch_size=10, val_fraction=0.2, seed=2)
    resumed = other.train_dataloader()
    assert len(resumed.dataset) == len(loader.dataset)
    with caplog.at_level("WARNING", logger="megfm.training.datamodule"):
        resumed.load_state_dict(state)
        resumed.load_state_dict(state)  # Lightning and the data module both hand it over
    assert caplog.text.count("restarts from its first batch") == 1
    assert sum(len(bt["index"]) for bt in resumed) == len(loader.dataset)


def test_setup_reads_the_store_metadata_once(cohort, monkeypatch):
    from megfm.data.store import StoreReader

    reads = []
    read = StoreReader._read

    def counting(self, shard, what, fn):
        reads.append((shard, what))
        return read(self, shard, what, fn)

    monkeypatch.setattr(StoreReader, "_read", counting)
    dm = MEGDataModule(cohort, batch_size=8, val_fraction=0.2, test_fraction=0.1, seed=0)
    dm.setup()
    n_shards = 20
    assert sorted(k for k, what in reads if what == "the metadata") == list(range(n_shards))
    assert sorted(k for k, what in reads if what == "the sensor geometry") == list(
        range(n_shards))


def test_train_batches_are_runs_of_one_recording(cohort):
    dm = MEGDataModule(cohort, batch_size=8, val_fraction=0.2, seed=0, run_length=4)
    loader = dm.train_dataloader()
    shards = [np.unique(dm.train_dataset_.reader.locate(bt["index"].numpy())[0]).size
              for bt in loader]
    # 8 windows from at most 4 recordings (runs of up to 4; the cohort's auditory
    # recordings hold 2 windows), against about 7 for independent draws
    assert np.mean(shards) <= 4
    plain = MEGDataModule(cohort, batch_size=8, val_fraction=0.2, seed=0, run_length=1,
                          buffer_shards=None).train_dataloader()
    assert np.mean([np.unique(dm.train_dataset_.reader.locate(bt["index"].numpy())[0]).size
                    for bt in plain]) > 5
    with pytest.raises(ValueError, match="Invalid value for 'run_length'"):
        MEGDataModule(cohort, run_length=0)
