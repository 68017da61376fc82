"""The packed-vs-padded decoder benchmark (benchmarks/bench_decoder.py): its baseline is faithful."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_decoder  # noqa: E402
from bench_pretrain import _synthetic_batch  # noqa: E402

from megfm import MaskedSignalModel, ModelConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # the benchmark sets threads


def test_padded_baseline_predicts_what_the_packed_decoder_predicts():
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset("tiny", leadfield_readout=True,
                                                 spectrum_weight=0.5)).eval()
    batch = _synthetic_batch(torch, 30, 200, 3)
    batch["sensor_mask"][1, -4:] = False
    valid = batch["sensor_mask"]
    patches, _ = model.tokenize(batch["x"], valid)
    geo = model.geometry(batch["pos"], batch["ori"], batch["sensor_type"], valid)
    for mode in ("mixed", "time", "random", "sensor"):
        mask = model.random_masking(valid, patches.shape[2], mode=mode,
                                    generator=torch.Generator().manual_seed(2))
        latents, _ = model.forward_encoder(patches, geo, valid[..., None] & ~mask)
        with torch.no_grad():
            packed = model.forward_decoder(latents, geo, mask, return_spectrum=True)
            padded = bench_decoder.padded_decoder(model, latents, geo, mask, return_spectrum=True)
        for a, b in zip(packed, padded, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_quick_run_writes_rows(tmp_path, capsys):
    out = tmp_path / "decoder.json"
    assert bench_decoder.main(["--quick", "--threads", "1", "--steps", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["masking"] for r in rows] == ["mixed", "random"]
    for r in rows:
        assert r["packed_ms"] > 0 and r["padded_ms"] > 0 and r["max_loss_diff"] < 1e-4
    assert "speed-up" in capsys.readouterr().out
