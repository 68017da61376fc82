"""benchmarks/run_all.py: discovery and Markdown tables regenerated from a results folder."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("megfm_bench_run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "peers.json").write_text(json.dumps({
        "benchmark": "peers", "quick": True, "device": "CPU test",
        "target": {"speed_ratio": 1.25, "passed": False},
        "rows": [
            {"model": "megfm small", "params": 1223080, "windows_per_s": 12.3456,
             "peak_mem_mb": None, "note": "reference"},
            {"model": "LUNA", "params": 999195, "windows_per_s": 0.000123,
             "peak_mem_mb": 112.7, "note": "a|b"},
        ],
    }))
    (folder / "study.json").write_text(json.dumps({
        "auroc": {"megfm/logreg": {"value": 0.9, "ci_low": 0.8, "ci_high": 1.0}},
        "machine": {"cpus": 2},
    }))
    (folder / "broken.json").write_text("{not json")
    return folder


def test_tables_from_fake_results(run_all, results: Path, tmp_path: Path) -> None:
    out = run_all.write_tables(tmp_path / "docs" / "tables.md", results,
                               status=[{"script": "bench_peers.py", "status": "ok",
                                        "seconds": 3.0}])
    text = out.read_text()
    assert text.startswith("# Benchmark tables")
    # one section per file, in name order
    assert text.index("## broken") < text.index("## peers") < text.index("## study")
    assert "Unreadable results file" in text
    # records -> table with the union of keys; None -> "-", floats rounded, pipes escaped
    assert "| model | params | windows_per_s | peak_mem_mb | note |" in text
    assert "| megfm small | 1223080 | 12.3 | - | reference |" in text
    assert "| LUNA | 999195 | 0.000123 | 112.7 | a\\|b |" in text
    # scalar settings, nested scalars and dict-of-dicts
    assert "| device | CPU test |" in text
    assert "| quick | yes |" in text
    assert "| speed_ratio | 1.250 |" in text
    assert "| megfm/logreg | 0.900 | 0.800 | 1.000 |" in text
    assert "| bench_peers.py | ok | 3.000 |" in text
    assert not (tmp_path / "docs" / "tables.md.tmp").exists()


def test_empty_results_and_discovery(run_all, tmp_path: Path) -> None:
    text = run_all.render_markdown(tmp_path)
    assert "No results yet" in text
    (tmp_path / "bench_b.py").write_text("")
    (tmp_path / "bench_a.py").write_text("")
    (tmp_path / "_bench_helper.py").write_text("")
    assert [p.name for p in run_all.discover(tmp_path)] == ["bench_a.py", "bench_b.py"]


def test_run_benchmarks_reports_failures(run_all, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    ok = tmp_path / "bench_ok.py"
    ok.write_text("import sys\nprint('quick' if '--quick' in sys.argv else 'full')\n")
    bad = tmp_path / "bench_bad.py"
    bad.write_text("raise SystemExit(3)\n")
    status = run_all.run_benchmarks([bad, ok], quick=True, timeout=30)
    assert [s["status"] for s in status] == ["failed (exit 3)", "ok"]
    assert status[1]["command"] == "python bench_ok.py --quick"
