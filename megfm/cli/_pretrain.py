"""``megfm pretrain STORE --out DIR``: masked-signal pretraining on a store."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..training.config import PretrainConfig, field_docs
from ._choices import registry
from ._options import STORE_HELP, add_options, read_options


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: VALUE read as JSON (numbers, true/false, null), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (a ModelConfig field), e.g. mask_ratio=0.6; got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``pretrain`` subcommand."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain a masked-signal model on a store",
        description="Pretrain a megfm masked-signal-reconstruction model on a store written by "
        "`megfm prepare`. Writes OUT/run.json, OUT/checkpoints (last.ckpt, best-*.ckpt), "
        "OUT/logs (CSV) and the exported model in OUT/model.",
    )
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("--out", required=True, help="run folder (created; never overwritten "
                   "without --resume or --overwrite)")
    p.add_argument("--preset", default="tiny", choices=registry("megfm.models.config", "PRESETS"),
                   metavar="PRESET", help="model preset, one of %(choices)s (tiny for tests, "
                   "small on a CPU, base on a GPU; default tiny)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override one megfm.ModelConfig field of the preset, e.g. "
                   "--set mask_ratio=0.6 (repeatable; VALUE is read as JSON)")
    add_options(p, PretrainConfig, field_docs(PretrainConfig), title="settings of the run (megfm.PretrainConfig)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint that loads "
                   "(last.ckpt, else an older one)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing run in --out and start again")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``megfm pretrain``."""
    from ..models import ModelConfig
    from ..models.config import REMOVED_FIELDS
    from ..training import pretrain

    config = read_options(args, PretrainConfig)
    settings = dict(args.settings)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(settings) - known - set(REMOVED_FIELDS))  # from_dict explains those
    if unknown:
        raise ValueError(f"--set: unknown ModelConfig field(s) {unknown}; the fields are "
                         f"{', '.join(sorted(known))}.")
    # through from_dict, which keeps a removed option at its old default and names the
    # version that reads any other value
    model = (ModelConfig.from_dict({**ModelConfig.preset(args.preset).to_dict(), **settings})
             if settings else args.preset)
    model_dir = pretrain(args.store, args.out, config, model=model, resume=args.resume,
                         overwrite=args.overwrite, progress=not args.no_progress)
    print(f"Pretrained model: {model_dir}")
    print(f"Checkpoints:      {model_dir.parent / 'checkpoints'}")
    print(f"Logs:             {model_dir.parent / 'logs'}")
    return 0
