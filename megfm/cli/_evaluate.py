"""``megfm evaluate``: the subject-level study from a features file, with baselines."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ._options import MODEL_HELP

logger = logging.getLogger(__name__)

_BASELINES = ("raw", "spectral")


def add_parser(subparsers) -> None:
    """Register ``megfm evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="classify groups from embeddings vs raw/spectral baselines (subject-level CV)",
        description="Run the downstream study: classifiers on megfm features and on baseline "
        "features of the same windows, on the same subject-level folds, with p-values and "
        "intervals from refits on permuted labels. Writes report.json, report.md, roc.png, "
        "scores.csv.",
    )
    p.add_argument("features", type=Path,
                   help="features.npz written by `megfm embed` (array 'features', one column "
                   "per metadata field, and the 'store' path)")
    p.add_argument("--task", default="migraine-vs-HC",
                   help="'<group>-vs-<group>' (e.g. migraine-vs-HC, PPTH-vs-HC) or 'multiclass' "
                   "(default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output folder of the report")
    p.add_argument("--baselines", default="auto",
                   help="comma-separated baselines from raw,spectral, or 'none'; 'auto' (default) "
                   "computes both when the store is available")
    p.add_argument("--store", type=Path, default=None,
                   help="store the features were computed from (default: the path recorded in "
                   "the features file)")
    p.add_argument("--classifiers", default="logreg,svm,rf",
                   help="comma-separated classifiers from logreg,svm,rf (default: %(default)s)")
    p.add_argument("--level", choices=("subject", "window"), default="subject",
                   help="classify per-subject averaged features or windows (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5,
                   help="subject-level folds (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1,
                   help="repetitions of the folds with new shuffles (default: %(default)s)")
    p.add_argument("--balanced-test", action="store_true",
                   help="equal numbers of subjects of each class in every test fold")
    p.add_argument("--permutations", type=int, default=200,
                   help="label permutations, each refitting every classifier: p-values against "
                   "chance, paired tests and intervals (cost: that many times the fits; 0 "
                   "skips them, leaving bootstrap intervals; default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes refitting the label permutations (-1 = every core; the "
                   "result does not depend on it; default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples of the intervals of methods not refitted "
                   "(--finetune, --linear-probe; default: %(default)s)")
    p.add_argument("--raw-sfreq", type=float, default=50.0,
                   help="sampling rate (Hz) of the raw-signal baseline (default: %(default)s)")
    p.add_argument("--finetune", type=Path, default=None, metavar="MODEL",
                   help="also fine-tune this " + MODEL_HELP + " end to end inside the same "
                   "folds (needs the store); it appears as method 'finetune'")
    p.add_argument("--linear-probe", action="store_true",
                   help="with --finetune, also train a linear probe on the frozen encoder "
                   "(method 'linear_probe') on the same folds")
    p.add_argument("--finetune-steps", type=int, default=200,
                   help="optimisation steps of each fine-tuning run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _load_features(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], str | None]:
    from ..data.windows import METADATA_COLUMNS

    if not path.is_file():
        raise FileNotFoundError(f"Features file {path} does not exist; write it with "
                                "`megfm embed CKPT STORE --out features.npz`.")
    with np.load(path, allow_pickle=False) as npz:
        if "features" not in npz:
            raise ValueError(f"{path} has no array 'features' (found {sorted(npz.files)}); "
                             "write it with `megfm embed`.")
        features = np.asarray(npz["features"])
        meta = {}
        for key in npz.files:  # metadata columns, plain or prefixed "meta_" (megfm embed)
            name = key[5:] if key.startswith("meta_") else key
            if name in METADATA_COLUMNS or name == "index":
                meta[name] = np.asarray(npz[key])
        store = str(npz["store"]) if "store" in npz else None
    return features, meta, store


def _baseline_features(names: list[str], store: Path, meta: dict, n: int, raw_sfreq: float,
                       ) -> dict[str, np.ndarray]:
    from ..data.store import read_store
    from ..evaluate.baselines import raw_features, spectral_features

    windows = read_store(store)
    if "index" in meta:
        windows = windows[np.asarray(meta["index"], dtype=np.int64)]
    if windows.n_windows != n or (
        "subject" in meta and not np.array_equal(windows.metadata["subject"],
                                                 meta["subject"].astype(str))):
        raise ValueError(f"The store {store} holds {windows.n_windows} windows that do not "
                         f"match the {n} rows of the features file; pass the store the "
                         "features were computed from (--store).")
    out = {}
    if "raw" in names:
        out["raw"] = raw_features(windows, sfreq=raw_sfreq)[0]
    if "spectral" in names:
        out["spectral"] = spectral_features(windows)[0]
    return out


def _finetune_methods(args: argparse.Namespace, store_path: Path | None) -> dict:
    if args.finetune is None:
        if args.linear_probe:
            raise ValueError("--linear-probe needs --finetune MODEL.")
        return {}
    if store_path is None or not store_path.exists():
        raise FileNotFoundError(f"--finetune needs the store of the windows; {store_path} was "
                                "not found. Pass --store STORE.")
    from ..evaluate.finetune import make_finetune_method

    common = {"task": args.task, "max_steps": args.finetune_steps, "seed": args.seed,
              "progress": not args.no_progress}
    methods = {"finetune": make_finetune_method(args.finetune, store_path, **common)}
    if args.linear_probe:
        methods["linear_probe"] = make_finetune_method(args.finetune, store_path,
                                                       linear_probe=True, **common)
    return methods


def _on_store_index(method, index: np.ndarray):
    def wrapped(train_rows, test_rows):
        return method(index[np.asarray(train_rows)], index[np.asarray(test_rows)])

    return wrapped


def run(args: argparse.Namespace) -> int:
    """Run the study and print its table."""
    from ..evaluate.classification import run_study

    features, meta, store = _load_features(args.features)
    store_path = args.store or (Path(store) if store else None)
    choice = args.baselines.strip().lower()
    if choice == "auto":
        names = list(_BASELINES) if store_path is not None and store_path.exists() else []
        if not names:
            logger.warning("No store found (%s): running without baselines.", store_path)
    elif choice == "none":
        names = []
    else:
        names = [b.strip() for b in choice.split(",") if b.strip()]
        bad = [b for b in names if b not in _BASELINES]
        if bad:
            raise ValueError(f"Invalid baseline(s) {bad}: expected a comma-separated list from "
                             f"{_BASELINES}, or 'none'.")
        if store_path is None or not store_path.exists():
            raise FileNotFoundError(f"Baselines {names} need the store of the windows; "
                                    f"{store_path} was not found. Pass --store STORE.")
    feats = {"megfm": features}
    if names and choice == "auto" and "subject" in meta and "state" not in meta:
        logger.warning("The features are per subject (no 'state' column, e.g. pooling "
                       "'state_concat'): running without baselines; embed with window "
                       "pooling to compare with them.")
        names = []
    if names:
        feats.update(_baseline_features(names, store_path, meta, len(features), args.raw_sfreq))
    classifiers = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    extra = _finetune_methods(args, store_path)
    index = meta.pop("index", None)
    if index is not None:  # rows of the features file -> window indices of the store
        index = np.asarray(index, dtype=np.int64)
        extra = {k: _on_store_index(fn, index) for k, fn in extra.items()}
    result = run_study(feats, meta, task=args.task, classifiers=classifiers, level=args.level,
                       n_splits=args.folds, n_repeats=args.repeats,
                       balanced_test=args.balanced_test, n_permutations=args.permutations,
                       n_bootstrap=args.bootstrap, n_jobs=args.jobs, seed=args.seed, out=args.out,
                       extra_methods=extra or None,
                       progress=not args.no_progress)
    print(result.to_markdown())
    print(f"Report written to {args.out}/ (report.json, report.md, roc.png, scores.csv)")
    return 0
