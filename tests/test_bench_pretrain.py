"""bench_pretrain.py: FLOPs per window, achieved FLOP/s and MFU against the measured matmul
peak in the same run; the torch.compile comparison reports failures instead of raising."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

import megfm.training as training  # where bench_pretrain looks compile_model up

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

bench = importlib.import_module("bench_pretrain")

SPEC = dict(model="megfm", sensors=12, preset="tiny", device="cpu", precision="fp32",
            batch_size=2, steps=1, warmup=1, seconds=1.0, sfreq=200.0, threads=1, flops=False,
            peak_flops=None, spec_peak_flops=None, compile=True)


def test_quick_run_reports_flops_and_mfu(tmp_path):
    out = tmp_path / "pretrain.json"
    assert bench.main(["--quick", "--models", "megfm", "--sensors", "12", "--steps", "1",
                       "--warmup", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    peak = result["peak"]
    assert peak["matmul"] == "fp32 2048^3" and peak["threads"] == 1
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["peak_flops_per_s"] == peak["peak_flops_per_s"] > 1e9  # a CPU core: > 1 GFLOP/s
    assert row["flops_per_window"] == row["flops_per_step"] / row["batch_size"] > 0
    assert row["achieved_flops_per_s"] == pytest.approx(row["flops_per_step"] / row["step_s"])
    assert 0 < row["mfu"] <= 1
    assert row["mfu"] == pytest.approx(row["achieved_flops_per_s"] / peak["peak_flops_per_s"])
    assert row["mfu_cpu_time"] == pytest.approx(
        row["flops_per_step"] / row["cpu_step_s"] / peak["peak_flops_per_cpu_s"])
    assert 0 < row["mfu_cpu_time"] <= 1
    assert "compile_step_s" not in row and "mfu_spec" not in row  # not asked; CPU


@pytest.fixture
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_compile_failure_is_reported_not_raised(monkeypatch, _one_thread):
    def broken(model):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(training, "compile_model", broken)
    row = bench._worker(dict(SPEC))
    assert row["compile_error"] == "RuntimeError: no C++ compiler | second line"
    assert row["step_s"] > 0  # the eager figures are still there


def test_compile_comparison_checks_loss_and_gradients(monkeypatch, _one_thread):
    # the plumbing only (the real compiled == eager check is in test_hardware.py): an
    # uncompiled copy matches exactly; a copy whose weights moved does not
    monkeypatch.setattr(training, "compile_model", lambda model: model)
    row = bench._worker(dict(SPEC))
    assert "compile_error" not in row
    assert row["compile_loss"] == row["compile_eager_loss"] and row["compile_matches"]
    assert row["compile_grad_rel_diff"] == 0
    assert row["compile_step_s"] > 0 and row["compile_speedup"] > 0
    assert row["compile_speedup_cpu_time"] == pytest.approx(
        row["cpu_step_s"] / row["compile_cpu_step_s"])

    def perturbed(model):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.1)
        return model

    monkeypatch.setattr(training, "compile_model", perturbed)
    row = bench._worker(dict(SPEC))
    assert not row["compile_matches"] and row["compile_grad_rel_diff"] > 1e-3
