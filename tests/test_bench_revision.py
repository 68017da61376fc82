"""The revision benchmark (benchmarks/bench_revision.py) compares a checkout with a git revision."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_revision  # noqa: E402


def _has_history() -> bool:
    if shutil.which("git") is None:
        return False
    res = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True)
    return res.returncode == 0


pytestmark = pytest.mark.skipif(not _has_history(), reason="needs the git history of megfm")


def test_export_revision_writes_the_package(tmp_path):
    tree = bench_revision.export_revision("HEAD", tmp_path)
    assert (tree / "megfm" / "__init__.py").is_file()
    assert not (tree / "tests").exists()  # only the package is exported
    with pytest.raises(SystemExit, match="not-a-revision"):
        bench_revision.export_revision("not-a-revision", tmp_path / "x")


def test_quick_run_against_head(tmp_path, capsys):
    out = tmp_path / "rev.json"
    assert bench_revision.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["revision"] == "HEAD" and row["this_ms"] > 0 and row["revision_ms"] > 0
    if not subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "megfm"]).returncode:
        assert row["max_loss_diff"] == 0.0  # the same code trains identically
    assert "speed-up" in capsys.readouterr().out


def test_full_run_needs_a_revision():
    with pytest.raises(SystemExit):
        bench_revision.main([])
