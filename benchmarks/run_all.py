"""Run every megfm benchmark and regenerate the Markdown tables of their results.

``python benchmarks/run_all.py --quick`` (minutes on CPU) or ``--full``:

1. runs each ``benchmarks/bench_*.py`` present, in name order, as its own process with the
   same Python interpreter and ``--quick`` (or no flag for ``--full``); a benchmark that fails
   or runs past ``--timeout`` is reported and the others still run. Without ``--out`` each
   writes its JSON to the git-ignored ``benchmarks/scratch/``, never over the recorded
   results of ``benchmarks/results/`` (see ``_results.py``);
2. reads every ``*.json`` of ``--results`` (default ``benchmarks/scratch/``);
3. writes ``--out`` (default ``benchmarks/scratch/benchmarks_tables.md``): one section per
   results file, a table for every list of records in it (e.g. ``rows``) and a table of its
   scalar settings, with the command lines and their status at the end.

``--tables-only`` skips step 1 and by default renders the recorded results,
``benchmarks/results/*.json``, into ``docs/benchmarks_tables.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
from _results import RESULTS as RESULTS_DIR  # noqa: E402
from _results import SCRATCH  # noqa: E402

TABLES = ROOT / "docs" / "benchmarks_tables.md"

__all__ = ["discover", "render_markdown", "render_results", "run_benchmarks", "table_paths",
           "write_tables"]


def discover(bench_dir: Path = BENCH_DIR) -> list[Path]:
    """The benchmark scripts, ``bench_*.py``, in name order."""
    return sorted(p for p in bench_dir.glob("bench_*.py") if p.is_file())


def run_benchmarks(scripts: list[Path], *, quick: bool, timeout: float | None = None,
                   python: str = sys.executable) -> list[dict[str, Any]]:
    """Run each script as its own process; returns one status record per script."""
    status = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for script in scripts:
        cmd = [python, str(script.relative_to(ROOT))] + (["--quick"] if quick else [])
        print(f"[run_all] {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, check=False,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as err:
            rc = None
            out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (
                err.stdout or "")
        seconds = time.perf_counter() - t0
        print(out[-4000:], flush=True)
        state = "ok" if rc == 0 else ("timeout" if rc is None else f"failed (exit {rc})")
        print(f"[run_all] {script.name}: {state} in {seconds:.0f} s", flush=True)
        status.append({"script": script.name, "command": "python " + " ".join(
            [str(script.relative_to(ROOT))] + (["--quick"] if quick else [])),
            "status": state, "seconds": round(seconds, 1)})
    return status


# ------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value) and len(value) <= 8:
            return ", ".join(_cell(v) for v in value)
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_cell(v)}" for k, v in value.items()
                         if not isinstance(v, (dict, list)))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(records: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for rec in records:
        for key in rec:
            if key not in columns:
                columns.append(key)
    # drop columns that are empty everywhere
    columns = [c for c in columns if any(rec.get(c) is not None for rec in records)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(rec.get(c)) for c in columns) + " |" for rec in records]
    return lines


def _is_records(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(v, dict) for v in value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _render_node(title: str, node: dict[str, Any], level: int) -> list[str]:
    lines: list[str] = []
    scalars = {k: v for k, v in node.items() if _is_scalar(v)
               or (isinstance(v, list) and all(_is_scalar(x) for x in v))}
    if scalars:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in scalars.items()]
        lines.append("")
    for key, value in node.items():
        if key in scalars:
            continue
        sub = f"{title} / {key}" if title else key
        if _is_records(value):
            lines += [f"{'#' * min(level, 6)} {sub}", ""] + _table(value) + [""]
        elif isinstance(value, dict):
            # a dict of records-like dicts (e.g. {"case": {...}, ...}) reads best as one table
            if value and all(isinstance(v, dict) and all(_is_scalar(x) for x in v.values())
                             for v in value.values()):
                recs = [{"name": k, **v} for k, v in value.items()]
                lines += [f"{'#' * min(level, 6)} {sub}", ""] + _table(recs) + [""]
            else:
                lines += [f"{'#' * min(level, 6)} {sub}", ""]
                lines += _render_node(sub, value, level + 1)
    return lines


def render_results(name: str, data: Any) -> list[str]:
    """Markdown section for one results file (any JSON layout)."""
    lines = [f"## {name}", ""]
    if isinstance(data, dict):
        lines += _render_node("", data, 3)
    elif _is_records(data):
        lines += _table(data) + [""]
    else:
        lines += ["```", json.dumps(data, indent=1)[:2000], "```", ""]
    return lines


def render_markdown(results_dir: Path = RESULTS_DIR,
                    status: list[dict[str, Any]] | None = None) -> str:
    """The whole ``benchmarks_tables.md`` text from the JSON files of ``results_dir``."""
    lines = ["# Benchmark tables", "",
             "Generated by `python benchmarks/run_all.py` from `benchmarks/results/*.json`; "
             "do not edit by hand.", ""]
    files = sorted(results_dir.glob("*.json"))
    if not files:
        lines += ["No results yet: run `python benchmarks/run_all.py --quick`.", ""]
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            lines += [f"## {path.stem}", "", f"Unreadable results file: {err}", ""]
            continue
        lines += render_results(path.stem, data)
    if status:
        lines += ["## Runs", ""] + _table(status) + [""]
    return "\n".join(lines).rstrip() + "\n"


def write_tables(out: Path = TABLES, results_dir: Path = RESULTS_DIR,
                 status: list[dict[str, Any]] | None = None) -> Path:
    """Write the Markdown tables (to a temporary name, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_markdown(results_dir, status))
    tmp.replace(out)
    return out


def table_paths(tables_only: bool, results: str | None, out: str | None) -> tuple[Path, Path]:
    """The results folder read and the Markdown file written.

    Running benchmarks renders what they wrote (the scratch folder) into the scratch folder;
    only ``--tables-only`` renders the recorded results into the committed docs page.
    """
    if tables_only:
        default_results, default_out = RESULTS_DIR, TABLES
    else:
        default_results, default_out = SCRATCH, SCRATCH / "benchmarks_tables.md"
    return (Path(results) if results else default_results, Path(out) if out else default_out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="run every benchmark with --quick (minutes on CPU)")
    mode.add_argument("--full", action="store_true",
                      help="run every benchmark in full (no --quick flag; the default)")
    mode.add_argument("--tables-only", action="store_true",
                      help="run nothing; regenerate the tables from the JSON results present")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these benchmarks, e.g. 'peers data' for "
                             "bench_peers.py and bench_data.py")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which one benchmark is stopped (default: none)")
    parser.add_argument("--results", default=None,
                        help="folder of the JSON results (default: benchmarks/scratch, or "
                        "benchmarks/results with --tables-only)")
    parser.add_argument("--out", default=None,
                        help="Markdown file to write (default: "
                        "benchmarks/scratch/benchmarks_tables.md, or docs/benchmarks_tables.md "
                        "with --tables-only)")
    args = parser.parse_args(argv)
    results, out = table_paths(args.tables_only, args.results, args.out)
    status = None
    if not args.tables_only:
        scripts = discover()
        if args.only:
            wanted = {f"bench_{n.removeprefix('bench_').removesuffix('.py')}.py"
                      for n in args.only}
            unknown = wanted - {s.name for s in scripts}
            if unknown:
                parser.error(f"no such benchmark: {sorted(unknown)}; present: "
                             f"{[s.name for s in scripts]}")
            scripts = [s for s in scripts if s.name in wanted]
        status = run_benchmarks(scripts, quick=args.quick, timeout=args.timeout)
    out = write_tables(out, results, status)
    print(f"[run_all] tables written to {out}")
    return 0 if not status or all(s["status"] == "ok" for s in status) else 1


if __name__ == "__main__":
    sys.exit(main())
