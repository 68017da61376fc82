"""Benchmarks never write over the recorded results in benchmarks/results/ unless told to.

Each script's ``main`` is run up to its argument parsing (``_results.parse_args``, stopped
right after it): the output it would write must be in the git-ignored scratch folder unless
``--out`` names another file.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import _results  # noqa: E402

SCRIPTS = sorted(p.stem for p in BENCH.glob("bench_*.py")) + ["_bench_store"]


class _Parsed(Exception):
    """Raised right after parsing, carrying the parsed arguments."""

    def __init__(self, args):
        super().__init__("parsed")
        self.parsed = args


def _out(module, argv: list[str]) -> Path:
    real = _results.parse_args

    def stop(parser, argv_, name):
        raise _Parsed(real(parser, argv_, name))

    module.parse_args = stop
    try:
        with pytest.raises(_Parsed) as parsed:
            module.main(argv)
    finally:
        module.parse_args = real
    return Path(parsed.value.parsed.out)


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_output_is_scratch_never_the_recorded_results(script, tmp_path):
    module = importlib.import_module(script)
    full, quick = _out(module, []), _out(module, ["--quick"])
    for path in (full, quick):
        assert path.parent == _results.SCRATCH, path
        assert _results.RESULTS not in path.parents
    assert quick.name.endswith("_quick.json") and not full.name.endswith("_quick.json")
    # --out is honoured as given: the only way to write a recorded result
    assert _out(module, ["--out", str(tmp_path / "x.json")]) == tmp_path / "x.json"


def test_ablation_probe_default_is_scratch_too():
    module = importlib.import_module("bench_ablation")
    assert _out(module, ["--probe", "m"]) == _results.SCRATCH / "probe.json"


def test_run_all_renders_scratch_and_only_tables_only_touches_docs():
    spec = importlib.util.spec_from_file_location("megfm_bench_run_all_paths", BENCH / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    results, out = run_all.table_paths(False, None, None)
    assert results == _results.SCRATCH and out.parent == _results.SCRATCH
    results, out = run_all.table_paths(True, None, None)
    assert results == _results.RESULTS and out == ROOT / "docs" / "benchmarks_tables.md"


def test_scratch_is_ignored_and_no_recorded_result_is():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    check = subprocess.run([git, "-C", str(ROOT), "check-ignore", "-q",
                            "benchmarks/scratch/targets.json"], check=False)
    assert check.returncode == 0, "benchmarks/scratch/ must be git-ignored"
    tracked_ignored = subprocess.run(
        [git, "-C", str(ROOT), "ls-files", "--cached", "--ignored", "--exclude-standard",
         "benchmarks"], capture_output=True, text=True, check=True).stdout.split()
    assert tracked_ignored == []
