"""Defaults that follow the hardware: precision, fused AdamW, pinned batches, TF32 matmuls."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
import training_helpers as helpers

from megfm.training import _hardware as hw
from megfm.training import pretrain

pretrain_module = importlib.import_module("megfm.training.pretrain")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()


def _fake_cuda(monkeypatch, *, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_auto_precision_is_bf16_on_cuda_only(monkeypatch):
    assert hw.resolve_precision("auto", "cpu") == "32-true"
    assert hw.resolve_precision("16-mixed", "cpu") == "16-mixed"  # explicit: unchanged
    if not torch.cuda.is_available():
        assert hw.resolve_precision("auto", "auto") == "32-true"
        assert hw.device_type("auto") in ("cpu", "mps")
    _fake_cuda(monkeypatch)
    assert hw.device_type("auto") == hw.device_type("gpu") == "cuda"
    assert hw.resolve_precision("auto", "auto") == "bf16-mixed"
    assert hw.resolve_precision("auto", "cuda") == "bf16-mixed"
    assert hw.resolve_precision("auto", "cpu") == "32-true"  # CPU asked for on a GPU machine
    assert hw.resolve_precision("32-true", "cuda") == "32-true"
    _fake_cuda(monkeypatch, bf16=False)  # e.g. a V100
    assert hw.resolve_precision("auto", "cuda") == "32-true"


class _FakeCudaParam:
    device = torch.device("cuda")

    def is_floating_point(self):
        return True


def test_fused_adamw_on_cpu_and_cuda_unless_mixed_precision_clips():
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    cuda = [_FakeCudaParam(), _FakeCudaParam()]
    assert hw.adamw_kwargs(cpu) == hw.adamw_kwargs(cuda) == {"fused": True}
    assert hw.adamw_kwargs([]) == {}
    assert hw.adamw_kwargs([_FakeCudaParam(), *cpu]) == {}  # mixed devices: not fused
    assert hw.adamw_kwargs([torch.zeros(3, dtype=torch.int64)]) == {}
    # Lightning refuses a fused optimiser when a mixed precision clips gradients
    assert hw.adamw_kwargs(cuda, precision="bf16-mixed", gradient_clip_val=1.0) == {}
    assert hw.adamw_kwargs(cuda, precision="bf16-mixed") == {"fused": True}
    assert hw.adamw_kwargs(cpu, precision="32-true", gradient_clip_val=1.0) == {"fused": True}
    from megfm.training import PretrainModule

    opt = PretrainModule("tiny").configure_optimizers()["optimizer"]
    assert opt.defaults.get("fused") is True  # CPU parameters, no trainer: fused


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_pretrain_steps_with_clipping_in_each_precision(tmp_path, precision):
    # a fused AdamW under bf16-mixed with clipping stops Lightning at the first step
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    pretrain(store, tmp_path / "run", max_steps=1, batch_size=4, accelerator="cpu",
             precision=precision, gradient_clip_val=1.0, val_fraction=0, progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1
    fused = ckpt["optimizer_states"][0]["param_groups"][0].get("fused")
    assert bool(fused) is (precision == "32-true")


class _Stop(Exception):
    pass


def test_cuda_run_pins_batches_and_allows_tf32(tmp_path, monkeypatch):
    # the CUDA choices of pretrain(), with a device type faked as CUDA and the run stopped as
    # soon as the data module is built (the trainer itself runs on the CPU here)
    seen = {}

    def fake_datamodule(store, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr("megfm.training.datamodule.MEGDataModule", fake_datamodule)
    store = helpers.tiny_store(tmp_path / "store", n_windows=8)
    old = torch.get_float32_matmul_precision()
    try:
        monkeypatch.setattr(hw, "device_type", lambda accelerator: "cuda")
        with pytest.raises(_Stop):
            pretrain(store, tmp_path / "run", accelerator="cpu", precision="32-true",
                     progress=False)
        assert seen["pin_memory"] is True
        assert torch.get_float32_matmul_precision() == "high"
        torch.set_float32_matmul_precision(old)
        monkeypatch.undo()
        monkeypatch.setattr("megfm.training.datamodule.MEGDataModule", fake_datamodule)
        with pytest.raises(_Stop):
            pretrain(store, tmp_path / "run2", accelerator="cpu", progress=False)
        assert seen["pin_memory"] is False
        assert torch.get_float32_matmul_precision() == old
    finally:
        torch.set_float32_matmul_precision(old)


def test_cpu_run_records_32_true_for_auto(tmp_path):
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    pretrain(store, tmp_path / "run", max_steps=1, batch_size=4, accelerator="cpu",
             val_fraction=0, progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["precision"] == "32-true"


@pytest.mark.gpu
@cuda_only
def test_gpu_pretrain_tiny_two_steps_in_bf16(tmp_path):
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    pretrain(store, tmp_path / "run", max_steps=2, batch_size=4, accelerator="cuda",
             devices=1, progress=False, log_every_n_steps=1)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["precision"] == "bf16-mixed"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    # bf16-mixed with the default clipping: CUDA's foreach AdamW (Lightning refuses fused)
    assert not ckpt["optimizer_states"][0]["param_groups"][0].get("fused")
    metrics = pretrain_module.load_metrics(tmp_path / "run")
    loss = metrics["train/loss_step"]
    loss = loss[~np.isnan(loss)]  # rows of other columns
    assert loss.size == 2 and np.isfinite(loss).all()


def test_compile_model_refuses_other_modules():
    with pytest.raises(TypeError, match="MaskedSignalModel; got Linear"):
        hw.compile_model(torch.nn.Linear(2, 2))


@pytest.mark.slow  # Inductor compiles the model: about a minute on a loaded CPU core
def test_compiled_pretrain_module_matches_eager():
    from torch._dynamo.utils import counters

    from megfm.training import PretrainModule

    batch = helpers.windows_batch(helpers.tiny_windows(n_windows=4, n_sensors=12, n_times=200))
    torch.manual_seed(0)
    eager = PretrainModule("tiny")
    eager.model.set_static_shapes(True)  # the same masks as the compiled run draws
    compiled = PretrainModule("tiny", compile=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged
    compiled.load_state_dict(eager.state_dict())
    assert compiled.model._compiled_call_impl is not None and compiled.model.static_shapes
    assert "compile" not in compiled.hparams  # a run choice, not part of the model
    torch._dynamo.reset()
    counters.clear()
    for seed in (0, 1, 2):  # a new mask at every step: the same graphs
        out = {}
        for name, module in (("eager", eager), ("compiled", compiled)):
            module.zero_grad(set_to_none=True)
            loss = module(batch, generator=torch.Generator().manual_seed(seed))["loss"]
            loss.backward()
            out[name] = (loss.detach(), [p.grad for p in module.parameters()])
        torch.testing.assert_close(out["compiled"][0], out["eager"][0], rtol=1e-5, atol=1e-6)
        for got, want in zip(out["compiled"][1], out["eager"][1], strict=True):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        if seed == 0:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs  # compiled once, not per mask
    assert not counters["graph_break"]  # the whole step is one graph (forward + backward)


def test_pretrain_compile_setting_reaches_the_model(tmp_path, monkeypatch):
    # the wiring only (compiling itself is checked above): --compile / compile=True compiles
    # the model once, and run.json records the choice
    compiled = []
    monkeypatch.setattr(hw, "compile_model", lambda model: compiled.append(type(model).__name__))
    store = helpers.tiny_store(tmp_path / "store", n_windows=24)
    pretrain(store, tmp_path / "run", max_steps=1, batch_size=4, accelerator="cpu",
             compile=True, val_fraction=0, progress=False)
    assert compiled == ["MaskedSignalModel"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["settings"]["compile"] is True
