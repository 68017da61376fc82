"""Shared tiny cohort, store and model for the examples (not an example itself).

Examples 02-05 need a simulated cohort, a store built from it and a pretrained model.
Making them takes a minute on a laptop, so :func:`get_quick_data` makes them once per
output folder and reuses them when they are already there (a ``quick_data.json`` file
records what was made). Delete the folder to start again.

The sizes follow the ``--quick`` / full switch of every example: ``quick=True`` makes a
cohort just big enough for the code paths to run (6 subjects x 36 s per state at 250 Hz,
a ``tiny`` model pretrained for 15 steps); ``quick=False`` makes one large enough for the
numbers to mean something (slower, still CPU-friendly).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path


def quick_sizes(quick: bool) -> dict:
    """Return the cohort, store and model sizes for quick or full runs."""
    if quick:
        return {"n_subjects": 6, "duration": 36.0, "sfreq": 250.0, "block_size": 6,
                "states": ["rest", "auditory", "somatosensory"], "array": "vectorview",
                "window_seconds": 1.0, "preset": "tiny", "max_steps": 15, "batch_size": 8,
                "seed": 0}
    return {"n_subjects": 16, "duration": 60.0, "sfreq": 400.0, "block_size": 10,
            "states": ["rest", "auditory", "somatosensory"], "array": "vectorview",
            "window_seconds": 1.0, "preset": "tiny", "max_steps": 200, "batch_size": 32,
            "seed": 0}


def default_out(name: str) -> Path:
    """A fresh temporary folder for an example run (used when ``--out`` is not given)."""
    return Path(tempfile.mkdtemp(prefix=f"megfm-{name}-"))


def parse_args(doc: str, name: str, argv: list[str] | None = None):
    """The ``--quick`` / ``--out`` options shared by examples 03-04; returns (args, out)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny cohort and model (shared with examples 02-05), fast check")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    return args, (Path(args.out) if args.out else default_out(name))


def get_quick_data(out, *, quick: bool = True, pretrain_model: bool = True,
                   progress: bool = False) -> dict:
    """Make (or reuse) a simulated cohort, its store and a pretrained model in ``out``.

    Parameters
    ----------
    out : path-like
        Folder that holds ``cohort/``, ``store/``, ``pretrain/`` and ``quick_data.json``.
    quick : bool
        Tiny sizes (see :func:`quick_sizes`).
    pretrain_model : bool
        Also pretrain (and export) a model.
    progress : bool
        Show progress bars.

    Returns
    -------
    paths : dict
        ``cohort``, ``store``, ``run`` (pretraining run folder or None), ``model`` (the
        exported model folder or None), ``ground_truth`` (path) and ``sizes``.
    """
    import megfm
    from megfm.simulate import simulate_cohort

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = quick_sizes(quick)
    record_path = out / "quick_data.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("sizes") != sizes:  # different sizes (or nothing yet): start afresh
        record = {"sizes": sizes}

    cohort = out / "cohort"
    if not record.get("cohort_done"):
        if cohort.exists():  # left over from other sizes or an interrupted run
            shutil.rmtree(cohort)
        simulate_cohort(cohort, n_subjects=sizes["n_subjects"], groups=("HC", "migraine"),
                        states=sizes["states"], array=sizes["array"],
                        duration=sizes["duration"], sfreq=sizes["sfreq"],
                        block_size=sizes["block_size"], seed=sizes["seed"], verbose=False)
        record["cohort_done"] = True
        _write_record(record_path, record)

    store = out / "store"
    if not record.get("store_done"):
        if store.exists():  # from other sizes or an interrupted run
            shutil.rmtree(store)
        megfm.prepare([cohort], store, window_seconds=sizes["window_seconds"],
                      progress=progress, verbose=False)
        record["store_done"] = True
        _write_record(record_path, record)

    run_dir = None
    if pretrain_model:
        run_dir = out / "pretrain"
        if not record.get("pretrain_done"):
            megfm.pretrain(store, run_dir, model=sizes["preset"], max_steps=sizes["max_steps"],
                           batch_size=sizes["batch_size"], seed=sizes["seed"], overwrite=True,
                           progress=progress, verbose=False)
            record["pretrain_done"] = True
            _write_record(record_path, record)
    return {"cohort": cohort, "store": store, "run": run_dir,
            "model": None if run_dir is None else run_dir / "model",
            "ground_truth": cohort / "ground_truth.json", "sizes": sizes}


def _write_record(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
