"""``megfm export STORE OUT --format litdata``: a store as a LitData streaming dataset."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export", help="export a store to LitData's streaming format",
        description="Write the windows, sensor geometry and metadata of a store as a LitData "
        "optimized dataset (chunks + index.json + megfm.h5). Copy the folder to shared or "
        "object storage (s3://, gs://, ...) and pass its path or URI to `megfm pretrain`, "
        "`megfm embed`, `megfm explain` and `megfm evaluate` in place of the store. Re-running "
        "on the same store is a no-op.",
    )
    p.add_argument("store", help="store folder written by `megfm prepare`")
    p.add_argument("out", help="export folder (written to a temporary name, then renamed)")
    p.add_argument("--format", default="litdata", choices=("litdata",),
                   help="streaming format (default litdata)")
    p.add_argument("--chunk-bytes", default="64MB",
                   help="size of a chunk, the unit a streaming reader downloads (default 64MB)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing export of another store")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``megfm export``."""
    from ..data.store import open_store
    from ..data.streaming import export_litdata

    out = export_litdata(args.store, args.out, chunk_bytes=args.chunk_bytes,
                         overwrite=args.overwrite)
    with open_store(out) as reader:
        print(f"{len(reader)} windows of {reader.n_shards} recording(s) -> {out}")
    return 0
