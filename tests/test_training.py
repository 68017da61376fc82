"""Pretraining: loss drops, exact resume, NaN guard, refusals, CLI."""

from __future__ import annotations

import json
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import training_helpers as helpers

from megfm.data import collate_windows  # noqa: E402
from megfm.training import MEGDataModule, PretrainModule, load_metrics, pretrain  # noqa: E402
from megfm.training.module import cosine_with_warmup  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


class _Batches(torch.utils.data.Dataset):
    def __init__(self, windows):
        self.windows = windows

    def __len__(self):
        return self.windows.n_windows

    def __getitem__(self, i):
        batch = helpers.windows_batch(self.windows, [i])
        return {k: batch[k][0] for k in batch.keys()}


class _DataModule(pl.LightningDataModule):
    """Deterministic (unshuffled) data module over in-memory windows."""

    def __init__(self, windows, batch_size=4):
        super().__init__()
        self.windows, self.batch_size = windows, batch_size

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Batches(self.windows[:16]), batch_size=self.batch_size,
                                           collate_fn=collate_windows)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(_Batches(self.windows[16:]), batch_size=self.batch_size,
                                           collate_fn=collate_windows)


@pytest.fixture
def datamodule():
    return _DataModule(helpers.tiny_windows(n_windows=24))


def _run(out, dm, **kw):
    kw.setdefault("max_steps", 8)
    return pretrain(None if "store" not in kw else kw.pop("store"), out, datamodule=dm,
                    progress=False, lr=3e-3, warmup_steps=1, log_every_n_steps=1, **kw)


def test_schedule_warmup_then_cosine():
    f = [cosine_with_warmup(s, warmup_steps=4, max_steps=20, min_lr_ratio=0.1) for s in range(25)]
    assert f[0] == pytest.approx(0.25) and f[3] == pytest.approx(1.0)
    assert np.all(np.diff(f[3:21]) <= 1e-12)  # decreasing after warm-up
    assert f[20] == pytest.approx(0.1) and f[24] == pytest.approx(0.1)


def test_pretrain_runs_loss_drops_and_exports(tmp_path, datamodule):
    model_dir = _run(tmp_path / "run", datamodule, max_steps=40, checkpoint_every=10)
    assert (model_dir / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    metrics = load_metrics(tmp_path / "run")
    loss = metrics["train/loss_step"][np.isfinite(metrics["train/loss_step"])]
    assert len(loss) == 40
    assert loss[-5:].mean() < 0.8 * loss[:5].mean()
    # the exported model loads and gives the trained weights
    from megfm.models import load_pretrained

    model = load_pretrained(model_dir)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][f"model.{name}"]), name


def test_run_shorter_than_an_epoch_validates_once(tmp_path, datamodule, monkeypatch):
    # 16 training windows in batches of 4: validation is due after 4 steps; stop after 2
    from lightning.pytorch.callbacks import model_checkpoint
    from lightning.pytorch.utilities.rank_zero import WarningCache

    monkeypatch.setattr(model_checkpoint, "warning_cache", WarningCache())  # no de-duplication
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(tmp_path / "run", datamodule, max_steps=2)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "val/loss" in m], messages
    ckpts = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpts.glob("best-*.ckpt")] == ["best-step=2.ckpt"]
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 2
    best = torch.load(ckpts / "best-step=2.ckpt", weights_only=True)
    (state,) = [v for k, v in best["callbacks"].items() if "val/loss" in k]
    assert np.isfinite(float(state["best_model_score"]))
    val = load_metrics(tmp_path / "run")["val/loss"]
    assert np.isfinite(val).sum() == 1  # one validation, of the final state


class _Kill(pl.Callback):
    """Simulate a crash in the middle of step ``at`` (after the checkpoint of step ``at``)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at + 1:
            raise RuntimeError("killed")


def test_resume_continues_the_curve_exactly(tmp_path, datamodule):
    _run(tmp_path / "full", datamodule, max_steps=8, checkpoint_every=2)
    full = load_metrics(tmp_path / "full")
    # an interrupted run: dies during step 6, its last checkpoint is from step 4 ...
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "cut", datamodule, max_steps=8, checkpoint_every=4, callbacks=[_Kill(5)])
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    with pytest.raises(ValueError, match="already holds a pretraining run"):
        _run(tmp_path / "cut", datamodule, max_steps=8)
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").is_file()  # untouched
    # ... then resumed up to step 8
    _run(tmp_path / "cut", datamodule, max_steps=8, checkpoint_every=4, resume=True)
    cut = load_metrics(tmp_path / "cut")
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8
    key = "train/loss_step"
    a, b = full[key][np.isfinite(full[key])], cut[key][np.isfinite(cut[key])]
    assert len(a) == len(b) == 8
    np.testing.assert_array_equal(cut["step"][np.isfinite(cut[key])], np.arange(8))
    np.testing.assert_allclose(b, a, rtol=1e-5)


class _Record(pl.Callback):
    """Record the window indices of every training step as (epoch, step, indices)."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.steps.append((trainer.current_epoch, trainer.global_step, batch["index"].tolist()))


@pytest.mark.parametrize("balance_states", [False, True])
def test_resume_mid_epoch_with_the_store_datamodule(tmp_path, balance_states):
    # 6 subjects, one held out: 20 training windows in batches of 6 -> 4 steps per epoch
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    kw = dict(store=store, batch_size=6, val_fraction=0.2, balance_states=balance_states,
              seed=3)
    full_rec, cut_rec, resumed_rec = _Record(), _Record(), _Record()
    _run(tmp_path / "full", None, max_steps=10, checkpoint_every=5, callbacks=[full_rec], **kw)
    # killed during step 7: the last checkpoint (step 6) is 2 batches into epoch 1 ...
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "cut", None, max_steps=10, checkpoint_every=3,
             callbacks=[cut_rec, _Kill(6)], **kw)
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 6
    # ... resumed: finishes epoch 1 and goes on into epoch 2
    _run(tmp_path / "cut", None, max_steps=10, checkpoint_every=3, resume=True,
         callbacks=[resumed_rec], **kw)
    seen = [s for s in cut_rec.steps if s[1] < 6] + resumed_rec.steps
    assert [s[:2] for s in seen] == [s[:2] for s in full_rec.steps]
    assert [s[1] for s in seen] == list(range(10))
    assert [s[0] for s in seen] == [0] * 4 + [1] * 4 + [2] * 2
    assert seen == full_rec.steps  # the same windows in the same order
    dm = MEGDataModule(store, batch_size=6, val_fraction=0.2, seed=3)
    dm.setup("fit")
    train = sorted(dm.train_dataset_.indices.tolist())  # the split's own training windows
    assert len(train) == 20
    for epoch in (0, 1):
        drawn = sorted(np.concatenate([s[2] for s in seen if s[0] == epoch]).tolist())
        assert len(drawn) == 20 and set(drawn) <= set(train)
        if not balance_states:  # every training window exactly once per epoch
            assert drawn == train
    order = [np.concatenate([s[2] for s in seen if s[0] == e]).tolist() for e in (0, 1)]
    assert order[0] != order[1]  # reshuffled each epoch
    full, cut = load_metrics(tmp_path / "full"), load_metrics(tmp_path / "cut")
    key = "train/loss_step"
    a, b = full[key][np.isfinite(full[key])], cut[key][np.isfinite(cut[key])]
    assert len(a) == len(b) == 10
    np.testing.assert_allclose(b, a, rtol=1e-5)
    # extending the finished run (its last.ckpt: 2 batches into epoch 2) one step at a time,
    # with no periodic checkpoint inside the extensions, finishes epoch 2 in order
    more = [_Record(), _Record()]
    for steps, rec in zip((11, 12), more, strict=True):
        _run(tmp_path / "cut", None, max_steps=steps, checkpoint_every=5, resume=True,
             callbacks=[rec], **kw)
    assert [s[:2] for rec in more for s in rec.steps] == [(2, 10), (2, 11)]
    drawn = np.concatenate([s[2] for s in seen + more[0].steps + more[1].steps
                            if s[0] == 2]).tolist()
    assert len(drawn) == 20 and set(drawn) <= set(train)
    assert balance_states or sorted(drawn) == train
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and not any("last-" in n or "partial" in n for n in ckpts)
    assert [n for n in ckpts if n.startswith("previous-")] == ["previous-step=10.ckpt",
                                                                "previous-step=11.ckpt"]


def test_refusals(tmp_path, datamodule):
    with pytest.raises(FileNotFoundError, match="Cannot resume"):
        _run(tmp_path / "none", datamodule, resume=True)
    with pytest.raises(FileNotFoundError, match="neither a megfm store"):
        pretrain(tmp_path, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="'max_steps'"):
        _run(tmp_path / "y", datamodule, max_steps=0)
    with pytest.raises(ValueError, match="'model'"):
        _run(tmp_path / "z", datamodule, model="huge")
    with pytest.raises(ValueError, match="not both"):
        _run(tmp_path / "w", datamodule, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="'mask_ratio'"):
        PretrainModule("tiny", mask_ratio=1.5)


def test_overwrite_replaces_run(tmp_path, datamodule):
    _run(tmp_path / "run", datamodule, max_steps=2)
    _run(tmp_path / "run", datamodule, max_steps=3, overwrite=True)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert len(list((tmp_path / "run" / "logs").glob("version_*"))) == 1


def test_nan_loss_names_step_and_windows(tmp_path):
    windows = helpers.tiny_windows(n_windows=24)
    windows.data[5, 2, 10] = np.nan  # window 5 is in the second batch (step 1)
    dm = _DataModule(windows)
    with pytest.raises(FloatingPointError, match=r"store index \[5\] have NaN or Inf samples "
                                                 r"\(train, global step 1\)"):
        _run(tmp_path / "nan", dm, max_steps=4)


@pytest.mark.parametrize("damage", ["nan", "all bad"])
def test_bad_window_in_a_shard_is_named_by_store_index_shard_and_recording(tmp_path, capsys,
                                                                           damage):
    import h5py
    from cli_helpers import one_error_line

    from megfm.cli.main import main

    store = helpers.tiny_store(tmp_path / "store", n_windows=12)
    helpers.tiny_store(store, n_windows=12, seed=1)  # a second shard: windows 12-23
    with h5py.File(store / "shard-00001.h5", "r+") as f:  # damage after writing
        if damage == "nan":
            f["data"][3, 2, 10] = np.nan
        else:
            f["geometry/bads"][...] = True
    args = ["pretrain", str(store), "--out", str(tmp_path / "run"), "--max-steps", "6",
            "--batch-size", "24", "--accelerator", "cpu", "--no-progress", "--val-fraction", "0"]
    assert main(args) == 1
    err = one_error_line(capsys.readouterr().err)
    assert "of the batch" not in err
    if damage == "nan":
        assert "store index [15] have NaN or Inf samples" in err
        assert "window 15 (row 3 of shard-00001.h5, recording of subject '03')" in err
    else:
        assert "have no valid sensor" in err and "of shard-00001.h5" in err
        assert "shard-00000.h5" not in err


def test_masks_are_seeded(datamodule):
    batch = helpers.windows_batch(helpers.tiny_windows(n_windows=4))
    m1 = PretrainModule("tiny", seed=3)
    m2 = PretrainModule("tiny", seed=3)
    m2.load_state_dict(m1.state_dict())
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    o1, o2 = m1(batch, generator=g1), m2(batch, generator=g2)
    assert torch.equal(o1["mask"], o2["mask"])
    assert o1["loss"].item() == pytest.approx(o2["loss"].item())
    assert m1._step_seed("train", 0) != PretrainModule("tiny", seed=4)._step_seed("train", 0)


def test_cli_pretrain_and_embed_on_a_store(tmp_path, capsys):
    from megfm.cli.main import main

    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    out = tmp_path / "run"
    args = ["pretrain", str(store), "--out", str(out), "--max-steps", "4", "--batch-size", "4",
            "--accelerator", "cpu", "--no-progress", "--seed", "1"]
    assert main(args) == 0
    assert "Pretrained model" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["model_config"]["sfreq"] == 200.0 and run["settings"]["seed"] == 1
    # refusals go through the CLI as one clear line, exit code 1, nothing overwritten
    mtime = (out / "checkpoints" / "last.ckpt").stat().st_mtime
    assert main(args) == 1
    assert "already holds a pretraining run" in capsys.readouterr().err
    assert main(["pretrain", str(store), "--out", str(tmp_path / "new"), "--resume"]) == 1
    assert "Cannot resume" in capsys.readouterr().err
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime == mtime
    # resume extends the run to 6 steps from the store-backed checkpoint
    assert main(args[:5] + ["6"] + args[6:] + ["--resume"]) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    # embed the store with the run folder as checkpoint
    npz = tmp_path / "features.npz"
    assert main(["embed", str(out), str(store), "--out", str(npz), "--no-progress"]) == 0
    with np.load(npz) as f:
        assert f["features"].shape == (24, 32) and f["features"].dtype == np.float32
        assert f["meta_subject"].shape == (24,) and str(f["store"]) == str(store.resolve())
        np.testing.assert_array_equal(f["meta_index"], np.arange(24))
    assert main(["embed", str(out), str(store), "--out", str(npz)]) == 1
    assert "exists" in capsys.readouterr().err


def test_cli_pretrain_set_overrides_model_config_fields(tmp_path, capsys):
    from megfm.cli.main import main

    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    base = ["pretrain", str(store), "--max-steps", "2", "--batch-size", "4", "--accelerator",
            "cpu", "--no-progress", "--val-fraction", "0"]
    out = tmp_path / "run"
    assert main(base + ["--out", str(out), "--set", "time_block=3",
                        "--set", "mask_mode=sensor"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())["model"]
    assert config["time_block"] == 3 and config["mask_mode"] == "sensor"
    assert config["dim"] == 32  # the rest is the tiny preset
    assert main(base + ["--out", str(tmp_path / "bad"), "--set", "time_blok=3"]) == 1
    err = capsys.readouterr().err
    assert "unknown ModelConfig field(s) ['time_blok']" in err and "time_block" in err
    # a removed option: at its old default the same model, otherwise the version that reads it
    assert main(base + ["--out", str(tmp_path / "old"), "--set", "spectral_tokens=true"]) == 1
    err = capsys.readouterr().err
    assert "spectral_tokens=True" in err and "megfm 0.1.0" in err
    assert main(base + ["--out", str(tmp_path / "old2"), "--set", "band_power_weight=0.3"]) == 1
    err = capsys.readouterr().err
    assert "band_power_weight=0.3" in err and "megfm 0.2.0.dev0" in err
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "bad"), "--set", "novalue"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_last_checkpoint_is_written_only_right_after_an_optimiser_step(tmp_path, monkeypatch):
    # with gradient accumulation a global step spans several batches; a save in the middle of
    # one would record consumed batches whose gradients are not in the weights yet
    import importlib
    from types import SimpleNamespace

    pretrain_module = importlib.import_module("megfm.training.pretrain")  # the module

    saves = []
    monkeypatch.setattr(pretrain_module, "_save_atomically",
                        lambda trainer, path, **kw: saves.append(trainer.global_step))
    callback = pretrain_module._last_checkpoint(tmp_path / "last.ckpt", every=2, keep=3)
    trainer = SimpleNamespace(global_step=0, max_steps=5)
    callback.on_train_start(trainer, None)
    # accumulate=2: the global step moves at every second batch end
    for step in [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]:
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, None, None, 0)
    assert saves == [2, 4, 5] and callback.saved


def test_last_checkpoint_by_time_is_decided_by_rank_zero(tmp_path, monkeypatch):
    import importlib
    from types import SimpleNamespace

    pretrain_module = importlib.import_module("megfm.training.pretrain")
    saves, asked = [], []
    monkeypatch.setattr(pretrain_module, "_save_atomically",
                        lambda trainer, path, **kw: saves.append(trainer.global_step))
    now = [0.0]

    def broadcast(obj, src=0):  # what rank 0 decided; every rank asks at every step
        asked.append(obj)
        return obj

    callback = pretrain_module._last_checkpoint(tmp_path / "last.ckpt", every=100, minutes=1.0,
                                                clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, max_steps=10,
                              strategy=SimpleNamespace(broadcast=broadcast))
    callback.on_train_start(trainer, None)
    for step, seconds in [(1, 30), (2, 61), (3, 90), (4, 120), (5, 125), (6, 150), (10, 160)]:
        now[0] = seconds
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, None, None, 0)
    # due 60 s after the start (step 2), 60 s after that write (not at 120 s: step 5), then
    # the final step
    assert saves == [2, 5, 10] and callback.saved
    assert len(asked) == 7
    with pytest.raises(ValueError, match="'checkpoint_minutes'"):
        pretrain_module._last_checkpoint(tmp_path / "last.ckpt", every=1, minutes=0)


def test_cli_checkpoint_minutes_and_num_nodes(tmp_path, monkeypatch):
    import importlib

    from megfm.cli.main import main

    pretrain_module = importlib.import_module("megfm.training.pretrain")
    save, saves = pretrain_module._save_atomically, []

    def spy(trainer, path, **kw):
        saves.append(trainer.global_step)
        save(trainer, path, **kw)

    monkeypatch.setattr(pretrain_module, "_save_atomically", spy)
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    out = tmp_path / "run"
    assert main(["pretrain", str(store), "--out", str(out), "--max-steps", "3", "--batch-size",
                 "4", "--accelerator", "cpu", "--no-progress", "--val-fraction", "0",
                 "--num-nodes", "1", "--checkpoint-every", "100",
                 "--checkpoint-minutes", "1e-9"]) == 0
    assert saves == [1, 2, 3]  # by time at every step; by step (100) never
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert json.loads((out / "run.json").read_text())["settings"]["num_nodes"] == 1


# --------------------------------------------------------------------- PretrainConfig
@pytest.mark.parametrize("name, value", [
    ("max_steps", 0), ("batch_size", 1.5), ("accumulate", True), ("keep_checkpoints", 0),
    ("log_every_n_steps", -1), ("num_nodes", 0), ("prefetch_factor", 0), ("num_workers", -1),
    ("warmup_steps", -1), ("checkpoint_every", 0), ("seed", -2), ("lr", 0.0),
    ("lr", float("nan")), ("weight_decay", -0.1), ("val_fraction", 1.0),
    ("gradient_clip_val", 0.0), ("checkpoint_minutes", 0), ("mask_ratio", 1.5),
    ("mask_mode", "everything"), ("states", []), ("subjects", [1]), ("devices", 0),
    ("devices", "two"), ("precision", "8-bit"), ("accelerator", ""), ("balance_states", "yes"),
    ("pin_memory", 1), ("compile", "yes"),
])
def test_pretrain_config_refuses_a_bad_value_naming_its_field(name, value):
    from megfm.training import PretrainConfig

    with pytest.raises((ValueError, TypeError), match=f"Invalid value for '{name}'") as info:
        PretrainConfig(**{name: value})
    assert "\n" not in str(info.value)


def test_pretrain_config_normalises_and_round_trips_through_json():
    from megfm.training import PretrainConfig

    config = PretrainConfig(states="rest", subjects=["01", "02"], devices="0,1", precision=32,
                            lr=1, num_workers=np.int64(2))
    assert config.states == ("rest",) and config.subjects == ("01", "02")
    assert config.devices == (0, 1) and config.precision == "32" and config.lr == 1.0
    assert type(config.num_workers) is int and PretrainConfig(devices="auto").devices == "auto"
    assert PretrainConfig(devices="-1").devices == -1
    again = PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    # the settings of an older run.json: world_size inside, newer fields missing
    old = {"max_steps": 5, "batch_size": 4, "world_size": 1, "precision": "32-true"}
    assert PretrainConfig.from_dict(old) == PretrainConfig(max_steps=5, batch_size=4,
                                                           precision="32-true")
    with pytest.raises(TypeError, match="'max_stpes'.*fields of megfm.PretrainConfig"):
        PretrainConfig.from_settings(max_stpes=3)


def test_pretrain_config_resolves_automatic_choices_for_the_machine(monkeypatch):
    from megfm.training import config as config_module

    auto = config_module.PretrainConfig(max_steps=200, accelerator="cpu")
    for cpus, devices, workers in [(16, 1, 4), (16, 4, 2), (8, 2, 2), (2, 1, 0), (1, 1, 0),
                                   (6, (0, 1), 1)]:
        monkeypatch.setattr(config_module, "_cpus", lambda cpus=cpus: cpus)
        resolved = config_module.PretrainConfig(accelerator="cpu", devices=devices).resolved()
        assert resolved.num_workers == workers, (cpus, devices)
    cfg = auto.resolved()
    assert (cfg.warmup_steps, cfg.checkpoint_every, cfg.pin_memory, cfg.precision) == \
        (10, 20, False, "32-true")
    assert cfg.resolved() == cfg  # nothing left to choose
    given = config_module.PretrainConfig(accelerator="cpu", num_workers=0, pin_memory=True,
                                         warmup_steps=0, checkpoint_every=7).resolved()
    assert (given.num_workers, given.pin_memory, given.warmup_steps,
            given.checkpoint_every) == (0, True, 0, 7)


def test_pretrain_takes_a_config_and_keyword_settings_and_records_them(tmp_path):
    from megfm.training import PretrainConfig, read_run

    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    seen = {}

    class _Loaders(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            loader = trainer.train_dataloader
            seen.update(workers=loader.num_workers, pin=loader.pin_memory,
                        prefetch=loader.prefetch_factor, batch=loader.batch_size)

    config = PretrainConfig(max_steps=2, batch_size=4, accelerator="cpu", val_fraction=0,
                            num_workers=1, prefetch_factor=3)
    pretrain(store, tmp_path / "run", config, seed=3, callbacks=[_Loaders()], progress=False)
    assert seen == {"workers": 1, "pin": False, "prefetch": 3, "batch": 4}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    expected = PretrainConfig(max_steps=2, batch_size=4, accelerator="cpu", val_fraction=0,
                              num_workers=1, prefetch_factor=3, seed=3).resolved()
    assert run["settings"] == expected.to_dict() and run["world_size"] == 1
    assert read_run(tmp_path / "run")["settings"] == expected
    with pytest.raises(TypeError, match="'batchsize'"):
        pretrain(store, tmp_path / "other", batchsize=4)


def test_read_run_reads_an_older_run_json(tmp_path):
    from megfm.training import PretrainConfig, read_run

    (tmp_path / "run.json").write_text(json.dumps({
        "megfm_version": "0.1.0", "store": "/s", "model_config": {"dim": 32},
        "settings": {"max_steps": 9, "batch_size": 2, "lr": 0.01, "world_size": 2,
                     "states": ["rest"], "precision": "32-true"}}))
    run = read_run(tmp_path)
    assert run["world_size"] == 2 and run["model_config"] == {"dim": 32}
    assert run["settings"] == PretrainConfig(max_steps=9, batch_size=2, lr=0.01,
                                             states=("rest",), precision="32-true")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="not the run.json of a megfm pretraining run"):
        read_run(tmp_path)


def test_read_run_names_settings_this_version_does_not_know(tmp_path):
    from megfm.training import read_run

    (tmp_path / "run.json").write_text(json.dumps({
        "model_config": {}, "settings": {"max_steps": 9, "spectral_weight": 0.0}}))
    with pytest.raises(ValueError, match=r"run.json are not settings of this megfm .*"
                                         r"'spectral_weight'"):
        read_run(tmp_path)


def test_resume_names_changed_settings_and_records_them(tmp_path, caplog):
    import logging

    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    kw = dict(batch_size=4, accelerator="cpu", val_fraction=0, progress=False, num_workers=0)
    pretrain(store, tmp_path / "run", max_steps=2, **kw)
    with caplog.at_level(logging.WARNING, logger="megfm.training.pretrain"):
        pretrain(store, tmp_path / "run", max_steps=3, balance_states=True, resume=True, **kw)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "max_steps=3; the run recorded 2" in warned
    assert "balance_states=True; the run recorded False" in warned
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["max_steps"] == 3 and run["settings"]["balance_states"] is True
    (resume,) = run["resumes"]
    assert resume["changed"]["max_steps"] == {"before": 2, "now": 3}
    assert resume["from_checkpoint"] == "last.ckpt"
