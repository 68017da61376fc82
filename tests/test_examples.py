"""Run every example script in quick mode, as a user would, and check what it promises.

Each example runs in a subprocess (``MPLBACKEND=Agg``, a timeout) with ``--quick --out``;
the test asserts exit status 0, the PNG files the script's docstring promises, and a few
lines of its printed summary. Examples 02-05 share one output folder, so the tiny cohort,
store and model of ``examples/_quick_data.py`` are made once and reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 240  # seconds per example; quick runs take well under that


def _run(name: str, out: Path, *extra: str, env: dict | None = None) -> str:
    """Run ``examples/<name>`` with ``--quick --out out``; return its stdout."""
    env = dict(os.environ if env is None else env)
    env["MPLBACKEND"] = "Agg"
    # One BLAS/torch thread: on a few shared CPU cores, more threads oversubscribe them and
    # the tiny models run ~4x slower (measured on the 2-core CI machine).
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in
                                                       [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=TIMEOUT, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-5000:]}")
    return proc.stdout


def _assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory) -> Path:
    """Output folder shared by examples 02-05 (one cached cohort, store and model)."""
    return tmp_path_factory.mktemp("examples_shared")


def test_every_example_is_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert scripts == ["01_bids_multistate_store.py", "02_pretrain_lightning.py",
                       "03_embeddings_classifier.py", "04_attention_attribution.py",
                       "05_finetune.py", "06_simulate_real_info.py"]
    for name in scripts:  # each starts with a docstring that says how to run it
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "--quick" in text.split('"""')[1], name


def test_01_bids_multistate_store(tmp_path):
    stdout = _run("01_bids_multistate_store.py", tmp_path)
    _assert_png(tmp_path / "windows_per_state.png")
    _assert_png(tmp_path / "example_windows.png")
    assert (tmp_path / "bids" / "dataset_description.json").is_file()
    assert (tmp_path / "store").is_dir()
    for state in ("rest", "auditory", "somatosensory"):
        assert state in stdout
    assert "streamed" in stdout


def test_02_pretrain_lightning(shared_out):
    stdout = _run("02_pretrain_lightning.py", shared_out)
    _assert_png(shared_out / "loss_curve.png")
    run = shared_out / "pretrain_lightning"
    assert (run / "model" / "config.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # two pieces of the same run: the first and the resumed one
    assert len(list((run / "logs").glob("version_*/metrics.csv"))) == 2
    assert "resumed to 20 steps" in stdout


def test_03_embeddings_classifier(shared_out):
    stdout = _run("03_embeddings_classifier.py", shared_out)
    _assert_png(shared_out / "subject_embeddings.png")
    _assert_png(shared_out / "cv_scores.png")
    assert "subject-level features: (6," in stdout
    assert "Pipeline(Embedder" in stdout


def test_04_attention_attribution(shared_out):
    stdout = _run("04_attention_attribution.py", shared_out)
    for state in ("rest", "auditory", "somatosensory"):
        _assert_png(shared_out / "figures" / f"attention_{state}.png")
    _assert_png(shared_out / "attribution_topomap.png")
    regions = (shared_out / "regions.md").read_text()
    assert "| rank | region |" in regions
    assert "decision pattern (theta, noise reference)" in regions
    assert regions.count("| rank | region |") == 2
    assert "alignment" in stdout and "decision pattern over 6 subjects" in stdout


@pytest.mark.slow
def test_05_finetune(shared_out):
    stdout = _run("05_finetune.py", shared_out)
    _assert_png(shared_out / "finetune_auroc.png")
    _assert_png(shared_out / "finetune_study" / "roc.png")
    assert (shared_out / "finetune_study" / "report.md").is_file()
    for method in ("megfm/logreg", "finetune", "linear_probe"):
        assert method in stdout


def test_06_simulate_builtin_array(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEGFM_TEST_DATA"}
    stdout = _run("06_simulate_real_info.py", tmp_path, env=env)
    _assert_png(tmp_path / "psd.png")
    assert "built-in vectorview array" in stdout
    assert "306 MEG channels" in stdout


@pytest.mark.parametrize("system, n_channels", [("vectorview", 306), ("ctf", 273)])
def test_06_simulate_real_info(tmp_path, test_data_dir, system, n_channels):
    env = dict(os.environ, MEGFM_TEST_DATA=str(test_data_dir))
    stdout = _run("06_simulate_real_info.py", tmp_path, "--system", system, env=env)
    _assert_png(tmp_path / "psd.png")
    assert f"real {system} info" in stdout
    assert f"{n_channels} MEG channels" in stdout
