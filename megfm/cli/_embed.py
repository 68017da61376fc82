"""``megfm embed CKPT STORE --out features.npz``: window (or subject) embeddings of a store."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ._choices import registry
from ._options import MODEL_HELP, STORE_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``embed`` subcommand."""
    p = subparsers.add_parser(
        "embed", help="embed the windows of a store with a pretrained model",
        description="Run a pretrained megfm model over every window of a store and save the "
        "features with their metadata to an .npz file: 'features' (n, dim) float32, one "
        "array 'meta_<column>' per metadata column, 'store' (the store path), 'checkpoint' "
        "and 'pooling'.",
    )
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("--out", required=True, help="output .npz file (written atomically)")
    p.add_argument("--pooling", default="mean", choices=registry("megfm.embedding", "POOLINGS"),
                   metavar="POOLING", help="one of %(choices)s. mean: one row per window (mean over time and latents); attention: "
                   "attention-weighted latents per window; state_concat: one row per subject, "
                   "mean embedding of each state concatenated (default mean)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default 64)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading workers (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def save_features(path: str | os.PathLike, features: np.ndarray, metadata: dict, *,
                  store: str, checkpoint: str, pooling: str) -> Path:
    """Write features + metadata to ``path`` (.npz) through a temporary file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {f"meta_{k}": np.asarray(v) for k, v in metadata.items()}
    np.savez(tmp, features=features, store=np.array(str(store)),
             checkpoint=np.array(str(checkpoint)), pooling=np.array(pooling), **arrays)
    os.replace(tmp, path)
    return path


def run(args: argparse.Namespace) -> int:
    """Run ``megfm embed``."""
    from ..data.streaming import resolve_source
    from ..embedding import embed

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it or choose another --out.")
    store = resolve_source(args.store)
    features, metadata = embed(args.checkpoint, store, pooling=args.pooling,
                               batch_size=args.batch_size, device=args.device,
                               num_workers=args.num_workers, progress=not args.no_progress)
    path = save_features(out, features, metadata, store=str(store),
                         checkpoint=str(Path(args.checkpoint).resolve()), pooling=args.pooling)
    print(f"{features.shape[0]} rows x {features.shape[1]} features ({args.pooling}) -> {path}")
    return 0
