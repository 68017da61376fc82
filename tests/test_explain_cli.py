"""``megfm explain`` end to end on a tiny simulated cohort and the real MaskedSignalModel."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from megfm.cli.main import main  # noqa: E402
from megfm.data.epochs import make_windows  # noqa: E402
from megfm.data.preprocess import PreprocessConfig, preprocess  # noqa: E402
from megfm.data.store import write_store  # noqa: E402
from megfm.explain import attention_maps, find_ground_truth  # noqa: E402
from megfm.models import MaskedSignalModel, ModelConfig  # noqa: E402
from megfm.simulate import simulate_cohort  # noqa: E402


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two OPM subjects x two states, prepared into a store beside the cohort folder."""
    root = tmp_path_factory.mktemp("explain_cli")
    result = simulate_cohort(root / "cohort", n_subjects=2, states=["auditory", "somatosensory"],
                             array="opm", duration=12.0, block_size=5, sfreq=200.0, seed=0,
                             verbose=False)
    config = PreprocessConfig(line_freq=None, sfreq=200.0, h_freq=80.0)
    for rec in result["recordings"]:
        raw = mne.io.read_raw_fif(rec["path"], preload=True, verbose=False)
        windows = make_windows(preprocess(raw, config, verbose=False), state=rec["state"],
                               window_seconds=0.5, subject=rec["subject"], label=rec["group"])
        write_store(windows, root / "store")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset("tiny", sfreq=200.0, patch_samples=20))
    model.save_pretrained(root / "ckpt")
    return root, model


def test_real_model_attention_maps(cohort):
    root, model = cohort
    maps = attention_maps(model, root / "store", batch_size=8)
    assert maps.keys == [("auditory",), ("somatosensory",)]
    for key in maps.keys:
        np.testing.assert_allclose(np.nansum(maps.weights[key]), 1.0, atol=1e-6)
        np.testing.assert_allclose(np.nansum(maps.rollout[key]), 1.0, atol=1e-6)
        assert maps.patch_weights[key].shape[0] == 5  # 0.5 s windows / 0.1 s patches
    assert maps.patch_seconds == pytest.approx(0.1)


def test_cli_writes_pngs_and_json(cohort, capsys):
    root, _ = cohort
    out = root / "figs"
    assert find_ground_truth(root / "store") == root / "cohort" / "ground_truth.json"
    code = main(["explain", str(root / "ckpt"), str(root / "store"), "--out", str(out),
                 "--batch-size", "8", "--no-rollout"])
    assert code == 0
    result = json.loads((out / "explain.json").read_text())
    assert set(result["groups"]) == {"auditory", "somatosensory"}
    names = result["channel_names"]
    truth = json.loads((root / "cohort" / "ground_truth.json").read_text())
    for state, entry in result["groups"].items():
        assert len(entry["weights"]) == len(names)
        assert sum(w for w in entry["weights"] if w is not None) == pytest.approx(1.0)
        # stimulus states are event-locked: their event-related change is scored too
        assert set(entry["alignment"]) == {"spatial", "event"} and "rollout" not in entry
        assert sum(w for w in entry["event_related"] if w is not None) == pytest.approx(1.0)
        assert entry["n_expected_sensors"] == len(truth["expected_sensors"][state])
        assert {r["region"] for r in entry["regions"]} == set(truth["regions"])
        assert [r["rank"] for r in entry["regions"]][:3] == [1, 2, 3]
    for name in ("attention_auditory.png", "attention_somatosensory.png",
                 "event_auditory.png", "event_somatosensory.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "rollout_auditory.png").exists()
    assert "alignment spatial=" in capsys.readouterr().out


def test_cli_errors(cohort, capsys, tmp_path):
    root, _ = cohort
    code = main(["explain", str(root / "ckpt"), str(root / "store"), "--out", str(tmp_path),
                 "--states", "rest"])
    assert code == 1
    assert "absent from the data" in capsys.readouterr().err
    code = main(["explain", str(root / "ckpt"), str(root / "store"), "--out", str(tmp_path),
                 "--ground-truth", str(tmp_path / "missing.json")])
    assert code == 1
    assert "No ground-truth file" in capsys.readouterr().err


def test_cli_explains_a_litdata_export_as_the_store(cohort, tmp_path):
    pytest.importorskip("litdata")
    from megfm.data.streaming import export_litdata

    root, _ = cohort
    export = export_litdata(root / "store", root / "export", chunk_bytes="256KB")
    assert find_ground_truth(export) == root / "cohort" / "ground_truth.json"
    results = []
    for source, out in ((root / "store", tmp_path / "a"), (export, tmp_path / "b")):
        assert main(["explain", str(root / "ckpt"), str(source), "--out", str(out),
                     "--batch-size", "8", "--no-rollout"]) == 0
        results.append(json.loads((out / "explain.json").read_text())["groups"])
    for state, entry in results[0].items():
        assert results[1][state]["weights"] == entry["weights"]
        assert results[1][state]["alignment"] == entry["alignment"]
