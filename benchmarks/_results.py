"""Writing benchmark results: one JSON file, through a temporary name and a rename.

``benchmarks/results/*.json`` are evidence: the docs cite their numbers. A benchmark writes
there only when told to (``--out benchmarks/results/NAME.json``); without ``--out`` it writes
``benchmarks/scratch/NAME.json`` (``NAME_quick.json`` with ``--quick``), which git ignores, so
``make bench`` and the commands of the docs never replace a recorded result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmark venvs may not have megfm installed
    sys.path.insert(0, str(ROOT))

from megfm._io import atomic_write_text  # noqa: E402

#: Recorded results (committed, cited by the docs).
RESULTS = ROOT / "benchmarks" / "results"
#: Results of runs without ``--out`` (git-ignored).
SCRATCH = ROOT / "benchmarks" / "scratch"


def output_path(out: str | Path | None, name: str, *, quick: bool = False) -> Path:
    """The JSON file a benchmark writes: ``out``, else ``benchmarks/scratch/NAME[_quick].json``."""
    if out is not None:
        return Path(out)
    return SCRATCH / f"{name}{'_quick' if quick else ''}.json"


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               name: str | Callable[[argparse.Namespace], str]) -> argparse.Namespace:
    """Add ``--out`` to ``parser``, parse ``argv`` and set ``args.out`` (a str) to the output.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The benchmark's parser, without ``--out``.
    argv : sequence of str | None
        Arguments (None: ``sys.argv[1:]``).
    name : str | callable
        Stem of the default file, or a function of the parsed arguments that returns it.

    Returns
    -------
    args : argparse.Namespace
    """
    parser.add_argument("--out", default=None,
                        help="JSON output (default: benchmarks/scratch/NAME[_quick].json, "
                        "git-ignored; pass --out benchmarks/results/NAME.json to record a result "
                        "that the docs cite)")
    args = parser.parse_args(argv)
    stem = name(args) if callable(name) else name
    args.out = str(output_path(args.out, stem, quick=bool(getattr(args, "quick", False))))
    return args


def write_json(path: str | Path, result: Any, *, indent: int = 2, **dumps_kwargs: Any) -> Path:
    """Write ``result`` as JSON to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=indent, **dumps_kwargs) + "\n")
    return path
