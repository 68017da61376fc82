"""Writing benchmark results: one JSON file, through a temporary name and a rename."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmark venvs may not have megfm installed
    sys.path.insert(0, str(ROOT))

from megfm._io import atomic_write_text  # noqa: E402


def write_json(path: str | Path, result: Any, *, indent: int = 2, **dumps_kwargs: Any) -> Path:
    """Write ``result`` as JSON to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=indent, **dumps_kwargs) + "\n")
    return path
