"""The A/B benchmark's downstream measures and --probe mode (benchmarks/bench_ablation.py)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_ablation  # noqa: E402

from megfm import MaskedSignalModel, ModelConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # the benchmark sets threads


def test_quick_variant_with_downstream_and_probe_of_an_exported_model(tmp_path, capsys):
    out = tmp_path / "ab.json"
    assert bench_ablation.main(["--quick", "--threads", "1", "--downstream", "--variant",
                                'lf2={"leadfield_sources": 2}', "--out", str(out)]) == 0
    row = json.loads(out.read_text())["results"]["lf2"]
    assert row["config"]["leadfield_sources"] == 2 and row["config"]["dim"] == 32
    down = row["downstream"]
    # two quick subjects are too few for a study (AUROC NaN), but enough for the probe
    assert math.isnan(down["auroc"]) and math.isfinite(down["theta_probe_r2"])
    assert down["theta_probe_r2"] <= 1.0
    assert "theta-probe R2" in capsys.readouterr().out
    # --probe trains nothing and scores exported models with the same measures
    torch.manual_seed(0)
    MaskedSignalModel(ModelConfig.preset("tiny")).save_pretrained(tmp_path / "m")
    probe = tmp_path / "probe.json"
    assert bench_ablation.main(["--quick", "--threads", "1", "--probe", str(tmp_path / "m"),
                                "--out", str(probe)]) == 0
    scored = json.loads(probe.read_text())["results"][str(tmp_path / "m")]
    assert set(scored) == {"auroc", "auroc_ci", "theta_probe_r2"}
    assert math.isfinite(scored["theta_probe_r2"])
